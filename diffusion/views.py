"""Novel views around a posed head: the cameras the prior generates for, and the mesh's normal maps
there (its pixel-aligned condition). Shared by ``gafkit prior sample`` and ``gafkit fit --prior``.

Angles are in the head's own frame: yaw turns about the head's up axis (0 = the face's front,
180 = the back of the head, positive = toward the subject's left), pitch tilts above (positive) or below.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from gafkit.heads.base import HeadModel, HeadParams, axis_angle_to_matrix, head_center
from gafkit.render.camera import Cameras


def orbit_cameras(center: Float[Tensor, " 3"], head_rotation: Float[Tensor, "3 3"], distance: float,
                  yaw_deg: Float[Tensor, " C"], pitch_deg: Float[Tensor, " C"], *, focal: float, size: int
                  ) -> Cameras:
    """Square cameras of ``size`` pixels and ``focal`` pixels looking at ``center`` from ``distance``,
    at yaw/pitch measured in the head frame ``head_rotation`` (world from model)."""
    yaw, pitch = torch.deg2rad(yaw_deg.float()), torch.deg2rad(pitch_deg.float())
    local = torch.stack([torch.sin(yaw) * torch.cos(pitch), torch.sin(pitch), torch.cos(yaw) * torch.cos(pitch)], -1)
    rot = head_rotation.to(local)
    eye = center.to(local) + distance * (local @ rot.T)
    up = rot[:, 1].expand_as(eye)
    return Cameras.look_at(eye, center.to(local).expand_as(eye), up, focal=focal, width=size, height=size)


def sample_orbit(views: int, generator: torch.Generator, *, pitch_deg: float = 30.0, min_yaw_deg: float = 0.0
                 ) -> tuple[Float[Tensor, " V"], Float[Tensor, " V"]]:
    """Yaws spread evenly from a random start over the circle less ``min_yaw_deg`` either side of the
    front (so every draw covers the sides and the back), pitches uniform in [-pitch_deg, pitch_deg]."""
    start = float(torch.rand(1, generator=generator)) * 360.0
    unit = (start + torch.arange(views) * (360.0 / views)) % 360.0
    yaw = min_yaw_deg + unit * (360.0 - 2 * min_yaw_deg) / 360.0
    pitch = (torch.rand(views, generator=generator) * 2 - 1) * pitch_deg
    return yaw, pitch


def frame_orbit(model: HeadModel, params: HeadParams, camera: Cameras, yaw_deg: Tensor, pitch_deg: Tensor,
                size: int) -> tuple[Cameras, Float[Tensor, "V 3"]]:
    """Orbit cameras around the head of one tracked frame (``params`` and ``camera`` of batch 1): same
    distance and field of view as the frame's camera, ``size`` pixels square. Returns the cameras and
    the posed vertices."""
    with torch.no_grad():
        verts = model(params)[0]
    center = head_center(model, verts)
    distance = float((camera.centers[0] - center).norm())
    focal = float(camera.K[0, 0, 0]) * size / max(camera.width, camera.height)
    rot = axis_angle_to_matrix(params.rotation[0])
    cams = orbit_cameras(center, rot, distance, yaw_deg, pitch_deg, focal=focal, size=size).to(verts.device)
    return cams, verts


__all__ = ["frame_orbit", "head_center", "orbit_cameras", "sample_orbit"]
