"""Driving an avatar with another performance: driver loading and retargeting (``gafkit animate``).

A *driver* is a sequence of head-model parameters, with the cameras that saw them when it comes from a
tracked sequence: another person's clip (cross-reenactment), a parameter file in the documented
``HeadParams`` format (``head_params.npz``: ``shape, expr, rotation, translation, neck, jaw, eyes``,
optional ``head_model``), or the avatar's own training sequence (self-reenactment).

Retargeting keeps the avatar's identity (``shape`` and per-vertex ``offsets``) and takes from the driver
its expression coefficients, jaw, neck and eye rotations (these live in the head's own frame, so they
transfer unchanged), and its head motion. Head motion is re-expressed relative to a *reference* pose
(``retarget.head_pose``):

- ``relative`` (default): the driver's head pose is measured in its camera's frame, relative to the
  driver's reference pose (``retarget.reference``: the mean pose of the clip, or its first frame). The
  rotation difference is taken in the head's own frame (a nod stays a nod about the avatar's own ear
  axis even when the driver sat turned away), the pivot displacement in camera space, in metres. Both
  are applied on top of the avatar's reference pose (the mean, or first, pose of its training frames
  seen from its first source camera). The mean is the default because it is the pose the avatar saw
  most, and because it does not depend on what one frame happened to do.
- ``absolute``: the driver's world-space head pose unchanged (a parameter file made for this avatar's
  world, or a driver filmed with the same camera set-up).
- ``fixed``: the avatar's reference pose on every frame (expression only).

The mean rotation is the chordal L2 mean (the average matrix projected back onto rotations).
"""

from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from gafkit.errors import InputError
from gafkit.heads.base import HeadModel, HeadParams, axis_angle_to_matrix
from gafkit.media import sequence_fps
from gafkit.recon.binding import matrix_to_quaternion
from gafkit.render.camera import Cameras

POSE_SHAPES = {"rotation": 3, "translation": 3, "neck": 3, "jaw": 3, "eyes": 6}


@dataclasses.dataclass
class RetargetConfig:
    """How the driver's head motion reaches the avatar (module docstring)."""

    head_pose: Literal["relative", "absolute", "fixed"] = "relative"
    reference: Literal["mean", "first"] = "mean"
    """The neutral pose that head motion is measured from, for the driver and the avatar alike."""


@dataclasses.dataclass
class Driver:
    """What drives the avatar, one entry per driver frame (N).

    ``cameras`` [N] are the cameras that saw the driver (None for parameter files); ``images`` are its
    frames (None without a tracked sequence); ``fps`` is its frame rate when known.
    """

    source: Path
    params: HeadParams
    cameras: Cameras | None
    images: list[Path] | None
    fps: float | None
    own: bool = False
    """True for the avatar's own training sequence (self-reenactment)."""

    def __len__(self) -> int:
        return self.params.batch_size


def load_driver(path: str | Path | None, bundle, device: torch.device | str = "cpu") -> Driver:
    """The driver at ``path`` (a tracked sequence folder or a parameter ``.npz``), checked against the
    avatar of ``bundle`` (:class:`~gafkit.recon.evaluate.AvatarBundle`); ``None`` = the avatar's own
    sequence."""
    head = bundle.info.get("head_model", "ict")
    if path is None:
        source = Path(bundle.info.get("source", ""))
        images, fps = None, None
        if (source / "manifest.json").is_file():
            from gafkit.trackers.sequence import load_sequence

            try:
                seq = load_sequence(source)
            except InputError:
                seq = None  # moved or partly deleted: the motion is in the avatar, only the pictures are lost
            if seq is not None and len(seq) == bundle.params.batch_size:
                images, fps = seq.images, sequence_fps([f["timestamp"] for f in seq.frames])
        return Driver(source=source, params=bundle.params, cameras=bundle.cameras, images=images, fps=fps, own=True)
    path = Path(path)
    if path.is_dir():
        from gafkit.trackers.sequence import load_sequence

        seq = load_sequence(path, device)
        if seq.head_model != head:
            raise InputError(path, f"tracked with the {seq.head_model} head model; the avatar uses {head}")
        check_driver_params(path / "head_params.npz", seq.params, bundle.model)
        return Driver(source=path, params=seq.params, cameras=seq.cameras, images=seq.images,
                      fps=sequence_fps([f["timestamp"] for f in seq.frames]))
    if not path.is_file():
        raise InputError(path, "no such driver (expected a tracked-sequence folder or a parameter .npz)")
    try:
        with np.load(path) as data:
            stored = str(data["head_model"]) if "head_model" in data.files else None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise InputError(path, f"not a parameter file ({err.__class__.__name__}: {err})") from None
    if stored is not None and stored != head:
        raise InputError(path, f"parameters of the {stored} head model; the avatar uses {head}")
    params = HeadParams.load_npz(path, device)
    check_driver_params(path, params, bundle.model)
    return Driver(source=path, params=params, cameras=None, images=None, fps=None)


def check_driver_params(path: Path, params: HeadParams, model: HeadModel) -> None:
    """Refuse parameters that do not fit ``model``: wrong expression count (another head model or
    another FLAME), wrong pose shapes, non-finite values, or no frames."""
    n = params.expr.shape[0] if params.expr.ndim == 2 else -1
    if n < 1:
        raise InputError(path, f"expr must be [frames, coefficients] with at least one frame, got {list(params.expr.shape)}")
    if params.expr.shape[1] != model.n_expr:
        raise InputError(path, f"{params.expr.shape[1]} expression coefficients, but the avatar's {model.name} model has "
                               f"{model.n_expr}: parameters of another head model?")
    for name, width in POSE_SHAPES.items():
        got = list(getattr(params, name).shape)
        if got != [n, width]:
            raise InputError(path, f"{name} must be [{n}, {width}] (one row per frame), got {got}")
    for name, value in params.tensors().items():
        if name != "offsets" and not torch.isfinite(value).all():
            raise InputError(path, f"{name} holds NaN or infinite values")


