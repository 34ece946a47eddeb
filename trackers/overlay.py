"""``overlay.mp4``: each kept frame with the fitted mesh (back-face-culled wireframe of the face and
scalp) and the landmarks (detected: green, fitted: red), to check a track at a glance."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from gafkit.heads.base import HeadModel
from gafkit.media import write_video
from gafkit.trackers.fit import LandmarkFitResult, _project
from gafkit.trackers.preprocess import read_image_file

REGIONS = ("face", "scalp")
MAX_TRIANGLES = 4000  # a denser wireframe hides the face


def _overlay_triangles(model: HeadModel) -> Tensor:
    keep = torch.zeros(model.num_vertices, dtype=torch.bool)
    for name in REGIONS:
        if name in model.regions:
            keep[model.regions[name].cpu()] = True
    faces = model.faces.cpu()
    tri = faces[keep[faces].all(1)]
    if len(tri) > MAX_TRIANGLES:
        tri = tri[torch.linspace(0, len(tri) - 1, MAX_TRIANGLES).long()]
    return tri


def draw_frame(
    image: np.ndarray,
    verts_px: Float[Tensor, "V 2"],
    verts_cam: Float[Tensor, "V 3"],
    tri: Tensor,
    detected: Float[Tensor, "L 2"],
    fitted: Float[Tensor, "L 2"],
) -> np.ndarray:
    """Draw on a copy of ``image`` [H, W, 3] uint8; pixel centres at j + 0.5."""
    import cv2

    out = image.copy()
    a, b, c = (verts_cam[tri[:, i]] for i in range(3))
    normal = torch.cross(b - a, c - a, dim=-1)
    facing = (normal * -a).sum(-1) > 0  # camera at the origin of camera space
    shift = 4  # sub-pixel precision for cv2
    pts = ((verts_px[tri[facing]] - 0.5) * (1 << shift)).round().int().numpy()
    wire = out.copy()
    cv2.polylines(wire, list(pts), isClosed=True, color=(235, 235, 235), thickness=1, lineType=cv2.LINE_AA,
                  shift=shift)
    out = cv2.addWeighted(wire, 0.45, out, 0.55, 0)
    for points, color in ((detected, (0, 255, 0)), (fitted, (255, 40, 40))):
        for x, y in (points - 0.5).round().int().tolist():
            cv2.circle(out, (x, y), 1, color, -1)
    return out


def write_overlay(
    path: Path,
    model: HeadModel,
    result: LandmarkFitResult,
    images: Sequence[Path],
    detected: Float[Tensor, "N L 2"],
    fps: float,
    batch: int = 16,
) -> int:
    """Write the overlay video for the kept frames; returns the number of frames written."""
    tri = _overlay_triangles(model)
    focal = result.cameras.K[0, 0, 0].cpu()
    cx, cy = float(result.cameras.K[0, 0, 2]), float(result.cameras.K[0, 1, 2])

    def frames() -> Iterator[np.ndarray]:
        for start in range(0, len(images), batch):
            with torch.no_grad():
                posed = model(result.params[start:start + batch].to(model.template.device))
                verts = posed.cpu()
                px, _ = _project(verts, focal, cx, cy)
                fitted = model.landmark_points(posed).cpu()  # the model's indices live on its device
                fitted_px, _ = _project(fitted, focal, cx, cy)
            cam = verts * torch.tensor([1.0, -1.0, -1.0])  # world -> camera (default_camera's w2c)
            for j in range(verts.shape[0]):
                yield draw_frame(read_image_file(images[start + j]), px[j], cam[j], tri, detected[start + j],
                                 fitted_px[j])

    return write_video(path, frames(), fps)
