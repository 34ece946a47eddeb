"""Cameras for ``gafkit animate``: an orbit around the head, or a camera path read from JSON.

Camera-path files (UTF-8 JSON, cameras in the avatar's world, the tracked sequence's) come in two forms:

- NeRF style, as ``transforms.json``: ``{"frames": [{"transform_matrix": 4x4 OpenGL camera-to-world,
  "fl_x", "fl_y", "cx", "cy", "w", "h"}, ...]}``; intrinsics may sit at the top level, ``camera_angle_x``
  may replace ``fl_x`` (see :meth:`gafkit.render.camera.Cameras.from_nerf_frames`);
- OpenCV style: ``{"width": W, "height": H, "frames": [{"K": 3x3, "w2c": 4x4 or 3x4}, ...]}``, ``K``
  also accepted at the top level for all frames.

Every matrix is checked: rotations orthonormal with determinant +1 (to 1e-3), a rigid bottom row,
positive focal lengths, no skew. A path of M cameras spreads over the video's F frames: frame ``i`` uses
camera ``floor(i (M - 1) / (F - 1) + 1/2)``, so one camera gives a still view and F cameras one per frame.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from gafkit.errors import GafkitError, InputError
from gafkit.render.camera import Cameras

_TOLERANCE = 1e-3


@dataclasses.dataclass
class OrbitConfig:
    """``--camera orbit``: the camera swings left and right around the head (a yaw sweep)."""

    yaw_deg: float = 30.0
    """Largest yaw either side of the source view (degrees)."""
    cycles: float = 1.0
    """Full left-right-left swings over the video."""
    pitch_deg: float = 0.0
    """Constant elevation above the source view (degrees; positive = camera above the head)."""
    distance_scale: float = 1.0
    """Camera distance as a multiple of the source camera's distance to the head."""


def orbit_cameras(base: Cameras, center: Float[Tensor, " 3"], frames: int, cfg: OrbitConfig) -> Cameras:
    """``frames`` cameras with ``base``'s focal length and image size, circling ``center`` about the
    base camera's up axis: yaw ``yaw_deg * sin(2 pi cycles i / frames)``, fixed pitch."""
    if cfg.distance_scale <= 0:
        raise GafkitError(f"orbit.distance_scale must be positive, got {cfg.distance_scale}")
    c2w = base.c2w[0].to(center)
    eye0, up = c2w[:3, 3], -c2w[:3, 1]  # OpenCV: camera y points down
    offset = eye0 - center
    right = torch.nn.functional.normalize(torch.cross(offset, up, dim=0), dim=0)
    t = torch.arange(frames, dtype=center.dtype, device=center.device) / max(frames, 1)
    yaw = torch.deg2rad(torch.as_tensor(cfg.yaw_deg, dtype=center.dtype)) * torch.sin(2 * math.pi * cfg.cycles * t)
    pitch = math.radians(cfg.pitch_deg)
    # Pitch about the side axis first, then yaw about the up axis (Rodrigues on the offset vector).
    pitched = _rotate(offset[None], right[None], torch.full_like(yaw[:1], pitch))[0]
    eyes = center + cfg.distance_scale * _rotate(pitched.expand(frames, 3), up.expand(frames, 3), yaw)
    return Cameras.look_at(eyes, center.expand(frames, 3), up=up.expand(frames, 3), focal=float(base.K[0, 0, 0]),
                           width=base.width, height=base.height)


def _rotate(v: Float[Tensor, "N 3"], axis: Float[Tensor, "N 3"], angle: Float[Tensor, " N"]) -> Float[Tensor, "N 3"]:
    axis = torch.nn.functional.normalize(axis, dim=-1)
    cos, sin = torch.cos(angle)[:, None], torch.sin(angle)[:, None]
    return v * cos + torch.cross(axis, v, dim=-1) * sin + axis * (axis * v).sum(-1, keepdim=True) * (1 - cos)


def spread(path: Cameras, frames: int) -> Cameras:
    """Camera ``floor(i (M - 1) / (F - 1) + 1/2)`` of the M-camera ``path`` for each of ``frames`` frames."""
    m = len(path)
    # floor(x + 0.5): halves round up, so the path advances evenly (torch.round rounds halves to even).
    idx = torch.zeros(frames, dtype=torch.long) if frames == 1 else torch.floor(
        torch.arange(frames, dtype=torch.float64) * (m - 1) / (frames - 1) + 0.5).long()
    return path[idx.to(path.device)]


