"""Multi-view consistency of generated views, measured through the known head mesh.

Every covered pixel of view ``i`` is a surface point (rasterized mesh); projected into view ``j``, it is
compared with view ``j``'s colour there when view ``j`` sees the same point (its depth agrees). Views of a
Lambertian surface under a fixed light (the synthetic data) agree up to resampling, so ground-truth views
score high and the gap to them says how much the generated views contradict each other.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from gafkit.render.camera import Cameras

DEPTH_TOLERANCE = 0.01
"""Relative depth difference up to which a projected point counts as seen by the other view."""


def reprojection_agreement(images: Float[Tensor, "V 3 H W"], vertices: Float[Tensor, "N 3"],
                           faces: Int[Tensor, "F 3"], cameras: Cameras, *, backend: str = "auto"
                           ) -> dict[str, float]:
    """PSNR and L1 between each view's covered pixels and the other views' colours at the same surface
    points, over all ordered pairs of views; ``pixels`` counts the compared (co-visible) pixels."""
    from gafkit.render.mesh import interpolate, rasterize_mesh

    v, _, h, w = images.shape
    verts = vertices.expand(v, -1, -1)
    raster = rasterize_mesh(verts, faces, cameras, backend=backend)
    points = interpolate(verts, faces, raster)  # [V, H, W, 3] world positions
    sq, ab, count = 0.0, 0.0, 0
    for i in range(v):
        pts = points[i][raster.mask[i]]  # [P, 3]
        colors = images[i].permute(1, 2, 0)[raster.mask[i]]  # [P, 3]
        for j in range(v):
            if i == j or len(pts) == 0:
                continue
            uv, z = cameras[j].project(pts[None])
            uv, z = uv[0], z[0]
            grid = torch.stack([uv[:, 0] / w * 2 - 1, uv[:, 1] / h * 2 - 1], -1).view(1, -1, 1, 2).to(images)
            seen_depth = F.grid_sample(raster.depth[j][None, None].to(images), grid, mode="nearest",
                                       align_corners=False).view(-1)
            visible = (seen_depth > 0) & ((seen_depth - z).abs() < DEPTH_TOLERANCE * z) & (grid.view(-1, 2).abs() < 1).all(-1)
            if not visible.any():
                continue
            other = F.grid_sample(images[j][None], grid, mode="bilinear", align_corners=False).view(3, -1).T
            diff = (colors[visible] - other[visible]).clamp(-1, 1)
            sq += float(diff.square().mean(-1).sum())
            ab += float(diff.abs().mean(-1).sum())
            count += int(visible.sum())
    if count == 0:
        return {"psnr": math.nan, "l1": math.nan, "pixels": 0}
    mse = sq / count
    return {"psnr": math.inf if mse == 0 else -10 * math.log10(mse), "l1": ab / count, "pixels": count}
