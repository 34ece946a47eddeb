from __future__ import annotations

import math

import torch

from gafkit.heads.base import axis_angle_to_matrix
from gafkit.trackers.fit import LandmarkFitConfig, _project, default_camera, fit_landmarks
from gafkit.trackers.losses import landmark_loss, temporal_smoothness, weighted
from toy_head import ToyHead


def _ground_truth(model: ToyHead, n: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    p = model.zero_params(n)
    t = torch.linspace(0, 1, n)
    p.rotation[:, 1] = torch.sin(2 * math.pi * t) * math.radians(25)  # yaw sweep
    p.rotation[:, 0] = torch.cos(2 * math.pi * t) * math.radians(8)
    p.translation[:] = torch.tensor([0.01, -0.005, -0.6])
    p.expr[:] = torch.rand(n, model.n_expr, generator=g) * torch.sin(math.pi * t)[:, None]
    p.shape[:] = torch.randn(1, model.n_shape, generator=g) * 0.5
    return p


def _angle_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    r = axis_angle_to_matrix(a).transpose(-1, -2) @ axis_angle_to_matrix(b)
    cos = ((r.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1)
    return torch.rad2deg(torch.acos(cos))


def test_fit_recovers_pose_and_face_vertices_with_1px_noise():
    torch.manual_seed(0)
    model = ToyHead()
    n, size = 12, 256
    gt = _ground_truth(model, n)
    cam = default_camera(size, size, fov_deg=22.0)
    focal = cam.K[0, 0, 0]
    verts = model(gt)
    lmk3d = model.landmark_points(verts)
    uv, _ = _project(lmk3d, focal, size / 2, size / 2)
    noisy = uv + torch.randn_like(uv)  # 1 px noise
    valid = torch.ones(n, dtype=torch.bool)
    valid[5] = False  # one failed frame, bridged by smoothness
    noisy[5] = float("nan")
    cfg = LandmarkFitConfig(rigid_steps=150, steps=300, init_fov_deg=18.0)
    result = fit_landmarks(model, noisy, valid, size, size, cfg)
    good = valid.clone()
    err = result.errors_px[good]
    assert err.mean() < 1.5, err.mean()
    # face-region vertices reprojected against the truth (the measure)
    fit_verts = model(result.params)
    face = model.regions["face"]
    f_fit = result.cameras.K[0, 0, 0]
    uv_fit, _ = _project(fit_verts[:, face], f_fit, size / 2, size / 2)
    uv_gt, _ = _project(verts[:, face], focal, size / 2, size / 2)
    vert_err = (uv_fit - uv_gt).norm(dim=-1)[good].mean()
    assert vert_err < 2.0 * size / 512 + 0.5, vert_err
    rot_err = _angle_deg(result.params.rotation, gt.rotation)[good]
    assert rot_err.mean() < 3.0, rot_err
    assert result.params.shape.shape == (n, model.n_shape)
    assert torch.isnan(result.errors_px[5]).all()
    assert set(result.log) == {"rigid", "full"} and "landmarks" in result.log["full"]


def test_losses():
    p = torch.zeros(2, 3, 2)
    w = torch.ones(2, 3)
    assert landmark_loss(p, p, w, 1.0) == 0
    near = landmark_loss(p, p + torch.tensor([0.5, 0.0]), w, 1.0)
    far = landmark_loss(p, p + torch.tensor([4.0, 0.0]), w, 1.0)
    assert torch.isclose(near, torch.tensor(0.125)) and torch.isclose(far, torch.tensor(3.5))
    assert temporal_smoothness(torch.arange(5.0)[:, None]) == 0  # linear motion is smooth
    assert temporal_smoothness(torch.tensor([[0.0], [1.0], [0.0]])) == 4
    total, log = weighted({"a": torch.tensor(2.0), "b": torch.tensor(3.0)}, {"a": 0.5, "b": None})
    assert total == 1.0 and log == {"a": 1.0, "total": 1.0}