# ---- rigid head pose in camera space ---------------------------------------------------------------

def matrix_to_axis_angle(rot: Float[Tensor, "*B 3 3"]) -> Float[Tensor, "*B 3"]:
    """Axis-angle vectors of rotation matrices (through unit quaternions: stable at every angle).

    >>> aa = torch.tensor([[0.3, -1.2, 2.0]])
    >>> torch.allclose(matrix_to_axis_angle(axis_angle_to_matrix(aa)), aa, atol=1e-5)
    True
    """
    q = matrix_to_quaternion(rot)  # w >= 0
    vec = q[..., 1:]
    norm = vec.norm(dim=-1, keepdim=True)
    angle = 2 * torch.atan2(norm, q[..., :1])
    # angle / |v| -> 2 as |v| -> 0 (w -> 1).
    scale = torch.where(norm > 1e-8, angle / norm.clamp_min(1e-8), torch.full_like(norm, 2.0))
    return vec * scale


def mean_rotation(rots: Float[Tensor, "N 3 3"]) -> Float[Tensor, "3 3"]:
    """Chordal L2 mean: the rotation closest (Frobenius) to the average matrix."""
    u, _, vt = torch.linalg.svd(rots.mean(0))
    d = torch.sign(torch.det(u @ vt))
    return u @ torch.diag(torch.stack([torch.ones_like(d), torch.ones_like(d), d])) @ vt


@dataclasses.dataclass
class CameraPose:
    """Head pose seen from a camera (OpenCV camera space), one row per frame.

    Shapes: rotation [N, 3, 3] (head rotation in camera space), pivot [N, 3] (the model's pivot, metres).
    """

    rotation: Float[Tensor, "N 3 3"]
    pivot: Float[Tensor, "N 3"]


def camera_pose(params: HeadParams, model: HeadModel, cameras: Cameras) -> CameraPose:
    """Each frame's head rotation and pivot position in its camera's frame (``cameras`` [N] or [1])."""
    rc, tc = cameras.w2c[:, :3, :3].to(params.rotation), cameras.w2c[:, :3, 3].to(params.rotation)
    rot = rc @ axis_angle_to_matrix(params.rotation)
    pivot = torch.einsum("nij,nj->ni", rc.expand(len(rot), 3, 3), model.pivot + params.translation) + tc
    return CameraPose(rotation=rot, pivot=pivot)


def world_pose(pose: CameraPose, model: HeadModel, camera: Cameras) -> tuple[Float[Tensor, "N 3"], Float[Tensor, "N 3"]]:
    """``(rotation, translation)`` head parameters that put the head at ``pose`` seen from ``camera`` [1]."""
    rc, tc = camera.w2c[0, :3, :3].to(pose.pivot), camera.w2c[0, :3, 3].to(pose.pivot)
    rot = rc.T @ pose.rotation
    translation = (pose.pivot - tc) @ rc - model.pivot  # rc^T (c - t), row-vector form
    return matrix_to_axis_angle(rot), translation


def reference_pose(pose: CameraPose, how: str) -> CameraPose:
    """The neutral pose of a clip: the mean pose or the first frame's, as one row."""
    if how == "first":
        return CameraPose(rotation=pose.rotation[:1], pivot=pose.pivot[:1])
    return CameraPose(rotation=mean_rotation(pose.rotation)[None], pivot=pose.pivot.mean(0, keepdim=True))


# ---- retargeting -----------------------------------------------------------------------------------

def retarget(driver: Driver, bundle, cfg: RetargetConfig) -> tuple[HeadParams, Cameras]:
    """Per-frame avatar parameters [N] driven by ``driver``, and the cameras [N] that frame them like the
    source video (the driver's own cameras for self-reenactment, else the avatar's first source camera).
    """
    model, own = bundle.model, bundle.params
    device = own.expr.device
    d = driver.params.to(device)
    n = d.batch_size
    offsets = None if own.offsets is None else own.offsets[:1].expand(n, -1, -1)
    params = dataclasses.replace(d, shape=own.shape[:1].expand(n, -1), offsets=offsets)
    if driver.own and cfg.head_pose != "fixed":
        return params, driver.cameras  # relative to itself = its own poses, in its own cameras
    camera = bundle.cameras[0]
    cameras = dataclasses.replace(camera, K=camera.K.expand(n, 3, 3), w2c=camera.w2c.expand(n, 4, 4))
    if cfg.head_pose == "absolute":
        return params, cameras
    avatar_ref = reference_pose(camera_pose(own, model, bundle.cameras), cfg.reference)
    if cfg.head_pose == "fixed":
        target = CameraPose(rotation=avatar_ref.rotation.expand(n, 3, 3), pivot=avatar_ref.pivot.expand(n, 3))
    else:
        seen = camera_pose(d, model, driver.cameras.to(device) if driver.cameras is not None else camera)
        ref = reference_pose(seen, cfg.reference)
        delta = ref.rotation.transpose(1, 2) @ seen.rotation  # in the driver's head frame
        target = CameraPose(rotation=avatar_ref.rotation @ delta, pivot=avatar_ref.pivot + (seen.pivot - ref.pivot))
    rotation, translation = world_pose(target, model, camera)
    return dataclasses.replace(params, rotation=rotation, translation=translation), cameras
