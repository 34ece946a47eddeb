"""Scoring and looking at a prior: generated views of held-out examples against their ground truth.

Two modes, matching the prior's two uses:

- ``generate``: from pure noise (``gafkit prior sample``): can the prior make a person's unseen views
  from one reference frame and the normal maps?
- ``refine``: the pseudo-ground-truth mode of ``gafkit fit``: a degraded version of the true views
  (blurred, colour-shifted, as an under-trained avatar renders) is noised to ``strength`` and denoised;
  the score says how much closer to the truth the prior brings it (``gain`` over the degraded input).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gafkit.diffusion.pipeline import MultiViewPrior
from gafkit.diffusion.shards import save_image
from gafkit.recon.metrics import image_metrics


def _batch(data: dict[str, Tensor], ids: list[int], device: torch.device) -> dict[str, Tensor]:
    return {k: data[k][ids].to(device).float() / 255 for k in ("reference", "images", "normals", "masks")}


def degrade(images: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """A stand-in for an under-trained avatar's render of ``images`` [..., 3, H, W]: blurred (a
    5-pixel box at 256, scaled with the size) and slightly colour-shifted."""
    shape = images.shape
    x = images.flatten(0, -4)
    k = max(3, round(5 * x.shape[-1] / 256) | 1)
    x = F.avg_pool2d(F.pad(x, (k // 2,) * 4, mode="replicate"), k, stride=1)
    shift = (torch.rand(x.shape[0], 3, 1, 1, generator=generator, device=x.device) - 0.5) * 0.1
    return (x + shift).clamp(0, 1).reshape(shape)


def _score(pred: Tensor, gt: Tensor, mask: Tensor) -> dict[str, float]:
    to_hwc = lambda x: x.flatten(0, 1).permute(0, 2, 3, 1)  # noqa: E731
    return image_metrics(to_hwc(pred), to_hwc(gt), to_hwc(mask))


@torch.no_grad()
def evaluate_prior(prior: MultiViewPrior, data: dict[str, Tensor], *, examples: int = 16, steps: int = 20,
                   guidance_scale: float = 2.0, strength: float = 0.5, batch: int = 8, seed: int = 0
                   ) -> dict[str, float]:
    """Mean PSNR/SSIM/L1 (full and masked) of generated views against the truth.

    ``data``: uint8 examples as :func:`gafkit.diffusion.dataset.load_split` returns them; the first
    ``examples`` are scored. Keys: ``psnr``, ``ssim``, ... for ``generate`` mode, ``refine_*`` for
    pseudo-ground-truth mode at ``strength``, ``degraded_*`` for its input and ``refine_gain_db``.
    """
    n = min(examples, len(data["images"]))
    dev = prior.device
    g = torch.Generator(device=dev).manual_seed(seed)
    gen, ref, deg = [], [], []
    for i in range(0, n, batch):
        b = _batch(data, list(range(i, min(n, i + batch))), dev)
        out = prior(b["reference"], b["normals"], num_inference_steps=steps, guidance_scale=guidance_scale, generator=g)
        gen.append(_score(out, b["images"], b["masks"]))
        rough = degrade(b["images"], g)
        fixed = prior.pseudo_ground_truth(rough, b["normals"], b["reference"], strength, num_inference_steps=steps,
                                          guidance_scale=guidance_scale, generator=g)
        ref.append(_score(fixed, b["images"], b["masks"]))
        deg.append(_score(rough, b["images"], b["masks"]))
    mean = lambda rows, k: float(np.mean([r[k] for r in rows]))  # noqa: E731
    result = {k: mean(gen, k) for k in gen[0]}
    result.update({f"refine_{k}": mean(ref, k) for k in ref[0]})
    result.update({f"degraded_{k}": mean(deg, k) for k in deg[0]})
    result["refine_gain_db"] = result["refine_psnr_masked"] - result["degraded_psnr_masked"]
    result.update({"examples": n, "sample_steps": steps, "guidance_scale": guidance_scale, "strength": strength})
    return result


@torch.no_grad()
def sample_grid(prior: MultiViewPrior, data: dict[str, Tensor], path: str | Path, *, examples: int = 4,
                steps: int = 20, guidance_scale: float = 2.0, seed: int = 0) -> Path:
    """A JPEG grid: per example one row block of reference | normals | generated | truth."""
    n = min(examples, len(data["images"]))
    dev = prior.device
    b = _batch(data, list(range(n)), dev)
    g = torch.Generator(device=dev).manual_seed(seed)
    out = prior(b["reference"], b["normals"], num_inference_steps=steps, guidance_scale=guidance_scale, generator=g)
    rows = []
    for i in range(n):
        blank = torch.ones_like(b["reference"][i])
        for label, views in (("normals", b["normals"][i]), ("generated", out[i]), ("truth", b["images"][i])):
            first = b["reference"][i] if label == "normals" else blank
            rows.append(torch.cat([first, *views.unbind(0)], -1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_image(path, torch.cat(rows, -2), quality=90)
