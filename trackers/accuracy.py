"""How far a tracked sequence is from a synthetic subject's ground truth (``gafkit synth`` ``gt/``).

The tracker fits its own camera (focal length, principal point at the crop centre) in its own crop of
the frames, so tracked and true parameters live in different cameras and images. They are compared
where both are observable, in the synthetic image:

- **vertex reprojection**: the tracked mesh projected by the tracked camera gives crop pixels; the
  crop transform (``crop.json``) maps them back to decoded-frame pixels and ``decode_scale`` to the
  subject image's pixels, where the true mesh projected by the true camera lands. The distance
  includes identity (shape) error, since the tracked identity is fitted.
- **head rotation**: the head's orientation as each camera sees it, ``R_cam @ R_head`` with
  ``R_head = R(rotation) @ R(neck)`` (the neck joint turns the head too; zero for ICT), compared by the
  geodesic angle. Rotation about the camera's axis is independent of the crop and focal length.

Frames are matched by their source index: the tracked input must be the subject's ``images/`` folder
(natural name order, so source index ``i`` is subject frame ``i``).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from gafkit.errors import InputError
from gafkit.heads import HeadModel, HeadParams, load_head_model
from gafkit.heads.base import axis_angle_to_matrix
from gafkit.render.camera import Cameras
from gafkit.trackers.crop import CropTransform
from gafkit.trackers.sequence import load_sequence


@dataclasses.dataclass
class TrackAccuracy:
    """Errors of the kept frames. Shapes: ``vertex_px [N, K]`` (K region vertices), ``rotation_deg [N]``."""

    frames: list[int]
    """Subject frame index of each kept tracked frame."""
    vertex_px: np.ndarray
    """Distance of each region vertex's tracked and true projection, subject-image pixels."""
    rotation_deg: np.ndarray
    """Geodesic angle between tracked and true head orientation in camera space, per frame."""
    image_size: int
    """Width of the subject's images (the pixels ``vertex_px`` is measured in)."""
    detector_px: np.ndarray
    """``[N, 478]`` distance of the detected landmarks from the true mesh's landmark points (the model's
    mediapipe embedding), subject-image pixels: what the landmark fit starts from, before any fitting
    error (nan where a landmark was not detected)."""

    def summary(self) -> dict[str, float]:
        return {
            "face_vertex_error_px_mean": float(self.vertex_px.mean()),
            "face_vertex_error_px_p95": float(np.percentile(self.vertex_px, 95)),
            "rotation_error_deg_mean": float(self.rotation_deg.mean()),
            "rotation_error_deg_max": float(self.rotation_deg.max()),
            "detector_error_px_mean": float(np.nanmean(self.detector_px)),
        }


def camera_rotation(cameras: Cameras, params: HeadParams) -> Float[Tensor, "N 3 3"]:
    """Head orientation in camera space, ``R_cam @ R(rotation) @ R(neck)``; cameras: one or N."""
    r_head = axis_angle_to_matrix(params.rotation) @ axis_angle_to_matrix(params.neck)
    return cameras.w2c[:, :3, :3].expand(len(r_head), 3, 3) @ r_head


def geodesic_deg(a: Float[Tensor, "N 3 3"], b: Float[Tensor, "N 3 3"]) -> Float[Tensor, " N"]:
    """Angle of the rotation taking ``a`` to ``b``, in degrees."""
    cos = ((a.transpose(1, 2) @ b).diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2
    return torch.rad2deg(torch.acos(cos.clamp(-1.0, 1.0)))


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "missing") from None


def track_accuracy(tracked: str | Path, subject: str | Path, region: str = "face",
                   head: HeadModel | None = None) -> TrackAccuracy:
    """Compare the ``gafkit track`` output ``tracked`` with the ground truth of the ``gafkit synth``
    subject ``subject`` it was tracked from (see the module docstring)."""
    tracked, subject = Path(tracked), Path(subject)
    seq = load_sequence(tracked)
    crop_info = _read_json(tracked / "crop.json")
    crop = CropTransform.from_dict(crop_info)
    decode_scale = float(crop_info.get("decode_scale", 1.0))
    gt_file = subject / "gt" / "params.npz"
    if not gt_file.is_file():
        raise InputError(subject, "no gt/params.npz (not a gafkit synth subject)")
    truth = HeadParams.load_npz(gt_file)
    size = _read_json(subject / "transforms.json")
    with np.load(gt_file) as data:
        gt_model = str(data["head_model"])
        gt_cam = Cameras(K=torch.from_numpy(data["K"]).float()[None], w2c=torch.from_numpy(data["w2c"]).float()[None],
                         width=int(size["w"]), height=int(size["h"]))
    if seq.head_model != gt_model:
        raise InputError(tracked, f"tracked with head model {seq.head_model}, the subject uses {gt_model}")
    frames = [int(f["index"]) for f in seq.frames]
    if max(frames) >= truth.batch_size:
        raise InputError(tracked, f"source frame {max(frames)} is beyond the subject's {truth.batch_size} frames")
    truth = truth[torch.tensor(frames)]
    head = head or load_head_model(seq.head_model)
    idx = head.regions[region]
    with torch.no_grad():
        crop_uv, _ = seq.cameras.project(head(seq.params)[:, idx])  # [N, K, 2] crop pixels
        true_uv, _ = _project_static(gt_cam, head(truth)[:, idx])  # [N, K, 2] subject-image pixels
        rot = geodesic_deg(camera_rotation(seq.cameras, seq.params), camera_rotation(gt_cam, truth))
        true_lmk, _ = _project_static(gt_cam, head.landmark_points(head(truth)))  # [N, 478, 2]
    tracked_uv = crop.crop_to_frame(crop_uv.double().numpy()) / decode_scale
    err = np.linalg.norm(tracked_uv - true_uv.double().numpy(), axis=-1)
    with np.load(tracked / "landmarks.npz") as data:
        detected = data["landmarks_frame"][data["valid"].astype(bool), :, :2] / decode_scale
    detector = np.linalg.norm(detected - true_lmk.double().numpy(), axis=-1)
    return TrackAccuracy(frames=frames, vertex_px=err, rotation_deg=rot.double().numpy(), image_size=gt_cam.width,
                         detector_px=detector)


def _project_static(camera: Cameras, points: Float[Tensor, "N K 3"]) -> tuple[Tensor, Tensor]:
    """Project every frame's points with the one camera ``camera``."""
    n = points.shape[0]
    cams = Cameras(K=camera.K.expand(n, 3, 3), w2c=camera.w2c.expand(n, 4, 4), width=camera.width,
                   height=camera.height)
    return cams.project(points)
