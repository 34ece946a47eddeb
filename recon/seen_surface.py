"""How squarely the video saw each triangle of the head mesh, and the pseudo-view weight that follows.

The diffusion prior's pseudo views cover the whole head, including the face the frames already show.
Where the frames saw a surface, they are the better supervision: the prior, which does not copy a
person's identity exactly, makes up colours there (measured: -1.2 dB inside the mask of a held-out
person's novel views, benchmarks/RESULTS.md session 5). :func:`seen_faces` scores each triangle by the
best cosine between its normal and the direction to the camera over the training frames in which it is
visible (the mesh rasterized into each frame, so occluded triangles do not count); :func:`unseen_weight`
turns those scores into a per-pixel weight of a novel view: 0 where the frames saw the surface at least
``seen_cos`` squarely, rising linearly to 1 for surfaces they never saw and for pixels off the mesh
(background, hair beyond the mesh), where only the prior speaks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from gafkit.heads.base import HeadModel, HeadParams
from gafkit.recon.data import evenly_spaced
from gafkit.render.camera import Cameras
from gafkit.render.mesh import face_normals, rasterize_mesh


def face_view_cosine(verts: Float[Tensor, "V 3"], faces: Int[Tensor, "F 3"], center: Float[Tensor, " 3"]
                     ) -> Float[Tensor, " F"]:
    """|cos| of the angle between each triangle's normal and the direction to ``center`` (a camera).

    The absolute value makes it independent of the winding; back faces are excluded by visibility.

    >>> tri = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
    >>> round(float(face_view_cosine(tri, torch.tensor([[0, 1, 2]]), torch.tensor([1 / 3, 1 / 3, 5.0]))[0]), 4)
    1.0
    """
    normal = face_normals(verts[None], faces)[0]  # [F, 3], unit
    to_cam = F.normalize(center - verts[faces.long()].mean(1), dim=-1)
    return (normal * to_cam).sum(-1).abs()


@torch.no_grad()
def seen_faces(model: HeadModel, params: HeadParams, cameras: Cameras, ids: list[int], *, size: int = 128,
               limit: int = 32, backend: str = "auto") -> Float[Tensor, " F"]:
    """Per triangle, the best view cosine over ``limit`` evenly spaced frames of ``ids`` in which it is
    visible (0 for triangles never visible).

    Args:
        model, params: the head model and the sequence's per-frame parameters (batch = all frames).
        cameras: the frames' cameras; rasterized at ``size`` pixels on the longer side.
        ids: candidate frames (the training frames).
    """
    faces = model.faces
    seen = torch.zeros(faces.shape[0], device=faces.device)
    for i in evenly_spaced(ids, limit):
        verts = model(params[i])[0]
        cam = cameras[i]
        cam = cam.scaled(size / max(cam.width, cam.height)).to(verts.device)
        tri = rasterize_mesh(verts[None], faces, cam, backend=backend).tri_id
        visible = torch.unique(tri[tri >= 0])
        cos = face_view_cosine(verts, faces, cam.centers[0])
        seen[visible] = torch.maximum(seen[visible], cos[visible])
    return seen


def unseen_weight(seen: Float[Tensor, " F"], tri_id: Int[Tensor, "C H W"], seen_cos: float
                  ) -> Float[Tensor, "C 1 H W"]:
    """Pseudo-view weight per pixel: ``clamp(1 - seen / seen_cos, 0, 1)`` on the mesh, 1 off it.

    >>> w = unseen_weight(torch.tensor([1.0, 0.25, 0.0]), torch.tensor([[[0, 1], [2, -1]]]), 0.5)
    >>> w[0, 0].tolist()
    [[0.0, 0.5], [1.0, 1.0]]
    """
    on_mesh = tri_id >= 0
    w = (1 - seen[tri_id.clamp(min=0)] / seen_cos).clamp(0, 1)
    return torch.where(on_mesh, w, torch.ones_like(w))[:, None]


__all__ = ["face_view_cosine", "seen_faces", "unseen_weight"]
