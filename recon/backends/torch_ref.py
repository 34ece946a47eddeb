"""Pure-PyTorch Gaussian rasterizer: the reference for the gsplat backend, and the CPU renderer.

It follows gsplat 1.5.3's "classic" pinhole pipeline rule for rule, so the two agree to float
rounding (``tests/render/test_gaussian_parity.py``):

1. **EWA projection** (Zwicker et al. 2002): the world covariance ``R S S^T R^T`` is moved into the
   camera and mapped to pixels with the Jacobian of the perspective projection at the mean (the mean
   clamped to 1.3x the field of view, as gsplat does, so Gaussians far off screen keep a sane
   footprint); ``eps2d`` px^2 is added to the diagonal as a low-pass filter.
2. **Culling**: a Gaussian is dropped (radius 0) when its depth is outside ``[near, far]``, its opacity
   is below 1/255, or its footprint box misses the image. The box's half-size per axis is
   ``ceil(k * sigma_axis)`` with ``k = min(3.33, sqrt(2 ln(255 opacity)))``: the distance at which the
   Gaussian's alpha falls below 1/255 (3.33 sigma at opacity 1).
3. **View-dependent colour**: real spherical harmonics up to degree 3 (the 3DGS basis), evaluated at
   the unit direction from the camera centre to the mean, ``+ 0.5``, clamped at 0.
4. **Tiled front-to-back compositing**: 16x16 px tiles; each tile lists the Gaussians whose box
   touches it, sorted by depth; per pixel (centre ``j + 0.5``)
   ``alpha = min(0.999, opacity * exp(-0.5 d^T conic d))``, alphas below 1/255 are skipped, and a pixel
   stops before the Gaussian that would bring its transmittance to 1e-4 or below.

Everything is differentiable with torch autograd, in float32 or float64.

>>> import torch
>>> means = torch.tensor([[0.0, 0.0, 2.0]])
>>> quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
>>> scales = torch.full((1, 3), 0.05)
>>> K = torch.tensor([[[64.0, 0, 16], [0, 64.0, 16], [0, 0, 1]]])
>>> rgb, alpha, depth, means2d, radii = rasterize(
...     means, quats, scales, torch.tensor([0.9]), torch.ones(1, 3), torch.eye(4)[None], K, 32, 32)
>>> rgb.shape, round(alpha.max().item(), 2), radii.tolist()
(torch.Size([1, 32, 32, 3]), 0.82, [[6]])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

TILE = 16
ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.999
T_MIN = 1e-4
EXTEND_MAX = 3.33
# Elements per [tiles, pixels, gaussians] block: bounds the memory autograd keeps per tile chunk.
_CHUNK_ELEMENTS = 1 << 22


def quat_to_rotation(quats: Float[Tensor, "N 4"]) -> Float[Tensor, "N 3 3"]:
    """Rotation matrices of (w, x, y, z) quaternions of any length (normalized here)."""
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(-1, 3, 3)


def quat_scale_to_covar(
    quats: Float[Tensor, "N 4"], scales: Float[Tensor, "N 3"]
) -> Float[Tensor, "N 3 3"]:
    """World-space covariances ``R(q) diag(s)^2 R(q)^T``; ``quats`` are (w, x, y, z), normalized here.

    >>> quat_scale_to_covar(torch.tensor([[2.0, 0, 0, 0]]), torch.tensor([[1.0, 2.0, 3.0]])).diagonal(dim1=1, dim2=2)
    tensor([[1., 4., 9.]])
    """
    m = quat_to_rotation(quats) * scales[:, None, :]
    return m @ m.transpose(1, 2)


def project(
    means: Float[Tensor, "N 3"],
    quats: Float[Tensor, "N 4"],
    scales: Float[Tensor, "N 3"],
    opacities: Float[Tensor, " N"],
    viewmats: Float[Tensor, "C 4 4"],
    Ks: Float[Tensor, "C 3 3"],
    width: int,
    height: int,
    near: float = 0.01,
    far: float = 100.0,
    eps2d: float = 0.3,
) -> tuple[Int[Tensor, "C N 2"], Float[Tensor, "C N 2"], Float[Tensor, "C N"], Float[Tensor, "C N 3"]]:
    """EWA-project Gaussians into C pinhole cameras.

    Returns ``(radii, means2d, depths, conics)``: the footprint half-size in pixels per axis (0 = culled),
    the projected centres in pixels, camera-space z, and the upper triangle ``(a, b, c)`` of the inverse
    2D covariance. Values of culled Gaussians are finite but meaningless.

    >>> radii, m2d, z, conics = project(torch.tensor([[0.0, 0, -1]]), torch.tensor([[1.0, 0, 0, 0]]),
    ...     torch.ones(1, 3), torch.ones(1), torch.eye(4)[None], torch.eye(3)[None], 8, 8)
    >>> radii.tolist()  # behind the camera
    [[[0, 0]]]
    """
    rot, trans = viewmats[:, :3, :3], viewmats[:, :3, 3]
    mean_c = torch.einsum("cij,nj->cni", rot, means) + trans[:, None, :]
    covar_c = rot[:, None] @ quat_scale_to_covar(quats, scales)[None] @ rot[:, None].transpose(-1, -2)
    x, y, z = mean_c.unbind(-1)
    valid = (z >= near) & (z <= far)
    # Culled Gaussians still flow through the arithmetic; a safe depth keeps their gradients finite.
    z = torch.where(valid, z, torch.ones_like(z))
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    lim_x_pos = (width - cx) / fx + 0.3 * (0.5 * width / fx)
    lim_x_neg = cx / fx + 0.3 * (0.5 * width / fx)
    lim_y_pos = (height - cy) / fy + 0.3 * (0.5 * height / fy)
    lim_y_neg = cy / fy + 0.3 * (0.5 * height / fy)
    tx = z * torch.minimum(torch.maximum(x / z, -lim_x_neg), lim_x_pos)
    ty = z * torch.minimum(torch.maximum(y / z, -lim_y_neg), lim_y_pos)
    zeros = torch.zeros_like(z)
    jac = torch.stack(
        [fx / z, zeros, -fx * tx / (z * z), zeros, fy / z, -fy * ty / (z * z)], dim=-1
    ).reshape(*z.shape, 2, 3)
    cov2d = jac @ covar_c @ jac.transpose(-1, -2)
    a = cov2d[..., 0, 0] + eps2d
    b = cov2d[..., 0, 1]
    c = cov2d[..., 1, 1] + eps2d
    det = a * c - b * b
    valid = valid & (det > 0)
    det = torch.where(valid, det, torch.ones_like(det))
    conics = torch.stack([c / det, -b / det, a / det], dim=-1)
    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], dim=-1)

    with torch.no_grad():
        opac = opacities.detach()[None].expand_as(z)
        valid = valid & (opac >= ALPHA_MIN)
        extend = torch.sqrt(2.0 * torch.log(opac.clamp_min(ALPHA_MIN) / ALPHA_MIN)).clamp_max(EXTEND_MAX)
        radius = torch.ceil(extend[..., None] * torch.stack([a, c], dim=-1).clamp_min(0).sqrt())
        m = means2d.detach()
        inside = (
            (m[..., 0] + radius[..., 0] > 0)
            & (m[..., 0] - radius[..., 0] < width)
            & (m[..., 1] + radius[..., 1] > 0)
            & (m[..., 1] - radius[..., 1] < height)
        )
        valid = valid & inside & (radius > 0).any(-1)
        radii = torch.where(valid[..., None], radius, torch.zeros_like(radius)).to(torch.int32)
    return radii, means2d, mean_c[..., 2], conics


_C0 = 0.28209479177387814
_C1 = 0.4886025119029199
_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
_C3 = (
    -0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
    -0.4570457994644658, 1.445305721320277, -0.5900435899266435,
)


def spherical_harmonics(
    degree: int, dirs: Float[Tensor, "*B 3"], coeffs: Float[Tensor, "*B K 3"]
) -> Float[Tensor, "*B 3"]:
    """Evaluate real SH (the 3DGS basis) of ``degree`` (0..3) at ``dirs`` (normalized here).

    Only the first ``(degree + 1)^2`` of the K coefficients are used.

    >>> coeffs = torch.zeros(1, 4, 3); coeffs[0, 0] = 1.0
    >>> spherical_harmonics(1, torch.tensor([[0.0, 0, 1]]), coeffs)
    tensor([[0.2821, 0.2821, 0.2821]])
    """
    if not 0 <= degree <= 3 or coeffs.shape[-2] < (degree + 1) ** 2:
        raise ValueError(f"SH degree {degree} needs 0..3 and {(degree + 1) ** 2} coefficients, got {coeffs.shape[-2]}")
    x, y, z = F.normalize(dirs, dim=-1).unbind(-1)
    basis = [torch.full_like(x, _C0)]
    if degree >= 1:
        basis += [-_C1 * y, _C1 * z, -_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        basis += [
            _C2[0] * x * y,
            _C2[1] * y * z,
            _C2[2] * (2 * zz - xx - yy),
            _C2[3] * x * z,
            _C2[4] * (xx - yy),
        ]
    if degree >= 3:
        basis += [
            _C3[0] * y * (3 * xx - yy),
            _C3[1] * x * y * z,
            _C3[2] * y * (4 * zz - xx - yy),
            _C3[3] * z * (2 * zz - 3 * xx - 3 * yy),
            _C3[4] * x * (4 * zz - xx - yy),
            _C3[5] * z * (xx - yy),
            _C3[6] * x * (xx - 3 * yy),
        ]
    stacked = torch.stack(basis, dim=-1)
    return (stacked[..., None] * coeffs[..., : len(basis), :]).sum(-2)


def _tile_lists(
    means2d: Tensor, radii: Tensor, depths: Tensor, tiles_x: int, tiles_y: int
) -> tuple[Tensor, Tensor]:
    """(Gaussian ids sorted by tile, then depth within a tile; entries per tile) for one camera."""
    ids = torch.nonzero(radii[:, 0] > 0).squeeze(1)
    device = means2d.device
    n_tiles = tiles_x * tiles_y
    if ids.numel() == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, torch.zeros(n_tiles, dtype=torch.long, device=device)
    m = means2d.detach()[ids].double() / TILE
    r = radii[ids].double() / TILE
    x0 = torch.floor(m[:, 0] - r[:, 0]).clamp(0, tiles_x).long()
    x1 = torch.ceil(m[:, 0] + r[:, 0]).clamp(0, tiles_x).long()
    y0 = torch.floor(m[:, 1] - r[:, 1]).clamp(0, tiles_y).long()
    y1 = torch.ceil(m[:, 1] + r[:, 1]).clamp(0, tiles_y).long()
    w, h = x1 - x0, y1 - y0
    counts = w * h
    owner = torch.repeat_interleave(torch.arange(ids.numel(), device=device), counts)
    # Position of each entry inside its Gaussian's box, turned into a tile id.
    local = torch.arange(owner.numel(), device=device) - torch.repeat_interleave(counts.cumsum(0) - counts, counts)
    tile = (y0[owner] + local // w[owner]) * tiles_x + x0[owner] + local % w[owner]
    depth_rank = torch.empty_like(ids)
    depth_rank[torch.argsort(depths.detach()[ids], stable=True)] = torch.arange(ids.numel(), device=device)
    order = torch.argsort(tile * ids.numel() + depth_rank[owner])
    per_tile = torch.bincount(tile, minlength=n_tiles)
    return ids[owner[order]], per_tile


def rasterize_to_pixels(
    means2d: Float[Tensor, "C N 2"],
    conics: Float[Tensor, "C N 3"],
    features: Float[Tensor, "C N D"],
    opacities: Float[Tensor, " N"],
    radii: Int[Tensor, "C N 2"],
    depths: Float[Tensor, "C N"],
    width: int,
    height: int,
) -> tuple[Float[Tensor, "C H W D"], Float[Tensor, "C H W 1"]]:
    """Composite projected Gaussians front to back in 16x16 tiles (no background).

    Returns the accumulated features ``sum_k w_k f_k`` and alpha ``sum_k w_k = 1 - T``.

    >>> feats, alpha = rasterize_to_pixels(torch.tensor([[[4.0, 4.0]]]), torch.tensor([[[1.0, 0, 1]]]),
    ...     torch.ones(1, 1, 1), torch.ones(1), torch.tensor([[[4, 4]]]), torch.ones(1, 1), 8, 8)
    >>> round(alpha[0, 3, 3, 0].item(), 3)  # centre pixel (3.5, 3.5): opacity * exp(-0.25)
    0.779
    """
    n_cams, _, dim = features.shape
    tiles_x, tiles_y = math.ceil(width / TILE), math.ceil(height / TILE)
    device, dtype = means2d.device, means2d.dtype
    # Pixel centres relative to their tile's centre, as the monomials of a quadratic form, so that each
    # tile's [pixels, Gaussians] exponents come out of one batched matmul (small coordinates keep the
    # expanded quadratic accurate in float32).
    offs = torch.arange(TILE, device=device, dtype=dtype) + 0.5 - TILE / 2
    px, py = offs.repeat(TILE), offs.repeat_interleave(TILE)  # pixel p of a tile is (p % TILE, p // TILE)
    monomials = torch.stack([px * px, px * py, py * py, px, py, torch.ones_like(px)], dim=-1)  # [P, 6]
    images = []
    for cam in range(n_cams):
        gauss, per_tile = _tile_lists(means2d[cam], radii[cam], depths[cam], tiles_x, tiles_y)
        starts = per_tile.cumsum(0) - per_tile
        out = torch.zeros(tiles_x * tiles_y, TILE * TILE, dim + 1, device=device, dtype=dtype)
        busy = torch.nonzero(per_tile).squeeze(1)
        busy = busy[torch.argsort(per_tile[busy], descending=True)]
        g_xy, g_conic = means2d[cam], conics[cam]
        # Alpha rides along as a last feature channel of ones: the same weighted sum accumulates it.
        g_feat = torch.cat([features[cam], torch.ones_like(features[cam][:, :1])], dim=-1)
        parts, done = [], 0
        while done < busy.numel():
            k_max = int(per_tile[busy[done]])
            n_t = max(1, min(busy.numel() - done, _CHUNK_ELEMENTS // (TILE * TILE * k_max)))
            tiles = busy[done : done + n_t]
            done += n_t
            slot = torch.arange(k_max, device=device)
            present = slot[None] < per_tile[tiles, None]
            gid = gauss[(starts[tiles, None] + slot[None]).clamp_max(max(gauss.numel() - 1, 0))]  # [T, K]
            centre_x = (tiles % tiles_x).to(dtype) * TILE + TILE / 2
            centre_y = (tiles // tiles_x).to(dtype) * TILE + TILE / 2
            mx, my = g_xy[gid, 0] - centre_x[:, None], g_xy[gid, 1] - centre_y[:, None]
            a, b, c = g_conic[gid].unbind(-1)
            # -sigma = -(0.5 a dx^2 + b dx dy + 0.5 c dy^2) with dx = mx - px, expanded in px, py.
            neg_coeffs = torch.stack(
                [-0.5 * a, -b, -0.5 * c, a * mx + b * my, b * mx + c * my,
                 -(0.5 * a * mx * mx + b * mx * my + 0.5 * c * my * my)],
                dim=1,
            )  # [T, 6, K]
            # Padding slots get opacity 0, so the 1/255 cut drops them with the faint ones.
            opac = torch.where(present, opacities[gid], torch.zeros_like(mx))
            alpha = (opac[:, None] * torch.exp(monomials @ neg_coeffs)).clamp_max(ALPHA_MAX)  # [T, P, K]
            alpha = alpha * (alpha >= ALPHA_MIN)
            trans = torch.cumprod(1 - alpha, dim=-1)
            # Transmittance only falls, so "stop before T <= 1e-4" keeps a prefix of each pixel's list.
            alpha = alpha * (trans > T_MIN)
            trans_before = torch.cat([torch.ones_like(trans[..., :1]), trans[..., :-1]], dim=-1)
            parts.append((alpha * trans_before) @ g_feat[gid])
        if parts:
            out = out.index_copy(0, busy, torch.cat(parts))
        img = out.reshape(tiles_y, tiles_x, TILE, TILE, dim + 1).permute(0, 2, 1, 3, 4)
        images.append(img.reshape(tiles_y * TILE, tiles_x * TILE, dim + 1)[:height, :width])
    stacked = torch.stack(images)
    return stacked[..., :dim], stacked[..., dim:]


def rasterize(
    means: Float[Tensor, "N 3"],
    quats: Float[Tensor, "N 4"],
    scales: Float[Tensor, "N 3"],
    opacities: Float[Tensor, " N"],
    colors_or_sh: Float[Tensor, "N 3"] | Float[Tensor, "N K 3"],
    viewmats: Float[Tensor, "C 4 4"],
    Ks: Float[Tensor, "C 3 3"],
    width: int,
    height: int,
    *,
    sh_degree: int | None = None,
    backgrounds: Float[Tensor, "C 3"] | None = None,
    near: float = 0.01,
    far: float = 100.0,
    eps2d: float = 0.3,
) -> tuple[
    Float[Tensor, "C H W 3"], Float[Tensor, "C H W 1"], Float[Tensor, "C H W 1"], Float[Tensor, "C N 2"], Int[Tensor, "C N"]
]:
    """Render Gaussians into C cameras; the same call as :func:`gafkit.recon.backends.gsplat_backend.rasterize`.

    Args:
        colors_or_sh: linear RGB ``[N, 3]`` (with ``sh_degree=None``) or SH coefficients ``[N, K, 3]``
            evaluated up to ``sh_degree``.
        viewmats: world-to-camera matrices (OpenCV axes). Ks: intrinsics in pixels.
        backgrounds: colour added behind the Gaussians, weighted by the final transmittance.

    Returns:
        ``(rgb, alpha, depth, means2d, radii)``: images, accumulated alpha, expected depth
        (``sum w z / alpha``), projected centres (``retain_grad`` set when they need a gradient, so
        ``means2d.grad`` is readable after ``backward``) and the footprint radius (0 = not visible).
    """
    radii, means2d, depths, conics = project(means, quats, scales, opacities, viewmats, Ks, width, height, near, far, eps2d)
    if means2d.requires_grad:
        means2d.retain_grad()
    if sh_degree is None:
        colors = colors_or_sh[None].expand(len(viewmats), -1, -1)
    else:
        campos = -(viewmats[:, :3, :3].transpose(1, 2) @ viewmats[:, :3, 3:])[..., 0]
        dirs = means[None] - campos[:, None]
        colors = spherical_harmonics(sh_degree, dirs, colors_or_sh[None].expand(len(viewmats), -1, -1, -1))
        colors = colors.add(0.5).clamp_min(0.0)
    features = torch.cat([colors, depths[..., None]], dim=-1)
    accum, alpha = rasterize_to_pixels(means2d, conics, features, opacities, radii, depths, width, height)
    rgb = accum[..., :3]
    if backgrounds is not None:
        rgb = rgb + (1 - alpha) * backgrounds[:, None, None, :]
    depth = accum[..., 3:] / alpha.clamp_min(1e-10)
    return rgb, alpha, depth, means2d, radii.amax(-1)
