"""Pure, unweighted tracking losses. Weights are applied in one place (:func:`weighted`)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from jaxtyping import Float
from torch import Tensor


def landmark_loss(
    pred: Float[Tensor, "N L 2"], target: Float[Tensor, "N L 2"], weight: Float[Tensor, "N L"], scale: float
) -> Tensor:
    """Robust 2D landmark distance: a Huber penalty on ``|pred - target| / scale`` (1 = ``scale`` px),
    weighted per landmark and averaged over the total weight.

    >>> p = torch.zeros(1, 2, 2); landmark_loss(p, p + 3, torch.ones(1, 2), scale=1.0).item() > 0
    True
    """
    diff = (pred - target) / scale
    sq = (diff * diff).sum(-1)  # squared distance: no square root (nor its infinite gradient at 0) inside
    # The clamp keeps the unused linear branch's gradient finite where the quadratic one is chosen.
    huber = torch.where(sq < 1.0, 0.5 * sq, sq.clamp_min(1.0).sqrt() - 0.5)
    return (weight * huber).sum() / weight.sum().clamp_min(1e-8)


def temporal_smoothness(x: Float[Tensor, "N D"], order: int = 2) -> Tensor:
    """Mean squared ``order``-th finite difference along frames (0 for fewer than order+1 frames)."""
    for _ in range(order):
        if x.shape[0] < 2:
            return x.new_zeros(())
        x = x[1:] - x[:-1]
    return (x**2).sum(-1).mean()


def l2_prior(x: Float[Tensor, "... D"]) -> Tensor:
    """Mean squared norm: keeps coefficients near the model's mean."""
    return (x**2).sum(-1).mean()


def weighted_sum(terms: Mapping[str, Tensor], weights: Mapping[str, float | None]) -> Tensor:
    """``sum weights[k] * terms[k]`` over the terms whose weight is not ``None``; no host sync, so an
    optimization loop can call it every step on the GPU."""
    parts = [weights[k] * v for k, v in terms.items() if weights.get(k) is not None]
    if not parts:
        raise ValueError("every loss term is disabled")
    return torch.stack(parts).sum() if len(parts) > 1 else parts[0]


def weighted(terms: Mapping[str, Tensor], weights: Mapping[str, float | None]) -> tuple[Tensor, dict[str, float]]:
    """Sum ``weights[k] * terms[k]``; a weight of ``None`` (or a missing one) drops the term.

    Returns the total and the per-term weighted values for logging (plus ``total``).
    """
    total = None
    log: dict[str, float] = {}
    for name, value in terms.items():
        w = weights.get(name)
        if w is None:
            continue
        term = w * value
        total = term if total is None else total + term
        log[name] = float(term.detach())
    if total is None:
        raise ValueError("every loss term is disabled")
    log["total"] = float(total.detach())
    return total, log
