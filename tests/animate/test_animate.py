"""``gafkit animate``: self- and cross-reenactment videos, frames with alpha, cameras, edits, bad input."""

from __future__ import annotations

import dataclasses
import json
import shutil

import av
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from gafkit.cli import app
from gafkit.heads.base import HeadParams, axis_angle_to_matrix
from gafkit.recon import animate as animate_mod
from gafkit.recon.animate import AnimateConfig, plan_animation
from gafkit.recon.avatar import render_avatar
from gafkit.recon.evaluate import load_avatar
from gafkit.recon.metrics import psnr
from gafkit.recon.retarget import RetargetConfig, mean_rotation


def _cli(*args: str):
    return CliRunner().invoke(app, ["--device", "cpu", *args])


def decode(path) -> np.ndarray:
    """[F, H, W, 3] uint8 frames of a video."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])


def _f(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x.astype(np.float32) / 255)


def test_self_reenactment_video_shows_the_avatar_frame_by_frame(avatar, tmp_path):
    out = tmp_path / "self.mp4"
    result = _cli("animate", str(avatar), "-o", str(out), "--fps", "10", "--set", "crf=0")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["frames"] == 12 and summary["fps"] == 10 and summary["frames_per_second"] > 0
    video = decode(out)
    assert video.shape == (12, 64, 64, 3)
    with av.open(str(out)) as c:
        assert c.streams.video[0].average_rate == 10
    bundle = load_avatar(avatar)
    with torch.no_grad():
        direct = [render_avatar(bundle.avatar, bundle.model, bundle.params[i], bundle.cameras[i],
                                bg=bundle.background).rgb[0] for i in range(12)]
    for i in (0, 6, 11):
        assert psnr(_f(video[i]), direct[i]) > 30  # H.264 with 4:2:0 chroma on a 64 px image
    # The head moves over the clip: frames differ, and each matches its own render best.
    assert psnr(direct[0], direct[11]) < psnr(_f(video[11]), direct[11]) - 3
    assert not list(tmp_path.glob(".*partial*"))


def test_frames_dir_holds_png_frames_with_alpha(avatar, tmp_path):
    out, frames = tmp_path / "a.mp4", tmp_path / "frames"
    result = _cli("animate", str(avatar), "-o", str(out), "--frames-dir", str(frames), "--bg", "black",
                  "--size", "48", "--set", "frames=3")
    assert result.exit_code == 0, result.output
    files = sorted(frames.iterdir())
    assert [f.name for f in files] == ["00000.png", "00001.png", "00002.png"]
    bundle = load_avatar(avatar)
    cam = bundle.cameras[1].scaled(48 / 64)
    with torch.no_grad():
        ref = render_avatar(bundle.avatar, bundle.model, bundle.params[1], cam, bg=torch.zeros(3))
    with Image.open(files[1]) as im:
        assert im.mode == "RGBA" and im.size == (48, 48)
        rgba = np.asarray(im).astype(np.float32) / 255
    alpha = rgba[..., 3:]
    assert np.abs(alpha - ref.alpha[0].numpy()).max() <= 1 / 255
    assert alpha.min() == 0 and alpha.max() > 0.9  # background transparent, head opaque
    # Straight colour x alpha = the render over black (premultiplied), up to 8-bit rounding.
    assert np.abs(rgba[..., :3] * alpha - ref.rgb[0].numpy()).max() < 3 / 255


def test_cross_reenactment_keeps_identity_and_takes_the_drivers_motion(avatar, driver):
    bundle = load_avatar(avatar)
    plan = plan_animation(AnimateConfig(driver=driver), bundle)
    d = HeadParams.load_npz(driver / "head_params.npz")
    p = plan.params
    assert p.batch_size == 8 and len(plan.cameras) == 8
    assert torch.equal(p.shape, bundle.params.shape[:1].expand(8, -1))
    for name in ("expr", "jaw", "eyes", "neck"):
        assert torch.equal(getattr(p, name), getattr(d, name)), name
    assert not torch.equal(p.shape, d.shape)  # another person
    # Head motion relative to the clip's mean: between any two frames the avatar turns and moves as the
    # driver did (both synthetic clips are filmed by the same fixed camera).
    ra, rd = axis_angle_to_matrix(p.rotation), axis_angle_to_matrix(d.rotation)
    assert torch.allclose(ra[0].T @ ra[5], rd[0].T @ rd[5], atol=1e-5)
    assert torch.allclose(p.translation[5] - p.translation[0], d.translation[5] - d.translation[0], atol=1e-5)
    # ... around the avatar's own mean pose, not the driver's.
    assert torch.allclose(mean_rotation(ra), mean_rotation(axis_angle_to_matrix(bundle.params.rotation)), atol=1e-4)
    assert torch.allclose(p.translation.mean(0), bundle.params.translation.mean(0), atol=1e-5)
    assert torch.equal(plan.cameras.w2c, bundle.cameras.w2c[:1].expand(8, 4, 4))


def test_retarget_modes(avatar, driver):
    bundle = load_avatar(avatar)
    d = HeadParams.load_npz(driver / "head_params.npz")
    first = plan_animation(AnimateConfig(driver=driver, retarget=RetargetConfig(reference="first")), bundle).params
    assert torch.allclose(first.rotation[0], bundle.params.rotation[0], atol=1e-5)
    assert torch.allclose(first.translation[0], bundle.params.translation[0], atol=1e-5)
    absolute = plan_animation(AnimateConfig(driver=driver, retarget=RetargetConfig(head_pose="absolute")), bundle).params
    assert torch.equal(absolute.rotation, d.rotation) and torch.equal(absolute.translation, d.translation)
    fixed = plan_animation(AnimateConfig(driver=driver, retarget=RetargetConfig(head_pose="fixed")), bundle).params
    assert torch.allclose(fixed.rotation, fixed.rotation[:1].expand(8, 3)) and torch.equal(fixed.expr, d.expr)
    own = plan_animation(AnimateConfig(), bundle)
    assert torch.equal(own.params.rotation, bundle.params.rotation) and torch.equal(own.cameras.w2c, bundle.cameras.w2c)


def test_parameter_file_driver_and_looping(avatar, driver, tmp_path):
    params_file = tmp_path / "drive.npz"
    HeadParams.load_npz(driver / "head_params.npz").save_npz(params_file)
    out = tmp_path / "p.mp4"
    result = _cli("animate", str(avatar), "-o", str(out), "--driver", str(params_file), "--set", "frames=20")
    assert result.exit_code == 0, result.output
    assert decode(out).shape[0] == 20
    result = _cli("animate", str(avatar), "-o", str(tmp_path / "s.mp4"), "--driver", str(params_file), "--side-by-side")
    assert result.exit_code == 2 and "parameter file has no video frames" in result.output


def test_side_by_side_puts_the_driving_frame_left(avatar, driver, tmp_path):
    out = tmp_path / "sbs.mp4"
    result = _cli("animate", str(avatar), "-o", str(out), "--driver", str(driver), "--side-by-side", "--size", "96",
                  "--set", "crf=0")
    assert result.exit_code == 0, result.output
    video = decode(out)
    assert video.shape == (8, 96, 192, 3)
    with Image.open(driver / "images" / "00003.png") as im:
        left = np.asarray(im.convert("RGB").resize((96, 96), Image.BILINEAR))
    assert psnr(_f(video[3, :, :96]), _f(left)) > 30


def test_expression_edits_set_named_coefficients(avatar, tmp_path):
    bundle = load_avatar(avatar)
    plan = plan_animation(AnimateConfig(expr={"jawOpen": 0.9, "eyeBlink_L": 1.0}), bundle)
    names = bundle.model.expression_names
    assert (plan.params.expr[:, names.index("jawOpen")] == 0.9).all()
    assert (plan.params.expr[:, names.index("eyeBlink_L")] == 1.0).all()
    other = names.index("mouthSmile_L")
    assert torch.equal(plan.params.expr[:, other], bundle.params.expr[:, other])
    # The open jaw shows in the video.
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    assert _cli("animate", str(avatar), "-o", str(a), "--set", "frames=1").exit_code == 0
    assert _cli("animate", str(avatar), "-o", str(b), "--set", "frames=1", "--expr", "jawOpen=1").exit_code == 0
    assert np.abs(decode(a).astype(int) - decode(b).astype(int)).max() > 40


def test_orbit_and_background(avatar, tmp_path):
    out = tmp_path / "orbit.mp4"
    result = _cli("animate", str(avatar), "-o", str(out), "--camera", "orbit", "--bg", "green",
                  "--set", "orbit.yaw_deg=60", "--set", "frames=8", "--set", "retarget.head_pose=fixed")
    assert result.exit_code == 0, result.output
    video = decode(out).astype(int)
    assert np.abs(video[:, 0, 0] - [0, 255, 0]).max() < 12
    # The head stays still and the camera swings: frames 2 (+60 deg) and 6 (-60 deg) mirror-ish, differ.
    assert np.abs(video[2] - video[6]).mean() > 5 and np.abs(video[0] - video[4]).mean() < 3


def test_camera_path_file_drives_the_view(avatar, tmp_path):
    from gafkit.recon.camera_path import OrbitConfig, orbit_cameras

    bundle = load_avatar(avatar)
    cams = orbit_cameras(bundle.cameras[0], torch.tensor([0.0, 0.0, -1.2]), 4, OrbitConfig(yaw_deg=40))
    path = tmp_path / "path.json"
    path.write_text(json.dumps({"frames": cams.to_nerf_frames()}))
    plan = plan_animation(AnimateConfig(camera=str(path), frames=7, size=32), bundle)
    assert (plan.cameras.width, plan.cameras.height) == (32, 32)
    want = cams.w2c[torch.tensor([0, 1, 1, 2, 2, 3, 3])]  # floor(i * 3 / 6 + 1/2)
    assert torch.allclose(plan.cameras.w2c, want, atol=1e-5)
    assert _cli("animate", str(avatar), "-o", str(tmp_path / "p.mp4"), "--camera", str(path)).exit_code == 0


def _bad_camera(tmp_path, data) -> str:
    path = tmp_path / "cams.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


EYE = np.eye(4).tolist()
K = [[50.0, 0, 32], [0, 50, 32], [0, 0, 1]]


@pytest.mark.parametrize(("camera", "message"), [
    ({"frames": [{"transform_matrix": (np.eye(4) * [1, 2, 1, 1]).tolist(), "fl_x": 50, "w": 64, "h": 64}]},
     "not orthonormal"),
    ({"frames": [{"transform_matrix": np.diag([1.0, 1, -1, 1]).tolist(), "fl_x": 50, "w": 64, "h": 64}]}, "reflection"),
    ({"frames": [{"transform_matrix": [[1, 0, 0], [0, 1, 0]], "fl_x": 50, "w": 64, "h": 64}]}, "expected a 4x4 matrix"),
    ({"frames": [{"transform_matrix": EYE, "w": 64, "h": 64}]}, "has no 'fl_x'"),
    ({"width": 64, "height": 64, "frames": [{"w2c": EYE, "K": [[50.0, 0, 32], [0, -50, 32], [0, 0, 1]]}]},
     "focal lengths must be positive"),
    ({"width": 64, "height": 64, "frames": [{"w2c": EYE, "K": [[50.0, 3, 32], [0, 50, 32], [0, 0, 1]]}]}, "K must be"),
    ({"width": 64, "height": 64, "frames": [{"w2c": [[1, 0, 0, 0]] * 4, "K": K}]}, "not orthonormal"),
    ({"width": 64, "height": 64, "frames": [{"w2c": EYE[:3] + [[0, 0, 1, 1]], "K": K}]}, "last row"),
    ({"width": 64, "height": 64, "frames": [{"w2c": EYE}]}, "frame 0 K"),
    ({"frames": [{"w2c": EYE, "K": K}]}, "'width' and 'height'"),
    ({"frames": []}, "at least one camera"),
    ("{not json", "not a JSON camera path"),
    (None, "no such camera file"),
])
def test_bad_camera_files_exit_2_with_the_reason(avatar, tmp_path, camera, message):
    spec = str(tmp_path / "missing.json") if camera is None else _bad_camera(tmp_path, camera)
    out = tmp_path / "v.mp4"
    result = _cli("animate", str(avatar), "-o", str(out), "--camera", spec)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists() and not list(tmp_path.glob(".*partial*"))


def _save_params(path, params: HeadParams, **extra):
    np.savez(path, **{k: v.numpy() for k, v in params.tensors().items()}, **extra)
    return path


@pytest.mark.parametrize(("make", "message"), [
    (lambda d, p: _save_params(p, dataclasses.replace(d, expr=torch.zeros(8, 100))), "100 expression coefficients"),
    (lambda d, p: _save_params(p, d, head_model=np.array("flame")), "parameters of the flame head model"),
    (lambda d, p: _save_params(p, dataclasses.replace(d, rotation=torch.zeros(8, 4))), "rotation must be [8, 3]"),
    (lambda d, p: _save_params(p, dataclasses.replace(d, jaw=torch.full((8, 3), float("nan")))), "NaN"),
    (lambda d, p: (p.write_bytes(b"not a zip"), p)[1], "not a parameter file"),
    (lambda d, p: (np.savez(p, expr=d.expr.numpy()), p)[1], "missing shape"),
])
def test_bad_driver_parameters_exit_2(avatar, driver, tmp_path, make, message):
    params = make(HeadParams.load_npz(driver / "head_params.npz"), tmp_path / "bad.npz")
    out = tmp_path / "v.mp4"
    result = _cli("animate", str(avatar), "-o", str(out), "--driver", str(params))
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_driver_tracked_with_another_head_model_is_refused(avatar, driver, tmp_path):
    other = tmp_path / "flame_driver"
    shutil.copytree(driver, other)
    transforms = json.loads((other / "transforms.json").read_text())
    transforms["head_model"] = "flame"
    (other / "transforms.json").write_text(json.dumps(transforms))
    result = _cli("animate", str(avatar), "-o", str(tmp_path / "v.mp4"), "--driver", str(other))
    assert result.exit_code == 2 and "tracked with the flame head model; the avatar uses ict" in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["--expr", "jawOpn=0.5"], "valid names: browDown_L"),
    (["--expr", "jawOpen=1.5"], "outside the ict model's range 0..1"),
    (["--expr", "jawOpen"], "expected NAME=VALUE"),
    (["--bg", "purple"], "use white, black, green"),
    (["--size", "4"], "size must be 16..8192"),
    (["--set", "retarget.head_pose=sideways"], "is not one of"),
    (["--driver", "/nonexistent/driver"], "no such driver"),
])
def test_bad_options_exit_2_and_write_nothing(avatar, tmp_path, args, message):
    out = tmp_path / "v.mp4"
    result = _cli("animate", str(avatar), "-o", str(out), "--frames-dir", str(tmp_path / "f"), *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_unknown_expression_lists_jawopen(avatar, tmp_path):
    result = _cli("animate", str(avatar), "-o", str(tmp_path / "v.mp4"), "--expr", "smile=1")
    assert "jawOpen" in result.output and "mouthSmile_L" in result.output


def test_existing_output_and_a_crash_mid_render_leave_files_alone(avatar, tmp_path, monkeypatch):
    out = tmp_path / "v.mp4"
    out.write_bytes(b"old")
    result = _cli("animate", str(avatar), "-o", str(out))
    assert result.exit_code == 2 and "--overwrite" in result.output and out.read_bytes() == b"old"

    real = animate_mod.render_frames

    def dies_after_three(*args, **kwargs):
        for i, item in enumerate(real(*args, **kwargs)):
            if i == 3:
                raise RuntimeError("renderer crashed")
            yield item

    monkeypatch.setattr(animate_mod, "render_frames", dies_after_three)
    with pytest.raises(RuntimeError, match="renderer crashed"):
        animate_mod.run_animate(AnimateConfig(), avatar, out, frames_dir=tmp_path / "frames", device="cpu",
                                overwrite=True)
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]


def test_batched_binding_equals_the_avatars_own(avatar):
    from gafkit.recon.avatar import bind_batch

    bundle = load_avatar(avatar)
    with torch.no_grad():
        tri = bundle.avatar.frames(bundle.model(bundle.params[2:7]))
        means, quats, scales = bind_batch(bundle.avatar, tri)
        for b in range(5):
            g = bundle.avatar.gaussians(tri, batch_index=b)
            assert torch.allclose(means[b], g.means, atol=1e-7) and torch.allclose(quats[b], g.quats, atol=1e-7)
            assert torch.allclose(scales[b], g.scales, atol=1e-9)
