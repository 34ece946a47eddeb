"""Orbit cameras, camera-path files and the rotation helpers of retargeting (no avatar needed)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from gafkit.errors import InputError
from gafkit.heads.base import axis_angle_to_matrix
from gafkit.recon.animate import parse_color
from gafkit.recon.camera_path import OrbitConfig, load_camera_path, orbit_cameras, spread
from gafkit.recon.retarget import matrix_to_axis_angle, mean_rotation
from gafkit.render.camera import Cameras

CENTER = torch.tensor([0.02, 0.05, -1.2])


def _base() -> Cameras:
    # Like a tracked sequence's camera: at the origin, looking down -Z, world +Y up; the head off-axis.
    return Cameras.look_at(torch.zeros(1, 3), torch.tensor([[0.0, 0.0, -1.0]]), fov_deg=20, width=64, height=48)


def test_orbit_swings_around_the_head_at_a_constant_distance():
    base = _base()
    cams = orbit_cameras(base, CENTER, 8, OrbitConfig(yaw_deg=40, cycles=1, distance_scale=1.5))
    dist = (cams.centers - CENTER).norm(dim=1)
    assert torch.allclose(dist, torch.full_like(dist, 1.5 * (base.centers[0] - CENTER).norm()), atol=1e-5)
    # Every camera looks at the head: its centre projects to the image centre.
    uv, depth = cams.project(CENTER.expand(8, 1, 3))
    assert torch.allclose(uv[:, 0], torch.tensor([32.0, 24.0]).expand(8, 2), atol=1e-3) and (depth > 0).all()
    assert torch.equal(cams.K, base.K.expand(8, 3, 3))
    # Yaw 40 * sin(2 pi i / 8): frame 0 is the source direction, frame 2 the largest swing one way,
    # frame 6 the other way (positive = camera to the subject's left, +x here).
    offset = cams.centers - CENTER
    yaw = torch.rad2deg(torch.atan2(offset[:, 0], offset[:, 2]))  # about +Y
    source = math.degrees(math.atan2(-CENTER[0], -CENTER[2]))  # where the source camera sits
    yaw = yaw - source
    assert yaw[0] == pytest.approx(0, abs=1e-3) and yaw[2] == pytest.approx(40, abs=1e-3)
    assert yaw[6] == pytest.approx(-40, abs=1e-3) and yaw[1] == pytest.approx(40 * math.sin(math.pi / 4), abs=1e-3)
    assert cams.centers[2, 0] > CENTER[0] > cams.centers[6, 0]
    # Yaw turns about the camera's up axis (world +Y here): heights stay level without pitch.
    height = CENTER[1] + 1.5 * (base.centers[0, 1] - CENTER[1])
    assert torch.allclose(cams.centers[:, 1], height.expand(8), atol=1e-5)


def test_orbit_pitch_raises_the_camera():
    cams = orbit_cameras(_base(), CENTER, 4, OrbitConfig(yaw_deg=0, pitch_deg=20))
    offset = cams.centers[0] - CENTER
    elevation = math.degrees(math.asin(float(offset[1] / offset.norm())))
    base_offset = _base().centers[0] - CENTER
    base_elevation = math.degrees(math.asin(float(base_offset[1] / base_offset.norm())))
    assert elevation - base_elevation == pytest.approx(20, abs=1e-3)


def test_spread_maps_a_path_onto_the_video():
    path = orbit_cameras(_base(), CENTER, 3, OrbitConfig())
    assert torch.equal(spread(path, 5).w2c, path.w2c[torch.tensor([0, 1, 1, 2, 2])])
    assert torch.equal(spread(path, 1).w2c, path.w2c[:1])
    assert torch.equal(spread(path[1], 4).w2c, path.w2c[1:2].expand(4, 4, 4))


def test_camera_files_in_both_styles_round_trip(tmp_path):
    cams = orbit_cameras(_base(), CENTER, 5, OrbitConfig(yaw_deg=25, pitch_deg=-10))
    nerf = tmp_path / "nerf.json"
    nerf.write_text(json.dumps({"frames": cams.to_nerf_frames()}))
    loaded = load_camera_path(nerf)
    assert torch.allclose(loaded.w2c, cams.w2c, atol=1e-5) and torch.allclose(loaded.K, cams.K)
    assert (loaded.width, loaded.height) == (64, 48)
    cv = tmp_path / "cv.json"
    frames = [{"w2c": w[:3].tolist()} for w in cams.w2c]  # 3x4 rows are accepted too
    cv.write_text(json.dumps({"width": 64, "height": 48, "K": cams.K[0].tolist(), "frames": frames}))
    loaded = load_camera_path(cv)
    assert torch.allclose(loaded.w2c, cams.w2c, atol=1e-6) and torch.allclose(loaded.K, cams.K)


def test_camera_file_errors_name_the_file_and_frame(tmp_path):
    bad = tmp_path / "bad.json"
    good = torch.eye(4).tolist()
    skewed = torch.eye(4)
    skewed[0, 1] = 0.1
    bad.write_text(json.dumps({"width": 8, "height": 8, "K": [[5, 0, 4], [0, 5, 4], [0, 0, 1]],
                               "frames": [{"w2c": good}, {"w2c": skewed.tolist()}]}))
    with pytest.raises(InputError, match="frame 1 w2c: the rotation part is not orthonormal") as err:
        load_camera_path(bad)
    assert err.value.path == bad


def test_matrix_to_axis_angle_inverts_rodrigues_at_all_angles():
    gen = torch.Generator().manual_seed(0)
    axis = torch.nn.functional.normalize(torch.randn(200, 3, generator=gen), dim=1)
    angle = torch.cat([torch.tensor([0.0, 1e-7, 1e-3, math.pi - 1e-3]), torch.rand(196, generator=gen) * 3.1])
    aa = axis * angle[:, None]
    back = matrix_to_axis_angle(axis_angle_to_matrix(aa))
    assert torch.allclose(axis_angle_to_matrix(back), axis_angle_to_matrix(aa), atol=1e-5)
    assert torch.allclose(back[4:], aa[4:], atol=1e-4)


def test_mean_rotation_of_symmetric_turns_is_the_middle():
    mid = axis_angle_to_matrix(torch.tensor([0.1, 0.3, -0.2]))
    turns = axis_angle_to_matrix(torch.tensor([[0.0, 0.4, 0.0], [0.0, -0.4, 0.0], [0.2, 0, 0], [-0.2, 0, 0]]))
    mean = mean_rotation(mid @ turns)
    assert torch.allclose(mean, mid, atol=1e-6) and torch.det(mean) == pytest.approx(1.0)


def test_parse_color_forms():
    assert parse_color("WHITE") == (1.0, 1.0, 1.0) and parse_color("green") == (0.0, 1.0, 0.0)
    assert parse_color("#000080") == (0.0, 0.0, 128 / 255) and parse_color("255,0,0") == (1.0, 0.0, 0.0)
    for bad in ("#12345", "256,0,0", "1,2", "teal"):
        with pytest.raises(Exception, match="--bg"):
            parse_color(bad)
