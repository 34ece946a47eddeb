"""Stage 5 of tracking: fit the head model to per-frame 2D landmarks.

One static pinhole camera looks at the head, which moves (as in VHAP's monocular setting). Optimized
jointly over all frames (batched; on the GPU when present):

- shared: identity ``shape`` and the focal length (principal point at the crop centre);
- per frame: ``expr``, ``rotation``, ``translation``, ``eyes`` and, for models with joints, ``jaw``/``neck``.

Two named steps, each with its own log: ``rigid`` (rotation, translation, focal from the stable inner
landmarks), then ``full`` (everything, with priors and temporal smoothness). Landmarks are weighted by
visibility: the weight of a landmark falls to zero as its triangle turns away from the camera, which
stops the far-side face-contour points (that mediapipe slides along the silhouette) from pulling the
jaw line when the head turns.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from gafkit.heads.base import HeadModel, HeadParams, axis_angle_to_matrix
from gafkit.render.camera import Cameras
from gafkit.trackers.losses import l2_prior, landmark_loss, temporal_smoothness, weighted, weighted_sum

log = logging.getLogger("gafkit.track")


@dataclasses.dataclass
class FitWeights:
    """Loss weights; ``None`` turns a term off."""

    landmarks: float | None = 1.0
    shape_prior: float | None = 1e-4
    expr_prior: float | None = 1e-4
    jaw_prior: float | None = 1e-3
    smooth_expr: float | None = 1e-2
    smooth_rotation: float | None = 1.0
    smooth_translation: float | None = 100.0
    """Translations are in metres, so their differences are small: a larger weight."""


@dataclasses.dataclass
class LandmarkFitConfig:
    rigid_steps: int = 150
    """Adam steps of the rigid step (rotation, translation, focal)."""
    steps: int = 200
    """Adam steps of the full step."""
    lr: float = 0.02
    """Base learning rate (rotation in radians, expression coefficients); translation uses lr/10, the
    identity 5 lr."""
    init_fov_deg: float = 20.0
    """Initial horizontal field of view of the crop."""
    optimize_focal: bool = True
    contour_weight: float = 0.5
    """Relative weight of face-oval (silhouette) landmarks before visibility weighting."""
    iris_weight: float = 1.0
    huber_px: float = 2.0
    """Landmark errors below this many pixels are penalized quadratically, above linearly."""
    cpu_threads: int = 1
    """Torch threads while fitting on the CPU (0: torch's setting). Every tensor of the fit is small, so
    threads mostly wait for each other; on a loaded machine a descheduled thread stalls every op (on the
    shared 2-core box, 2 threads ran 3-10x slower than 1)."""
    w: FitWeights = dataclasses.field(default_factory=FitWeights)


@dataclasses.dataclass
class LandmarkFitResult:
    """Per-frame parameters and the shared camera.

    Shapes: params tensors [N, ...] (shape repeated per frame); cameras: one camera.
    errors_px: [N, L] reprojection error per landmark (nan on invalid frames).
    """

    params: HeadParams
    cameras: Cameras
    errors_px: Tensor
    log: dict[str, dict[str, float]]


# Index sets of mediapipe's 478-point face mesh, from the edge sets of mediapipe's
# ``face_mesh_connections`` (topology facts; kept here so fitting runs without mediapipe installed, e.g.
# on a GPU machine fed saved landmarks; a test checks them against mediapipe).
# oval: FACEMESH_FACE_OVAL; iris: FACEMESH_IRISES (the ring points, not the centres 468/473);
# stable: eyes, eyebrows and nose, minus the oval.
LANDMARK_GROUPS: dict[str, tuple[int, ...]] = {
    "oval": (10, 21, 54, 58, 67, 93, 103, 109, 127, 132, 136, 148, 149, 150, 152, 162, 172, 176, 234, 251, 284,
             288, 297, 323, 332, 338, 356, 361, 365, 377, 378, 379, 389, 397, 400, 454),
    "iris": (469, 470, 471, 472, 474, 475, 476, 477),
    "stable": (1, 2, 4, 5, 6, 7, 19, 33, 45, 46, 48, 52, 53, 55, 63, 64, 65, 66, 70, 94, 97, 98, 105, 107, 115, 133,
               144, 145, 153, 154, 155, 157, 158, 159, 160, 161, 163, 168, 173, 195, 197, 220, 246, 249, 263, 275,
               276, 278, 282, 283, 285, 293, 294, 295, 296, 300, 326, 327, 334, 336, 344, 362, 373, 374, 380, 381,
               382, 384, 385, 386, 387, 388, 390, 398, 440, 466),
}


def default_camera(width: int, height: int, fov_deg: float, device: torch.device | str = "cpu") -> Cameras:
    """A camera at the world origin looking down -Z (the head model faces +Z), y up in the world."""
    focal = 0.5 * width / math.tan(math.radians(fov_deg) / 2)
    K = torch.tensor([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]], dtype=torch.float32, device=device)
    w2c = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0], device=device))
    return Cameras(K=K[None], w2c=w2c[None], width=width, height=height)


def _project(points: Float[Tensor, "N L 3"], focal: Tensor, cx: float, cy: float) -> tuple[Tensor, Tensor]:
    """World points seen by :func:`default_camera` -> pixels [N, L, 2] and depth [N, L]."""
    x, y, z = points.unbind(-1)
    depth = (-z).clamp_min(1e-4)
    return torch.stack([focal * x / depth + cx, -focal * y / depth + cy], dim=-1), depth


def _visibility(corners: Float[Tensor, "N L 3 3"]) -> Float[Tensor, "N L"]:
    """Cosine between each landmark triangle's normal and the direction to the camera (clamped >= 0)."""
    n = torch.cross(corners[:, :, 1] - corners[:, :, 0], corners[:, :, 2] - corners[:, :, 0], dim=-1)
    n = torch.nn.functional.normalize(n, dim=-1)
    to_cam = torch.nn.functional.normalize(-corners.mean(dim=2), dim=-1)  # camera at the origin
    return (n * to_cam).sum(-1).clamp_min(0.0)


# Visibility weights follow the head's rotation, which moves little between Adam steps; refreshing
# them every few steps instead of every step saves posing all landmark triangles each step.
_VISIBILITY_EVERY = 10


class _Landmarks:
    """The landmarks and their triangles' corners on a head model, before the head pose.

    Models with a ``point_map`` (ICT) precompute them as a linear map of the coefficients, so a step
    costs O(landmarks) and the identity (``shape`` of batch 1) is applied once for all frames; other
    models deform the landmark triangles' vertices each call.
    """

    def __init__(self, model: HeadModel, device: torch.device):
        self.model = model
        tri = model.faces[model.landmarks.faces.to(device)]  # [L, 3]
        bary = model.landmarks.bary.to(device)
        self.used, self.tri = torch.unique(tri, return_inverse=True)  # tri: [L, 3] into used
        self.bary = bary
        make = getattr(model, "point_map", None)
        self._points = make(tri, bary) if make else None
        self._corners = make(self.used[:, None], torch.ones(len(self.used), 1, device=device)) if make else None

    def _deform(self, p: HeadParams) -> Tensor:
        n = max(p.expr.shape[0], p.rotation.shape[0])
        full = dataclasses.replace(p, shape=p.shape.expand(n, -1))
        return self.model.deform_subset(full, self.used)  # [N, K, 3]

    def points(self, p: HeadParams) -> Float[Tensor, "N L 3"]:
        if self._points is not None:
            return self._points(p)
        return (self._deform(p)[:, self.tri] * self.bary[None, :, :, None]).sum(2)

    def corners(self, p: HeadParams) -> Float[Tensor, "N L 3 3"]:
        verts = self._corners(p) if self._corners is not None else self._deform(p)
        return verts[:, self.tri]

    def pixels(self, unposed: Float[Tensor, "N L 3"], p: HeadParams, focal: Tensor, cx: float, cy: float
               ) -> Float[Tensor, "N L 2"]:
        """``unposed`` points posed by ``p`` and seen by :func:`default_camera` with ``focal``."""
        if type(self.model).pose is not HeadModel.pose:
            return _project(self.model.pose(unposed, p), focal, cx, cy)[0]
        # HeadModel.pose, computed on [N, 3, L]: batched 3x3 rotations of points laid out coordinate-major
        # take a fraction of the time of the [N, L, 3] layout on the CPU (ICTPointMap returns that layout).
        pivot = self.model.pivot[:, None]
        posed = torch.baddbmm(pivot + p.translation[..., None], axis_angle_to_matrix(p.rotation),
                              unposed.transpose(1, 2) - pivot)
        x, y, z = posed.unbind(1)
        scale = focal / (-z).clamp_min(1e-4)
        return torch.stack([x * scale + cx, cy - y * scale], dim=-1)


@contextlib.contextmanager
def _torch_threads(n: int, device: torch.device):
    """Run with ``n`` intra-op threads on the CPU (``n`` = 0 or another device: unchanged)."""
    if n <= 0 or device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fit_landmarks(
    model: HeadModel,
    landmarks: Float[Tensor, "N L 2"],
    valid: Bool[Tensor, " N"],
    width: int,
    height: int,
    cfg: LandmarkFitConfig | None = None,
) -> LandmarkFitResult:
    """Fit ``model`` to 2D landmarks (mediapipe's 478, crop pixels, pixel centres at j + 0.5).

    Invalid frames get parameters interpolated from their neighbours through temporal smoothness but
    no landmark term. Runs on the device of ``model``.
    """
    cfg = cfg or LandmarkFitConfig()
    if model.landmarks is None:
        from gafkit.errors import GafkitError

        raise GafkitError(f"head model {model.name!r} has no landmark embedding; tracking needs one")
    with _torch_threads(cfg.cpu_threads, model.template.device):
        return _fit(model, landmarks, valid, width, height, cfg)


def _fit(model: HeadModel, landmarks: Tensor, valid: Tensor, width: int, height: int, cfg: LandmarkFitConfig
         ) -> LandmarkFitResult:
    device = model.template.device
    target = torch.nan_to_num(landmarks.to(device, torch.float32))  # invalid frames carry no landmark term
    n, num_lmk = target.shape[:2]
    groups = {k: list(v) for k, v in LANDMARK_GROUPS.items()}
    base_w = torch.ones(num_lmk, device=device)
    base_w[groups["oval"]] = cfg.contour_weight
    base_w[groups["iris"]] = cfg.iris_weight
    frame_w = valid.to(device, torch.float32)[:, None]
    stable = torch.tensor(groups["stable"], device=device)

    cam = default_camera(width, height, cfg.init_fov_deg, device)
    log_focal = torch.log(cam.K[0, 0, 0]).clone().requires_grad_(cfg.optimize_focal)
    cx, cy = width / 2, height / 2
    params = model.zero_params(n, device)
    lmk = _Landmarks(model, device)
    shared = dataclasses.replace(params, shape=params.shape[:1])  # one identity for all frames

    # Initial translation: put the mean landmark depth where the detected face size says it is.
    with torch.no_grad():
        pts = model.pose(lmk.points(shared), params)
        spread3d = (pts[..., :2] - pts[..., :2].mean(1, keepdim=True)).norm(dim=-1).mean(1)  # [N]
        spread2d = (target - target.mean(1, keepdim=True)).norm(dim=-1).mean(1)
        ok = valid.to(device) & (spread2d > 1)
        ratio = (spread3d[ok] / spread2d[ok]).median() if ok.any() else torch.tensor(0.2 / width, device=device)
        depth = torch.exp(log_focal) * ratio
        center2d = target[ok].mean(dim=(0, 1)) if ok.any() else torch.tensor([cx, cy], device=device)
        center3d = pts.mean(dim=(0, 1))
        params.translation[:] = torch.stack([
            (center2d[0] - cx) * depth / torch.exp(log_focal) - center3d[0],
            -(center2d[1] - cy) * depth / torch.exp(log_focal) - center3d[1],
            -depth - center3d[2],
        ])

    def landmark_weights(p: HeadParams, lmk_w: Tensor, corners: Tensor | None = None) -> Tensor:
        """[N, L] weights: per-landmark base weight x sqrt(visibility) x frame validity."""
        with torch.no_grad():
            corners = lmk.corners(p) if corners is None else corners
            posed = model.pose(corners.reshape(n, -1, 3), p).reshape(corners.shape)
            return lmk_w * _visibility(posed).sqrt() * frame_w

    def loss_terms(p: HeadParams, unposed: Tensor, target: Tensor, w: Tensor, weights: dict[str, float | None]
                   ) -> dict[str, Tensor]:
        """The enabled loss terms of ``p`` (identity of batch 1) with unposed landmarks [N, L', 3] and their
        targets [N, L', 2] and weights [N, L']."""
        terms = {
            "landmarks": lambda: landmark_loss(lmk.pixels(unposed, p, torch.exp(log_focal), cx, cy), target, w,
                                               cfg.huber_px),
            "shape_prior": lambda: l2_prior(p.shape),
            "expr_prior": lambda: l2_prior(p.expr),
            "jaw_prior": lambda: l2_prior(p.jaw),
            "smooth_expr": lambda: temporal_smoothness(p.expr),
            "smooth_rotation": lambda: temporal_smoothness(p.rotation),
            "smooth_translation": lambda: temporal_smoothness(p.translation),
        }
        return {k: f() for k, f in terms.items() if weights.get(k) is not None}

    logs: dict[str, dict[str, float]] = {}
    fused = device.type in ("cpu", "cuda")  # one kernel per step for all parameters where torch has one
    rot = params.rotation.clone().requires_grad_(True)
    trans = params.translation.clone().requires_grad_(True)
    rigid_groups = [{"params": [rot], "lr": cfg.lr}, {"params": [trans], "lr": cfg.lr / 10}]
    if cfg.optimize_focal:
        rigid_groups.append({"params": [log_focal], "lr": cfg.lr})
    opt = torch.optim.Adam(rigid_groups, fused=fused)
    rigid_w = {"landmarks": 1.0, "smooth_rotation": cfg.w.smooth_rotation, "smooth_translation": cfg.w.smooth_translation}
    # Identity and expression are fixed here: the unposed stable landmarks and their triangles are
    # computed once, and the other landmarks (weight 0 in this step) are left out.
    with torch.no_grad():
        rigid_points, rigid_corners = lmk.points(shared)[:, stable], lmk.corners(shared)[:, stable]
    rigid_target, rigid_lmk_w = target[:, stable], torch.ones(len(stable), device=device)
    for step in range(cfg.rigid_steps):
        p = dataclasses.replace(shared, rotation=rot, translation=trans)
        if step % _VISIBILITY_EVERY == 0:
            w = landmark_weights(p, rigid_lmk_w, rigid_corners)
        total = weighted_sum(loss_terms(p, rigid_points, rigid_target, w, rigid_w), rigid_w)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
    with torch.no_grad():
        p = dataclasses.replace(shared, rotation=rot, translation=trans)
        w = landmark_weights(p, rigid_lmk_w, rigid_corners)
        _, logs["rigid"] = weighted(loss_terms(p, rigid_points, rigid_target, w, rigid_w), rigid_w)

    shape = torch.zeros(1, model.n_shape, device=device, requires_grad=True)
    expr = params.expr.clone().requires_grad_(True)
    eyes = params.eyes.clone().requires_grad_(True)
    jaw = params.jaw.clone().requires_grad_(model.has_jaw_joint)
    groups_full = [
        {"params": [rot, expr, eyes], "lr": cfg.lr},
        {"params": [trans], "lr": cfg.lr / 10},
        # Identity coefficients are ~N(0, 1), several times the range of the others, and shared: the slowest
        # to converge at the common rate (300 steps at lr/2 reached the landmark error of 150 at 5 lr on d20).
        {"params": [shape], "lr": cfg.lr * 5},
    ]
    if model.has_jaw_joint:
        groups_full.append({"params": [jaw], "lr": cfg.lr})
    if cfg.optimize_focal:
        groups_full.append({"params": [log_focal], "lr": cfg.lr / 4})
    opt = torch.optim.Adam(groups_full, fused=fused)
    bounds = getattr(model, "expr_bounds", None)
    weights = dataclasses.asdict(cfg.w)

    def current() -> HeadParams:
        return dataclasses.replace(shared, shape=shape, expr=expr, rotation=rot, translation=trans, eyes=eyes, jaw=jaw)

    for step in range(cfg.steps):
        p = current()
        if step % _VISIBILITY_EVERY == 0:
            w = landmark_weights(p, base_w)
        total = weighted_sum(loss_terms(p, lmk.points(p), target, w, weights), weights)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        if bounds is not None:
            with torch.no_grad():
                expr.clamp_(*bounds)

    with torch.no_grad():
        p = current().detach()
        unposed = lmk.points(p)
        _, logs["full"] = weighted(loss_terms(p, unposed, target, landmark_weights(p, base_w), weights), weights)
        uv = lmk.pixels(unposed, p, torch.exp(log_focal), cx, cy)
        errors = (uv - target).norm(dim=-1)
        errors[~valid.to(device)] = float("nan")
    final = dataclasses.replace(p, shape=p.shape.expand(n, -1))
    cam.K[0, 0, 0] = cam.K[0, 1, 1] = float(torch.exp(log_focal.detach()))
    for step_name, values in logs.items():
        log.debug("[track-fit-%s] %s", step_name, ", ".join(f"{k}={v:.4g}" for k, v in values.items()))
    return LandmarkFitResult(params=final, cameras=cam, errors_px=errors, log=logs)
