"""Adaptive density control for bound Gaussians: clone, split, prune, opacity reset.

The 3DGS rules (Kerbl et al. 2023) with the binding kept: a clone or a split half stays on its parent's
triangle, split children are drawn inside the parent in its *local* frame, and pruning removes
Gaussians, never triangles' frames. The optimizer's moments follow every edit (new Gaussians start with
zero moments), so Adam keeps its state for the Gaussians that stay.
"""

from __future__ import annotations

import dataclasses

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from gafkit.recon.avatar import PER_GAUSSIAN, GaussianAvatar
from gafkit.recon.backends.torch_ref import quat_to_rotation
from gafkit.recon.config import DensifyConfig


@dataclasses.dataclass
class GradStats:
    """Running sum of each Gaussian's screen-space gradient norm and of how often it was visible.

    Shapes: ``grad_sum`` [N], ``count`` [N].
    """

    grad_sum: Float[Tensor, " N"]
    count: Float[Tensor, " N"]

    @classmethod
    def zeros(cls, n: int, device: torch.device) -> GradStats:
        return cls(torch.zeros(n, device=device), torch.zeros(n, device=device))

    def add(self, means2d_grad: Float[Tensor, "N 2"], visible: Bool[Tensor, " N"], width: int, height: int) -> None:
        """Accumulate one render's gradient, converted from pixels to normalized device units."""
        g = means2d_grad * torch.tensor([width / 2, height / 2], device=means2d_grad.device)
        self.grad_sum += g.norm(dim=-1) * visible
        self.count += visible.float()

    def mean(self) -> Float[Tensor, " N"]:
        return self.grad_sum / self.count.clamp_min(1)


def edit_gaussians(avatar: GaussianAvatar, optimizer: torch.optim.Optimizer, keep: Bool[Tensor, " N"],
                   new_face_ids: Tensor, new: dict[str, Tensor]) -> None:
    """Keep the Gaussians where ``keep`` is true and append ``new`` ones (``new[name]`` for every
    per-Gaussian tensor); the optimizer's param groups named after those tensors follow, with zero
    moments for the appended rows."""
    old = avatar.per_gaussian()
    merged = {name: torch.cat([old[name].detach()[keep], new[name].to(old[name])]) for name in PER_GAUSSIAN}
    avatar.replace(torch.cat([avatar.face_ids[keep], new_face_ids.to(avatar.face_ids)]), merged)
    n_new = new_face_ids.shape[0]
    for group in optimizer.param_groups:
        name = group.get("name")
        if name not in PER_GAUSSIAN:
            continue
        param = group["params"][0]
        state = optimizer.state.pop(param, None)
        fresh = getattr(avatar, name)
        group["params"] = [fresh]
        if state:
            for key in ("exp_avg", "exp_avg_sq"):
                moment = state[key]
                state[key] = torch.cat([moment[keep], torch.zeros((n_new, *moment.shape[1:]), device=moment.device,
                                                                  dtype=moment.dtype)])
            optimizer.state[fresh] = state


def densify_and_prune(avatar: GaussianAvatar, optimizer: torch.optim.Optimizer, stats: GradStats,
                      face_size: Float[Tensor, " F"], cfg: DensifyConfig, gen: torch.Generator) -> dict[str, int]:
    """One round of clone/split (by mean screen-space gradient) and prune (by opacity and size).

    ``face_size`` [F]: each triangle's size (mean edge length) on a reference mesh, which turns local
    scales into metres for the size thresholds. Returns counts of what happened.
    """
    n = len(avatar)
    with torch.no_grad():
        world_scale = avatar.log_scale.exp().max(dim=1).values * face_size[avatar.face_ids]
        grow = stats.mean() >= cfg.grad_threshold
        room = max(0, cfg.max_gaussians - n)
        clone = grow & (world_scale <= cfg.split_scale_m)
        split = grow & (world_scale > cfg.split_scale_m)
        # Under the cap, the strongest gradients win.
        if int(clone.sum() + split.sum()) > room:
            order = torch.argsort(stats.mean() * grow, descending=True)
            allowed = torch.zeros_like(grow)
            allowed[order[: room // 2]] = True
            clone &= allowed
            split &= allowed
        t = avatar.per_gaussian()
        new = {name: [t[name].detach()[clone]] for name in PER_GAUSSIAN}
        new_faces = [avatar.face_ids[clone]]
        if split.any():
            idx = torch.nonzero(split)[:, 0]
            scale = avatar.log_scale.exp()[idx]
            rot = quat_to_rotation(avatar.rotation[idx])
            for _ in range(2):
                noise = torch.randn(idx.shape[0], 3, generator=gen).to(scale)
                offset = torch.einsum("nij,nj->ni", rot, noise * scale)
                for name in PER_GAUSSIAN:
                    value = t[name].detach()[idx]
                    if name == "xyz":
                        value = value + offset
                    elif name == "log_scale":
                        value = value - torch.log(torch.tensor(1.6))
                    new[name].append(value)
                new_faces.append(avatar.face_ids[idx])
        opacity = torch.sigmoid(avatar.opacity_logit)
        prune = (opacity < cfg.prune_opacity) | (world_scale > cfg.max_scale_m)
        keep = ~(prune | split)
        edit_gaussians(avatar, optimizer, keep, torch.cat(new_faces), {k: torch.cat(v) for k, v in new.items()})
    return {"cloned": int(clone.sum()), "split": int(split.sum()), "pruned": int((prune & ~split).sum()),
            "total": len(avatar)}


def reset_opacity(avatar: GaussianAvatar, optimizer: torch.optim.Optimizer, value: float = 0.01) -> None:
    """Clamp every opacity to at most ``value`` and clear its Adam moments."""
    with torch.no_grad():
        cap = torch.logit(torch.tensor(value)).item()
        avatar.opacity_logit.clamp_(max=cap)
    for group in optimizer.param_groups:
        if group.get("name") == "opacity_logit":
            state = optimizer.state.get(group["params"][0])
            if state:
                state["exp_avg"].zero_()
                state["exp_avg_sq"].zero_()
