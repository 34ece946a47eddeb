"""Appearance pieces of the photometric tracking stage: spherical-harmonics shading, the albedo atlas of
a head model's UV layout, texture lookup and hole filling."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from gafkit.heads.base import HeadModel

# Y_0^0: the constant spherical harmonic; an irradiance of 1 everywhere is 1 / SH_C0 times it.
SH_C0 = 0.28209479177387814


def sh_basis(normals: Float[Tensor, "... 3"], order: int) -> Float[Tensor, "... K"]:
    """Real spherical harmonics up to ``order`` (0-2) of unit vectors, K = (order + 1)^2.

    >>> [round(c, 4) for c in sh_basis(torch.tensor([0.0, 0.0, 1.0]), 1).tolist()]  # Y00, Y1-1 (y), Y10 (z), Y11 (x)
    [0.2821, 0.0, 0.4886, 0.0]
    """
    x, y, z = normals.unbind(-1)
    out = [torch.full_like(x, SH_C0)]
    if order >= 1:
        c1 = 0.4886025119029199
        out += [c1 * y, c1 * z, c1 * x]
    if order >= 2:
        c2 = 1.0925484305920792
        out += [c2 * x * y, c2 * y * z, 0.31539156525252005 * (3 * z * z - 1), c2 * x * z,
                0.5462742152960396 * (x * x - y * y)]
    return torch.stack(out, -1)


@dataclasses.dataclass
class UVAtlas:
    """Texture coordinates of every triangle corner in one atlas image of ``tiles`` square tiles side by
    side. Tiles come from the model's UDIM-style layout (integer part of u) and, separately, from the
    eyeballs: ICT maps its eyeballs onto the same UV square as the face, which would make iris and skin
    share texels.

    Shapes: uv [F * 3, 2] in [0, 1] (v = 0 at the bottom row); faces [F, 3] indices into ``uv``.
    """

    uv: Float[Tensor, "T 2"]
    faces: Int[Tensor, "F 3"]
    tiles: int


def uv_atlas(model: HeadModel) -> UVAtlas:
    """The albedo atlas layout of ``model`` (which must have ``uvs`` and ``face_uvs``)."""
    uvs, face_uvs = model.uvs.float(), model.face_uvs.long()
    corner_uv = uvs[face_uvs]  # [F, 3, 2]
    tile = corner_uv[..., 0].floor().amin(1).clamp_min(0).long()  # [F]
    eyes = model.regions.get("eyes")
    in_eye = torch.zeros(model.num_vertices, dtype=torch.bool, device=uvs.device)
    if eyes is not None:
        in_eye[eyes.to(uvs.device)] = True
    key = tile * 2 + in_eye[model.faces.to(uvs.device)].all(1).long()
    used, slot = torch.unique(key, return_inverse=True)
    local_u = (corner_uv[..., 0] - tile[:, None].float()).clamp(0, 1)
    atlas_u = (slot[:, None].float() + local_u) / len(used)
    uv = torch.stack([atlas_u, corner_uv[..., 1].clamp(0, 1)], -1).reshape(-1, 2)
    faces = torch.arange(uv.shape[0], device=uv.device).reshape(-1, 3)
    return UVAtlas(uv=uv, faces=faces, tiles=len(used))


def sample_texture(texture: Float[Tensor, "3 Ht Wt"], uv: Float[Tensor, "B H W 2"]) -> Float[Tensor, "B H W 3"]:
    """Bilinear lookup with v = 0 at the texture's bottom row (OBJ convention)."""
    b, h, w, _ = uv.shape
    grid = torch.stack([uv[..., 0] * 2 - 1, 1 - uv[..., 1] * 2], -1).reshape(1, b * h, w, 2)
    out = F.grid_sample(texture[None], grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[0].permute(1, 2, 0).reshape(b, h, w, 3)


def fill_holes(total: Float[Tensor, "H W 3"], weight: Float[Tensor, "H W"]) -> Float[Tensor, "H W 3"]:
    """``total / weight`` where ``weight > 0``; elsewhere the colour of the nearest coarser level of a
    pull-push pyramid (a smooth extrapolation of the observed texels).

    >>> t = torch.zeros(4, 4, 3); w = torch.zeros(4, 4); t[0, 0] = 0.5; w[0, 0] = 1
    >>> fill_holes(t, w)[3, 3].tolist()
    [0.5, 0.5, 0.5]
    """
    levels = [(total, weight)]
    while min(levels[-1][1].shape) > 1:
        t, wt = levels[-1]
        levels.append((F.avg_pool2d(t.permute(2, 0, 1)[None], 2, ceil_mode=True)[0].permute(1, 2, 0),
                       F.avg_pool2d(wt[None, None], 2, ceil_mode=True)[0, 0]))
    t, wt = levels[-1]
    colour = torch.where(wt[..., None] > 0, t / wt.clamp_min(1e-12)[..., None], t.new_tensor(0.5))
    for t, wt in reversed(levels[:-1]):
        coarse = F.interpolate(colour.permute(2, 0, 1)[None], size=wt.shape, mode="nearest")[0].permute(1, 2, 0)
        colour = torch.where(wt[..., None] > 0, t / wt.clamp_min(1e-12)[..., None], coarse)
    return colour


