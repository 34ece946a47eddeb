"""Pure-torch triangle rasterizer: the reference backend of :mod:`gafkit.render.mesh`, any device.

How it works: every triangle is expanded into the pixel centres inside its screen bounding box
(``(triangle, pixel)`` candidate pairs, in chunks to bound memory), candidates outside the triangle
are dropped, and a z-buffer keeps the nearest one per pixel with one ``scatter_reduce(amin)`` over
keys ``depth_bits << 32 | face`` (positive float32 depths order like their bit patterns). Barycentrics
of the winners are then recomputed with differentiable ops, so gradients reach the vertices through
``bary`` (not through coverage, which is piecewise constant).

Differences from nvdiffrast: triangles with a vertex nearer than ``near`` are dropped rather than
clipped, and pixel centres exactly on a shared edge may go to either triangle.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from gafkit.render.camera import Cameras
from gafkit.render.mesh import MeshRaster

# Candidate (triangle, pixel) pairs handled at once: ~40 bytes each, so ~170 MB peak per chunk.
CHUNK = 1 << 22


def _candidates(counts: Tensor) -> list[tuple[int, int]]:
    """Split triangles into consecutive ranges whose candidate pairs sum to about CHUNK."""
    csum = torch.cumsum(counts, 0)
    total = int(csum[-1]) if csum.numel() else 0
    if total == 0:
        return []
    marks = torch.arange(1, -(-total // CHUNK), device=counts.device) * CHUNK
    bounds = torch.searchsorted(csum, marks, right=True)
    edges = [0, *[int(b) for b in bounds.tolist()], counts.numel()]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


@torch.no_grad()
def _zbuffer(
    uv: Tensor, depth: Tensor, faces: Tensor, width: int, height: int, near: float, far: float
) -> Tensor:
    """Winning face per pixel as a [C, H, W] long tensor, -1 where empty."""
    n_cam, n_face = uv.shape[0], faces.shape[0]
    tri_uv = uv[:, faces].double()  # [C, F, 3, 2]; float64 keeps thin, large triangles exact enough
    tri_z = depth[:, faces].double()  # [C, F, 3]
    (x0, y0), (x1, y1), (x2, y2) = [tri_uv[:, :, i].unbind(-1) for i in range(3)]
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    lo, hi = tri_uv.amin(2), tri_uv.amax(2)
    # Pixel j is covered when its centre j + 0.5 lies inside, so the box is ceil(min - .5)..floor(max - .5).
    j0 = torch.ceil(lo[..., 0] - 0.5).clamp(0, width).long()
    j1 = torch.floor(hi[..., 0] - 0.5).clamp(-1, width - 1).long()
    i0 = torch.ceil(lo[..., 1] - 0.5).clamp(0, height).long()
    i1 = torch.floor(hi[..., 1] - 0.5).clamp(-1, height - 1).long()
    bw, bh = (j1 - j0 + 1).clamp(min=0), (i1 - i0 + 1).clamp(min=0)
    ok = (tri_z.amin(-1) > near) & (tri_z.amax(-1) < far) & (area.abs() > 1e-12) & torch.isfinite(area)
    counts = torch.where(ok, bw * bh, 0).reshape(-1)

    # Affine screen-space coefficients: l0 = a0*x + b0*y + c0 (same for l1) and 1/z = p*x + q*y + r.
    inv_area = 1.0 / torch.where(ok, area, 1.0)
    a0, b0 = (y1 - y2) * inv_area, (x2 - x1) * inv_area
    c0 = (x1 * y2 - x2 * y1) * inv_area
    a1, b1 = (y2 - y0) * inv_area, (x0 - x2) * inv_area
    c1 = (x2 * y0 - x0 * y2) * inv_area
    iz = 1.0 / torch.where(ok[..., None], tri_z, 1.0)
    d0, d1 = iz[..., 0] - iz[..., 2], iz[..., 1] - iz[..., 2]
    coef = (
        torch.stack(
            [a0, b0, c0, a1, b1, c1, a0 * d0 + a1 * d1, b0 * d0 + b1 * d1, c0 * d0 + c1 * d1 + iz[..., 2]], -1
        )
        .reshape(-1, 9)
        .float()
    )
    j0, i0, bw = j0.reshape(-1), i0.reshape(-1), bw.reshape(-1)

    keys = torch.full(
        (n_cam * height * width,), torch.iinfo(torch.int64).max, dtype=torch.long, device=uv.device
    )
    for start, stop in _candidates(counts):
        cnt = counts[start:stop]
        tri = torch.repeat_interleave(torch.arange(start, stop, device=uv.device), cnt)
        offset = torch.cumsum(cnt, 0) - cnt
        local = torch.arange(tri.numel(), device=uv.device) - torch.repeat_interleave(offset, cnt)
        w = bw[tri]
        px = j0[tri] + local % w
        py = i0[tri] + torch.div(local, w, rounding_mode="floor")
        c = coef[tri]
        x, y = px.float() + 0.5, py.float() + 0.5
        l0 = c[:, 0] * x + c[:, 1] * y + c[:, 2]
        l1 = c[:, 3] * x + c[:, 4] * y + c[:, 5]
        inv_z = c[:, 6] * x + c[:, 7] * y + c[:, 8]
        inside = (l0 >= 0) & (l1 >= 0) & (l0 + l1 <= 1) & (inv_z > 0)
        tri, px, py, inv_z = tri[inside], px[inside], py[inside], inv_z[inside]
        cam = torch.div(tri, n_face, rounding_mode="floor")
        face = tri - cam * n_face
        zbits = (1.0 / inv_z).float().view(torch.int32).long()
        key = (zbits << 32) | face
        keys.scatter_reduce_(0, (cam * height + py) * width + px, key, reduce="amin")
    face = keys & 0xFFFFFFFF
    face = torch.where(keys == torch.iinfo(torch.int64).max, -1, face)
    return face.view(n_cam, height, width)


def rasterize_mesh(
    vertices: Float[Tensor, "C V 3"],
    faces: Int[Tensor, "F 3"],
    cameras: Cameras,
    *,
    near: float = 0.01,
    far: float = 100.0,
) -> MeshRaster:
    """Rasterize a batch of meshes (one per camera) on any device; see :func:`gafkit.render.mesh.rasterize_mesh`.

    >>> from gafkit.render.camera import Cameras
    >>> cams = Cameras.look_at(torch.tensor([[0.0, 0.0, 2.0]]), torch.zeros(1, 3), focal=64.0,
    ...                        width=32, height=32)
    >>> tri = torch.tensor([[[-1.0, -1.0, 0.0], [1.0, -1.0, 0.0], [0.0, 1.0, 0.0]]])
    >>> rasterize_mesh(tri, torch.tensor([[0, 1, 2]]), cams).mask.sum().item() > 0
    True
    """
    height, width = cameras.height, cameras.width
    uv, depth = cameras.project(vertices)
    tri_id = _zbuffer(uv.detach(), depth.detach(), faces, width, height, near, far)
    bary, depth_map = pixel_bary(uv, depth, faces, tri_id)
    return MeshRaster(tri_id=tri_id, bary=bary, depth=depth_map, mask=tri_id >= 0)


def pixel_bary(
    uv: Float[Tensor, "C V 2"],
    depth: Float[Tensor, "C V"],
    faces: Int[Tensor, "F 3"],
    tri_id: Int[Tensor, "C H W"],
) -> tuple[Float[Tensor, "C H W 3"], Float[Tensor, "C H W"]]:
    """Perspective-correct barycentrics and depth at pixel centres for given visible faces.

    Differentiable w.r.t. the projected vertices ``uv`` (pixels) and ``depth`` (camera z), which
    is how vertex gradients reach ``bary``. Pixels with ``tri_id < 0`` get zeros.

    >>> uv = torch.tensor([[[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]]])
    >>> bary, z = pixel_bary(uv, torch.ones(1, 3), torch.tensor([[0, 1, 2]]), torch.zeros(1, 1, 1).long())
    >>> bary.flatten().tolist(), z.item()
    ([0.75, 0.125, 0.125], 1.0)
    """
    n_cam, height, width = tri_id.shape
    mask = (tri_id >= 0).view(n_cam, -1, 1)
    corners = faces[tri_id.clamp(min=0).view(n_cam, -1)]  # [C, HW, 3]
    cam_idx = torch.arange(n_cam, device=tri_id.device)[:, None, None]
    p = uv[cam_idx, corners]  # [C, HW, 3, 2]
    z = depth[cam_idx, corners]  # [C, HW, 3]
    ys, xs = torch.meshgrid(
        torch.arange(height, device=uv.device, dtype=uv.dtype) + 0.5,
        torch.arange(width, device=uv.device, dtype=uv.dtype) + 0.5,
        indexing="ij",
    )
    pix = torch.stack([xs, ys], -1).view(1, -1, 1, 2)
    # Screen-space barycentrics from the sub-triangle areas opposite each corner.
    d = p - pix  # [C, HW, 3, 2]
    l0 = d[..., 1, 0] * d[..., 2, 1] - d[..., 2, 0] * d[..., 1, 1]
    l1 = d[..., 2, 0] * d[..., 0, 1] - d[..., 0, 0] * d[..., 2, 1]
    l2 = d[..., 0, 0] * d[..., 1, 1] - d[..., 1, 0] * d[..., 0, 1]
    lam = torch.stack([l0, l1, l2], -1)
    ones = torch.ones_like(lam[..., :1])
    lam = lam / lam.sum(-1, keepdim=True).where(mask, ones)
    # Perspective correction: weights proportional to lambda_i / z_i.
    w = lam / z.where(mask, torch.ones_like(z))
    bary = w / w.sum(-1, keepdim=True).where(mask, ones)
    bary = torch.where(mask, bary, torch.zeros_like(bary))
    depth_map = torch.where(mask, (bary * z).sum(-1, keepdim=True), torch.zeros_like(ones))
    return bary.view(n_cam, height, width, 3), depth_map.view(n_cam, height, width)
