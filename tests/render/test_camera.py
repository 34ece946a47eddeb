"""Camera conventions: OpenCV axes, pixel centres at j + 0.5, OpenGL/NeRF round trips."""

from __future__ import annotations

import math

import pytest
import torch

from gafkit.errors import GafkitError
from gafkit.render.camera import Cameras, rigid_inverse


def random_rigid(n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, 3, 3, generator=gen, dtype=torch.float64))
    q = q * torch.linalg.det(q).sign()[:, None, None]  # proper rotations only
    m = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
    m[:, :3, :3] = q
    m[:, :3, 3] = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    return m


def test_look_at_centres_target_and_orients_axes():
    eye = torch.tensor([[0.0, 0.0, 3.0], [2.0, 1.0, -1.0]])
    cams = Cameras.look_at(eye, torch.zeros(2, 3), fov_deg=40, width=80, height=60)
    uv, depth = cams.project(torch.zeros(2, 1, 3))
    assert torch.allclose(uv, torch.tensor([40.0, 30.0]).expand(2, 1, 2), atol=1e-4)
    assert torch.allclose(depth[:, 0], eye.norm(dim=-1))
    # World up appears above the target (smaller v); for camera 0 world +x appears to the right.
    uv_up, _ = cams.project(torch.tensor([0.0, 0.1, 0.0]).expand(2, 1, 3))
    assert (uv_up[:, 0, 1] < 30).all()
    uv_x, _ = cams[0].project(torch.tensor([[[0.1, 0.0, 0.0]]]))
    assert uv_x[0, 0, 0] > 40
    # Vertical field of view: a point at the top edge of the frustum projects to v = 0.
    top = torch.tensor([[[0.0, 3.0 * math.tan(math.radians(20)), 0.0]]])
    assert cams[0].project(top)[0][0, 0, 1].abs() < 1e-3
    assert torch.allclose(torch.linalg.det(cams.w2c[:, :3, :3]), torch.ones(2))


def test_project_matches_pinhole_formula():
    w2c = random_rigid(3).float()
    k = torch.tensor([[[500.0, 0.0, 250.0], [0.0, 480.0, 260.0], [0.0, 0.0, 1.0]]]).repeat(3, 1, 1)
    cams = Cameras(K=k, w2c=w2c, width=512, height=512)
    cam_pts = torch.tensor([[0.1, -0.2, 2.0], [0.0, 0.0, 1.0]]).expand(3, 2, 3)
    world = (cam_pts - w2c[:, None, :3, 3]) @ w2c[:, :3, :3]  # inverse of x_c = R x_w + t
    uv, depth = cams.project(world)
    expected_u = 500.0 * cam_pts[..., 0] / cam_pts[..., 2] + 250.0
    expected_v = 480.0 * cam_pts[..., 1] / cam_pts[..., 2] + 260.0
    assert torch.allclose(uv, torch.stack([expected_u, expected_v], -1), atol=1e-3)
    assert torch.allclose(depth, cam_pts[..., 2], atol=1e-5)


def test_opengl_round_trip_and_axes():
    c2w_gl = random_rigid(4, seed=1).float()
    k = torch.eye(3).repeat(4, 1, 1)
    cams = Cameras.from_opengl_c2w(c2w_gl, k, 10, 10)
    assert torch.allclose(cams.to_opengl_c2w(), c2w_gl, atol=1e-5)
    assert torch.allclose(cams.w2c @ cams.c2w, torch.eye(4).expand(4, 4, 4), atol=1e-5)
    assert torch.allclose(rigid_inverse(cams.w2c), torch.linalg.inv(cams.w2c), atol=1e-5)
    # An OpenGL camera at the origin looks down -z with +y up.
    ident = Cameras.from_opengl_c2w(
        torch.eye(4)[None], torch.tensor([[[10.0, 0, 5], [0, 10, 5], [0, 0, 1]]]), 10, 10
    )
    uv, depth = ident.project(torch.tensor([[[0.0, 0.0, -2.0], [0.0, 1.0, -2.0], [1.0, 0.0, -2.0]]]))
    assert depth[0].tolist() == [2.0, 2.0, 2.0]
    assert uv[0, 0].tolist() == [5.0, 5.0]
    assert uv[0, 1, 1] < 5.0 and uv[0, 2, 0] > 5.0


def test_nerf_frames_round_trip():
    w2c = random_rigid(2, seed=2).float()
    k = torch.tensor(
        [[[300.0, 0, 64.5], [0, 310.0, 60.0], [0, 0, 1]], [[200.0, 0, 64.0], [0, 200.0, 48.0], [0, 0, 1]]]
    )
    cams = Cameras(K=k, w2c=w2c, width=128, height=96)
    frames = cams.to_nerf_frames()
    assert set(frames[0]) == {"fl_x", "fl_y", "cx", "cy", "w", "h", "transform_matrix"}
    back = Cameras.from_nerf_frames(frames)
    assert (back.width, back.height) == (128, 96)
    assert torch.allclose(back.K, k) and torch.allclose(back.w2c, w2c, atol=1e-5)
    assert torch.allclose(
        torch.tensor(frames[1]["transform_matrix"]).float(), cams.to_opengl_c2w()[1], atol=1e-6
    )


def test_nerf_frames_top_level_defaults_and_errors():
    top = {"camera_angle_x": 2 * math.atan(0.5), "w": 100, "h": 50}
    cams = Cameras.from_nerf_frames([{"transform_matrix": torch.eye(4).tolist()}], top)
    assert torch.allclose(cams.K[0], torch.tensor([[100.0, 0, 50], [0, 100.0, 25], [0, 0, 1]]))
    with pytest.raises(GafkitError, match="frame 0 has no 'transform_matrix'"):
        Cameras.from_nerf_frames([{}], top)
    with pytest.raises(GafkitError, match="different image sizes"):
        Cameras.from_nerf_frames(
            [
                {"transform_matrix": torch.eye(4).tolist()},
                {"transform_matrix": torch.eye(4).tolist(), "w": 64},
            ],
            top,
        )
    with pytest.raises(GafkitError, match="fl_x"):
        Cameras.from_nerf_frames([{"transform_matrix": torch.eye(4).tolist(), "w": 4, "h": 4}])


def test_indexing_scaling_and_validation():
    cams = Cameras.look_at(torch.randn(5, 3) + 4.0, torch.zeros(5, 3), focal=50.0, width=40, height=30)
    assert len(cams) == 5 and len(cams[2]) == 1 and len(cams[1:4]) == 3 and len(cams[-1]) == 1
    assert torch.equal(cams[-1].w2c, cams.w2c[4:])
    assert cams.to("cpu").K.device.type == "cpu"
    pts = torch.randn(5, 7, 3) * 0.3
    uv, _ = cams.project(pts)
    uv2, _ = cams.scaled(2).project(pts)
    assert cams.scaled(2).width == 80 and torch.allclose(uv2, uv * 2, atol=1e-4)
    assert torch.allclose(cams.centers, cams.c2w[:, :3, 3])
    with pytest.raises(GafkitError):
        Cameras(K=torch.eye(3), w2c=torch.eye(4)[None], width=4, height=4)
    with pytest.raises(GafkitError, match="exactly one"):
        Cameras.look_at(torch.ones(1, 3), torch.zeros(1, 3), width=4, height=4)
    with pytest.raises(GafkitError, match="parallel"):
        Cameras.look_at(torch.tensor([[0.0, 2.0, 0.0]]), torch.zeros(1, 3), focal=1.0, width=4, height=4)
