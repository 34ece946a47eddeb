from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from gafkit.heads.base import axis_angle_to_matrix
from gafkit.trackers.fit import LANDMARK_GROUPS, LandmarkFitConfig, _project, default_camera, fit_landmarks
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
    cfg = LandmarkFitConfig(init_fov_deg=18.0)  # the default steps
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


@pytest.fixture(scope="module")
def ict():
    from gafkit.heads import load_head_model

    return load_head_model("ict")


def _random_ict_params(model, n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    p = model.zero_params(n)
    p.shape[:] = torch.randn(n, model.n_shape, generator=g)
    p.expr[:] = torch.rand(n, model.n_expr, generator=g)
    p.eyes[:] = torch.randn(n, 6, generator=g) * 0.3  # gaze turns the eyeball vertices
    p.rotation[:] = torch.randn(n, 3, generator=g) * 0.2
    p.translation[:] = torch.randn(n, 3, generator=g) * 0.01
    return p


def test_ict_point_map_matches_full_deform(ict):
    p = _random_ict_params(ict, 3)
    # landmark-triangle vertices plus a few eyeball vertices, which turn with the gaze
    ids = torch.cat([ict.faces[ict.landmarks.faces].unique(), ict.regions["eyeball_left"][::97],
                     ict.regions["eyeball_right"][::89]]).unique()
    for offsets in (None, torch.randn(3, ict.num_vertices, 3, generator=torch.Generator().manual_seed(1)) * 0.01):
        q = dataclasses.replace(p, offsets=offsets)
        full = ict(q)
        assert torch.allclose(ict(q, vertex_ids=ids), full[:, ids], atol=1e-6)
        lmk = ict.point_map(ict.faces[ict.landmarks.faces], ict.landmarks.bary)
        assert torch.allclose(ict.pose(lmk(q), q), ict.landmark_points(full), atol=1e-6)
    # an identity of batch 1 is broadcast over the frames
    shared = dataclasses.replace(p, shape=p.shape[:1])
    assert torch.allclose(lmk(shared), lmk(dataclasses.replace(p, shape=p.shape[:1].expand(3, -1))), atol=1e-6)
    # the gaze moves the iris landmarks, and only points on the eyeballs
    still = lmk(dataclasses.replace(p, eyes=torch.zeros_like(p.eyes)))
    moved = (lmk(p) - still).norm(dim=-1).amax(0) > 1e-5
    on_eye = torch.isin(ict.faces[ict.landmarks.faces], ict.regions["eyes"]).any(1)
    assert moved[468:].any() and not moved[~on_eye].any()


def test_fit_ict_synthetic_uses_point_map(ict):
    """The ICT fast path end to end: ICT's own landmarks of a known sequence, with 1 px noise."""
    torch.manual_seed(0)
    n, size = 10, 256
    gt = _random_ict_params(ict, n, seed=3)
    gt.shape[:] = gt.shape[:1] * 0.5
    gt.expr[:] = gt.expr * 0.3
    gt.eyes[:] = 0.0
    t = torch.linspace(0, 1, n)
    gt.rotation[:] = 0.0
    gt.rotation[:, 1] = torch.sin(2 * math.pi * t) * math.radians(20)
    gt.translation[:] = torch.tensor([0.0, 0.0, -0.9]) - ict.pivot
    focal = default_camera(size, size, fov_deg=22.0).K[0, 0, 0]
    uv, _ = _project(ict.landmark_points(ict(gt)), focal, size / 2, size / 2)
    calls = []
    original = ict.point_map
    ict.point_map = lambda *a: calls.append(a) or original(*a)
    try:
        result = fit_landmarks(ict, uv + torch.randn_like(uv), torch.ones(n, dtype=torch.bool), size, size,
                               LandmarkFitConfig(init_fov_deg=18.0))
    finally:
        del ict.point_map
    assert len(calls) == 2  # landmarks and their triangles' corners
    assert result.errors_px.mean() < 1.5, result.errors_px.mean()  # vs the noisy points: ~1.25 at best
    fitted, _ = _project(ict.landmark_points(ict(result.params)), result.cameras.K[0, 0, 0], size / 2, size / 2)
    clean_err = (fitted - uv).norm(dim=-1).mean()
    assert clean_err < 0.8, clean_err
    # A constant head pitch trades off against the 100 identity modes (the ToyHead test above has 4).
    rot_err = _angle_deg(result.params.rotation, gt.rotation)
    assert rot_err.mean() < 5.0, rot_err


def test_fit_runs_with_cpu_threads_and_restores_them():
    seen = []

    class Recording(ToyHead):
        def deform(self, params):
            seen.append(torch.get_num_threads())
            return super().deform(params)

    model = Recording()
    uv, _ = _project(model.landmark_points(model(model.zero_params(3))), torch.tensor(300.0), 64, 64)
    seen.clear()
    before = torch.get_num_threads()
    target = 2 if before == 1 else 1
    fit_landmarks(model, uv, torch.ones(3, dtype=torch.bool), 128, 128,
                  LandmarkFitConfig(rigid_steps=1, steps=1, cpu_threads=target))
    assert seen and set(seen) == {target}
    assert torch.get_num_threads() == before


def test_landmark_groups_match_mediapipe():
    fmc = pytest.importorskip("mediapipe.python.solutions.face_mesh_connections")

    def idx(edges) -> set[int]:
        return {i for e in edges for i in e}

    oval = idx(fmc.FACEMESH_FACE_OVAL)
    features = idx(fmc.FACEMESH_LEFT_EYE | fmc.FACEMESH_RIGHT_EYE | fmc.FACEMESH_NOSE | fmc.FACEMESH_LEFT_EYEBROW
                   | fmc.FACEMESH_RIGHT_EYEBROW)
    assert set(LANDMARK_GROUPS["oval"]) == oval
    assert set(LANDMARK_GROUPS["iris"]) == idx(fmc.FACEMESH_IRISES)
    assert set(LANDMARK_GROUPS["stable"]) == features - oval
