"""Which triangles of a head mesh lie inside the video's foreground: a per-triangle visual hull.

Head models carry a bust (neck, collar, shoulders), but ``gafkit track`` cuts the foreground mask
just below the chin, so the frames never show most of it. Normal maps of the whole mesh then tell the
diffusion prior "there is a surface here" where the person's images have background: a prior trained
on synthetic renders paints a bust there (benchmarks/RESULTS.md, session 8), and real training
examples teach it nothing consistent. :func:`faces_in_masks` carves the mesh with the masks: a
triangle is kept when its centroid projects into the foreground in at least ``min_fraction`` of the
frames whose image it projects into. Occlusion is ignored on purpose, as in a visual hull: the back
of the head projects into the hair's silhouette and stays; the bust, front and back, projects below
the cut and goes. :func:`bust_faces` limits the carving to the triangles below the chin, so a mask that
misses some hair, or a tracked skull a little larger than the person's, cannot punch holes in the head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from gafkit.render.camera import Cameras


@torch.no_grad()
def faces_in_masks(verts: Float[Tensor, "N V 3"], faces: Int[Tensor, "F 3"], cameras: Cameras,
                   masks: Float[Tensor, "N H W"], min_fraction: float = 0.5) -> Bool[Tensor, " F"]:
    """Triangles whose centroid falls inside the foreground of at least ``min_fraction`` of the frames.

    Args:
        verts: the mesh's vertices in each of N frames (world space).
        faces: triangle vertex indices.
        cameras: the N frames' cameras, for images of ``masks``' size.
        masks: foreground in [0, 1] (> 0.5 counts as foreground) or uint8 (> 127).
        min_fraction: share of the frames whose image holds the centroid; 0 keeps every triangle.

    Returns:
        keep [F]: True for triangles in the hull, and for those no frame's image holds (no evidence).

    >>> cam = Cameras.from_intrinsics(10.0, 10.0, 2.0, 2.0, torch.eye(4)[None], 4, 4)  # looking down +Z
    >>> tri = torch.tensor([[[-0.1, -0.1, 1.0], [0.1, -0.1, 1.0], [0.0, 0.1, 1.0],     # centre
    ...                      [0.1, 0.1, 1.0], [0.2, 0.1, 1.0], [0.15, 0.2, 1.0]]])  # lower right
    >>> mask = torch.zeros(1, 4, 4); mask[0, 1:3, 1:3] = 1
    >>> faces_in_masks(tri, torch.tensor([[0, 1, 2], [3, 4, 5]]), cam, mask).tolist()
    [True, False]
    """
    if min_fraction <= 0:
        return torch.ones(faces.shape[0], dtype=torch.bool, device=faces.device)
    if masks.dtype == torch.uint8:
        masks = masks.float() / 255
    centroids = verts[:, faces.long()].mean(2)  # [N, F, 3]
    uv, depth = cameras.to(verts.device).project(centroids)
    h, w = masks.shape[-2:]
    in_image = (depth > 0) & (uv[..., 0] >= 0) & (uv[..., 0] < w) & (uv[..., 1] >= 0) & (uv[..., 1] < h)
    # grid_sample's -1..1 spans the pixels' outer edges (align_corners=False), like pixel coordinates.
    grid = torch.stack([uv[..., 0] / w * 2 - 1, uv[..., 1] / h * 2 - 1], -1)[:, None]  # [N, 1, F, 2]
    fg = F.grid_sample(masks[:, None].to(verts), grid.to(verts), mode="nearest", align_corners=False)[:, 0, 0] > 0.5
    held = in_image.sum(0)
    inside = (fg & in_image).sum(0)
    return (held == 0) | (inside >= min_fraction * held)


def bust_faces(model) -> Bool[Tensor, " F"]:
    """Triangles of a head model below its chin: centroid lower (template, +Y up) than every face
    landmark. All triangles when the model has no landmark embedding."""
    if model.landmarks is None:
        return torch.ones(model.faces.shape[0], dtype=torch.bool, device=model.faces.device)
    template = model.template[None]
    chin = model.landmarks.points(template, model.faces)[0, :, 1].min()
    return template[0, model.faces.long()].mean(1)[:, 1] < chin


@torch.no_grad()
def carve_bust(model, params, cameras: Cameras, masks: Float[Tensor, "N H W"], min_fraction: float
               ) -> Bool[Tensor, " F"]:
    """Triangles to keep in normal maps of a head seen in N frames (head parameters ``params``, batch N)
    with foreground ``masks``: all but those below the chin (:func:`bust_faces`) that fall outside the
    masks (:func:`faces_in_masks`)."""
    dev = model.faces.device
    inside = faces_in_masks(model(params.to(dev)), model.faces, cameras.to(dev), masks.to(dev), min_fraction)
    return inside | ~bust_faces(model)


__all__ = ["bust_faces", "carve_bust", "faces_in_masks"]
