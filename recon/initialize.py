"""The starting avatar: Gaussians on the mesh surface, coloured from the training frames."""

from __future__ import annotations

import math

import torch
from jaxtyping import Float, Int
from torch import Tensor

from gafkit.heads.base import HeadModel, HeadParams
from gafkit.recon.avatar import GaussianAvatar, expression_condition, rgb_to_sh_dc
from gafkit.recon.binding import triangle_frames
from gafkit.recon.config import FitConfig
from gafkit.recon.data import FrameSet


def _face_selection(model: HeadModel, exclude: tuple[str, ...]) -> Int[Tensor, " F"]:
    faces = model.faces
    keep = torch.ones(faces.shape[0], dtype=torch.bool, device=faces.device)
    for name in exclude:
        if name not in model.regions:
            from gafkit.errors import ConfigError

            raise ConfigError(f"init.exclude_regions: {name!r} is not a region of {model.name}; "
                              f"regions: {', '.join(sorted(model.regions))}")
        in_region = torch.zeros(model.num_vertices, dtype=torch.bool, device=faces.device)
        in_region[model.regions[name]] = True
        keep &= ~in_region[faces].all(dim=1)
    return torch.nonzero(keep)[:, 0]


def sample_faces(model: HeadModel, params0: HeadParams, cfg: FitConfig, gen: torch.Generator) -> Int[Tensor, " N"]:
    """Triangle index of every initial Gaussian: ``per_face`` on each kept triangle, or
    ``max_gaussians`` drawn in proportion to triangle area."""
    faces = _face_selection(model, cfg.init.exclude_regions)
    if cfg.init.max_gaussians is None:
        return faces.repeat_interleave(cfg.init.per_face)
    with torch.no_grad():
        verts = model(params0)
        frames = triangle_frames(verts, model.faces[faces])
    area = frames.size[0].square().cpu().double()
    pick = torch.multinomial(area, cfg.init.max_gaussians, replacement=cfg.init.max_gaussians > len(faces),
                             generator=gen)
    return faces[pick.to(faces.device)]


def initial_colors(model: HeadModel, params: HeadParams, frames: FrameSet, face_ids: Int[Tensor, " N"],
                   positions: Float[Tensor, "T N 3"]) -> Float[Tensor, "N 3"]:
    """Average of each Gaussian's pixel over the T frames of ``frames`` (``positions[t]`` are its
    centres in frame t), weighted by how much its triangle faces the camera and by the mask; grey
    where no frame sees it."""
    n = face_ids.shape[0]
    total = torch.zeros(n, 3, device=positions.device)
    weight = torch.zeros(n, 1, device=positions.device)
    h, w = frames.size
    for i in range(positions.shape[0]):
        cams = frames.cameras[i]
        uv, depth = cams.project(positions[i][None])
        uv, depth = uv[0], depth[0]
        verts = model(params[i])
        normals = triangle_frames(verts, model.faces).rotation[0, face_ids, :, 2]
        to_cam = torch.nn.functional.normalize(cams.centers[0] - positions[i], dim=-1)
        facing = (normals * to_cam).sum(-1).clamp_min(0)
        px = uv.round().long()
        inside = (px[:, 0] >= 0) & (px[:, 0] < w) & (px[:, 1] >= 0) & (px[:, 1] < h) & (depth > 0)
        px = px.clamp(min=torch.zeros(2, device=px.device, dtype=torch.long),
                      max=torch.tensor([w - 1, h - 1], device=px.device))
        rgb = frames.images[i, px[:, 1], px[:, 0]].float() / 255
        m = frames.masks[i, px[:, 1], px[:, 0]].float() / 255
        wt = (facing * inside * m[:, 0])[:, None]
        total += rgb * wt
        weight += wt
    return torch.where(weight > 1e-3, total / weight.clamp_min(1e-6), torch.full_like(total, 0.5))


def initial_avatar(model: HeadModel, params: HeadParams, frames: FrameSet, train: list[int], cfg: FitConfig,
                   gen: torch.Generator) -> GaussianAvatar:
    """Gaussians on the surface of the training frames' meshes; ``params``/``frames`` cover the whole
    sequence, ``train`` the frames used for colours."""
    device = model.faces.device
    face_ids = sample_faces(model, params[train[0]], cfg, gen).to(device)
    n = face_ids.shape[0]
    if cfg.init.per_face > 1 or cfg.init.max_gaussians is not None:
        # Uniform points inside the triangle, in its local frame (centroid at 0, units of its size).
        bary = torch.distributions.Dirichlet(torch.ones(3)).sample((n,)).to(device)
    else:
        bary = torch.full((n, 3), 1 / 3, device=device)
    count = max(1, min(cfg.init.color_frames, len(train)))
    picks = [train[round(t * (len(train) - 1) / max(1, count - 1))] for t in range(count)]
    with torch.no_grad():
        positions, local = [], None
        for i in picks:
            verts = model(params[i])
            corners = verts[0, model.faces[face_ids]]  # [N, 3, 3]
            positions.append((corners * bary[:, :, None]).sum(1))
            if local is None:
                fr = triangle_frames(verts, model.faces)
                offset = positions[-1] - fr.origin[0, face_ids]
                local = torch.einsum("nji,nj->ni", fr.rotation[0, face_ids], offset) / fr.size[0, face_ids, None]
        sub = FrameSet(images=frames.images[picks], masks=frames.masks[picks], cameras=frames.cameras[picks])
        rgb = initial_colors(model, params[picks], sub, face_ids, torch.stack(positions))
    logit = math.log(cfg.init.opacity / (1 - cfg.init.opacity))
    tensors = {
        "xyz": local,
        "log_scale": torch.full((n, 3), math.log(cfg.init.scale), device=device),
        "opacity_logit": torch.full((n,), logit, device=device),
        "sh_dc": rgb_to_sh_dc(rgb.clamp(0.02, 0.98)),
    }
    cond_dim = expression_condition(params[0]).shape[1]
    k = (cfg.sh_degree + 1) ** 2
    tensors.update(rotation=torch.tensor([1.0, 0, 0, 0], device=device).repeat(n, 1),
                   sh_rest=torch.zeros(n, k - 1, 3, device=device),
                   expr_color=torch.zeros(n, cfg.expr_color_dims, 3, device=device))
    return GaussianAvatar(face_ids, model.faces, sh_degree=cfg.sh_degree, cond_dim=cond_dim,
                          code_dim=cfg.expr_color_dims, tensors=tensors).to(device)