# ---- camera-path files ------------------------------------------------------------------------------

def _matrix(value: Any, shape: tuple[int, ...], where: str, path: Path) -> Tensor:
    try:
        m = torch.tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise InputError(path, f"{where}: not a {'x'.join(map(str, shape))} matrix of numbers") from None
    if tuple(m.shape) != shape:
        raise InputError(path, f"{where}: expected a {'x'.join(map(str, shape))} matrix, got shape {list(m.shape)}")
    if not torch.isfinite(m).all():
        raise InputError(path, f"{where}: holds NaN or infinite values")
    return m


def _check_rigid(m: Tensor, where: str, path: Path) -> None:
    rot = m[:3, :3]
    error = (rot.T @ rot - torch.eye(3, dtype=m.dtype)).abs().max().item()
    if error > _TOLERANCE:
        raise InputError(path, f"{where}: the rotation part is not orthonormal (R^T R differs from I by {error:.3g})")
    if torch.det(rot).item() < 0:
        raise InputError(path, f"{where}: the rotation part is a reflection (determinant -1)")
    if m.shape[0] == 4 and (m[3] - torch.tensor([0.0, 0, 0, 1], dtype=m.dtype)).abs().max().item() > _TOLERANCE:
        raise InputError(path, f"{where}: the last row must be 0 0 0 1, got {m[3].tolist()}")


def _check_intrinsics(k: Tensor, where: str, path: Path) -> None:
    if k[0, 0] <= 0 or k[1, 1] <= 0:
        raise InputError(path, f"{where}: focal lengths must be positive, got {k[0, 0].item():g}, {k[1, 1].item():g}")
    if k[0, 1] != 0 or k[1, 0] != 0 or (k[2] - torch.tensor([0.0, 0, 1], dtype=k.dtype)).abs().max() > 0:
        raise InputError(path, f"{where}: K must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]], got {k.tolist()}")


def load_camera_path(path: str | Path) -> Cameras:
    """Read and check a camera-path file (module docstring)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "no such camera file (--camera takes source, orbit or a JSON file)") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InputError(path, f"not a JSON camera path ({err})") from None
    frames = data.get("frames") if isinstance(data, dict) else None
    if not isinstance(frames, list) or not frames or not all(isinstance(f, dict) for f in frames):
        raise InputError(path, 'expected {"frames": [camera, ...]} with at least one camera')
    nerf = any("transform_matrix" in f for f in frames)
    if nerf:
        for i, f in enumerate(frames):
            _check_rigid(_matrix(f.get("transform_matrix"), (4, 4), f"frame {i} transform_matrix", path),
                         f"frame {i} transform_matrix", path)
        try:
            cams = Cameras.from_nerf_frames(frames, {k: v for k, v in data.items() if k != "frames"})
        except (GafkitError, TypeError, ValueError) as err:
            raise InputError(path, str(err).removeprefix("transforms.json: ")) from None
        for i in range(len(cams)):
            _check_intrinsics(cams.K[i].double(), f"frame {i}", path)
        return cams
    try:
        width, height = int(data["width"]), int(data["height"])
    except (KeyError, TypeError, ValueError):
        raise InputError(path, "OpenCV-style paths need integer 'width' and 'height' at the top level "
                               "(or give NeRF-style frames with 'transform_matrix')") from None
    if width <= 0 or height <= 0:
        raise InputError(path, f"image size must be positive, got {width}x{height}")
    ks, w2cs = [], []
    for i, f in enumerate(frames):
        if "w2c" not in f:
            raise InputError(path, f"frame {i}: no 'w2c' (or 'transform_matrix')")
        raw = f["w2c"]
        rows = len(raw) if isinstance(raw, list) else 0
        w2c = _matrix(raw, (rows if rows in (3, 4) else 4, 4), f"frame {i} w2c", path)
        _check_rigid(w2c, f"frame {i} w2c", path)
        if rows == 3:
            w2c = torch.cat([w2c, torch.tensor([[0.0, 0, 0, 1]], dtype=w2c.dtype)])
        k = _matrix(f.get("K", data.get("K")), (3, 3), f"frame {i} K", path)
        _check_intrinsics(k, f"frame {i}", path)
        ks.append(k)
        w2cs.append(w2c)
    return Cameras(K=torch.stack(ks).float(), w2c=torch.stack(w2cs).float(), width=width, height=height)
