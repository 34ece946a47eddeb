"""``gafkit export``: 3DGS PLY, .splat and mesh files of a fitted avatar."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from plyfile import PlyData
from typer.testing import CliRunner

from gafkit.cli import app
from gafkit.recon.avatar import SH_C0, render_avatar
from gafkit.recon.evaluate import load_avatar
from gafkit.recon.export import (
    ExportConfig,
    export_params,
    gaussians_to_ply_bytes,
    posed_gaussians,
    read_gaussian_ply,
    read_splat,
    run_export,
)
from gafkit.recon.metrics import psnr
from gafkit.recon.render import Gaussians, render_gaussians
from gafkit.render.camera import Cameras


def _cli(*args: str):
    return CliRunner().invoke(app, ["--device", "cpu", *args])


def _leftovers(folder):
    return [p.name for p in folder.iterdir() if "partial" in p.name]


def test_ply_renders_like_the_avatar_at_that_frame(avatar, tmp_path):
    """The issue's measure: the exported PLY, read back with plyfile and rendered by our rasterizer,
    matches the avatar rendered directly (PSNR > 40 dB), at a source frame and from a side view."""
    out = tmp_path / "frame5.ply"
    result = _cli("export", str(avatar), "-o", str(out), "--frame", "5")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["gaussians"] == 300
    bundle = load_avatar(avatar)
    g = read_gaussian_ply(out)
    side = Cameras.look_at(torch.tensor([[0.5, 0.1, -0.9]]), g.means.mean(0, keepdim=True), fov_deg=25,
                           width=64, height=64)
    with torch.no_grad():
        for cam in (bundle.cameras[5], side):
            direct = render_avatar(bundle.avatar, bundle.model, bundle.params[5], cam, bg=bundle.background).rgb
            reread = render_gaussians(g, cam, bg=bundle.background).rgb
            assert (direct < 0.98).any(), "the view must see the head"
            assert psnr(reread, direct) > 40


def test_ply_layout_is_the_3dgs_one():
    """Property order and the channel-major f_rest order of the original 3DGS code, opacity as a
    logit, scales as logs, unit quaternions."""
    n, k = 2, 4
    sh = torch.arange(n * k * 3, dtype=torch.float32).reshape(n, k, 3) / 10
    g = Gaussians(means=torch.tensor([[0.1, 0.2, 0.3], [1.0, 2.0, 3.0]]), quats=torch.tensor([[2.0, 0, 0, 0], [0, 0, 0, 1.0]]),
                  scales=torch.tensor([[0.01, 0.02, 0.03], [1.0, 1.0, 1.0]]), opacities=torch.tensor([0.5, 0.9]), sh=sh)
    ply = PlyData.read(io.BytesIO(gaussians_to_ply_bytes(g)))
    v = ply["vertex"]
    assert ply.byte_order == "<" and not ply.text
    names = list(v.data.dtype.names)
    assert names == (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
                     + [f"f_rest_{i}" for i in range(9)] + ["opacity", "scale_0", "scale_1", "scale_2",
                                                             "rot_0", "rot_1", "rot_2", "rot_3"])
    assert all(v.data.dtype[name] == np.dtype("<f4") for name in names)
    # f_rest_{c * (K-1) + j} holds SH coefficient j+1 of colour channel c.
    for c in range(3):
        for j in range(k - 1):
            assert v[f"f_rest_{c * (k - 1) + j}"][1] == pytest.approx(float(sh[1, j + 1, c]))
    assert v["f_dc_2"][0] == pytest.approx(float(sh[0, 0, 2]))
    assert v["opacity"][0] == pytest.approx(0.0, abs=1e-6) and v["opacity"][1] == pytest.approx(np.log(9.0), rel=1e-5)
    assert v["scale_1"][0] == pytest.approx(np.log(0.02), rel=1e-6)
    assert [v[f"rot_{i}"][0] for i in range(4)] == [1.0, 0.0, 0.0, 0.0]
    assert [v[f"rot_{i}"][1] for i in range(4)] == [0.0, 0.0, 0.0, 1.0]
    back = read_gaussian_ply(io.BytesIO(gaussians_to_ply_bytes(g)))
    assert torch.allclose(back.sh, sh) and torch.allclose(back.scales, g.scales, rtol=1e-5)


def test_splat_round_trip_within_quantization(avatar, tmp_path):
    out = tmp_path / "head.splat"
    run_export(ExportConfig(frame=2), avatar, out)
    data = out.read_bytes()
    assert len(data) == 32 * 300
    bundle = load_avatar(avatar)
    g, _ = posed_gaussians(bundle.avatar, bundle.model, bundle.params[2])
    s = read_splat(out)
    # File order: decreasing volume x opacity, so match each record to its Gaussian by position.
    match = torch.cdist(s.means, g.means).argmin(dim=1)
    assert sorted(match.tolist()) == list(range(300))
    assert torch.allclose(s.means, g.means[match]) and torch.allclose(s.scales, g.scales[match])
    key = s.scales.prod(dim=1) * s.opacities
    assert (key[:-1] >= key[1:] - 2 / 255 * key.max()).all()
    rgb = (g.sh[match, 0] * SH_C0 + 0.5).clamp(0, 1)
    assert (s.colors - rgb).abs().max() <= 0.5 / 255 + 1e-6
    assert (s.opacities - g.opacities[match]).abs().max() <= 0.5 / 255 + 1e-6
    q = torch.nn.functional.normalize(g.quats[match], dim=-1)
    dot = (torch.nn.functional.normalize(s.quats, dim=-1) * q).sum(-1).abs()
    assert dot.min() > 0.999  # 8-bit components: about 1 degree


def test_mesh_export_matches_the_posed_model(avatar, tmp_path):
    bundle = load_avatar(avatar)
    with torch.no_grad():
        posed = bundle.model(bundle.params[4])[0].numpy()
        neutral = bundle.model(export_params(bundle, None))[0].numpy()
    obj, ply = tmp_path / "head.obj", tmp_path / "head.ply"
    assert _cli("export", str(avatar), "-o", str(obj), "--frame", "4").exit_code == 0
    assert _cli("export", str(avatar), "-o", str(ply), "--format", "mesh", "--neutral").exit_code == 0
    lines = obj.read_text().splitlines()
    verts = np.array([[float(x) for x in ln.split()[1:]] for ln in lines if ln.startswith("v ")])
    faces = np.array([[int(x) for x in ln.split()[1:]] for ln in lines if ln.startswith("f ")]) - 1
    assert verts.shape == posed.shape and np.abs(verts - posed).max() < 1e-6
    assert np.array_equal(faces, bundle.model.faces.numpy())
    mesh = PlyData.read(str(ply))
    pverts = np.stack([mesh["vertex"][c] for c in "xyz"], axis=1)
    assert pverts.shape == neutral.shape and np.abs(pverts - neutral).max() == 0
    assert np.array_equal(np.stack(mesh["face"]["vertex_indices"]), bundle.model.faces.numpy())
    # The neutral pose sits at the model origin, the source frame where the tracked camera saw it.
    assert abs(neutral[:, 2].mean()) < 0.2 and posed[:, 2].mean() < -0.8


@pytest.mark.parametrize(("args", "message"), [
    (["-o", "{tmp}/x.glb"], "cannot tell the format"),
    (["-o", "{tmp}/x.ply", "--format", "splat"], "needs the extension .splat"),
    (["-o", "{tmp}/x.ply", "--format", "gltf"], "is not one of"),
    (["-o", "{tmp}/x.ply", "--frame", "12"], "frames 0..11"),
    (["-o", "{tmp}/x.ply", "--frame", "1", "--neutral"], "exclude each other"),
    (["-o", "{tmp}/missing/x.ply"], "does not exist"),
])
def test_export_bad_requests_exit_2_and_leave_nothing(avatar, tmp_path, args, message):
    result = _cli("export", str(avatar), *[a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_to_replace_without_overwrite(avatar, tmp_path):
    out = tmp_path / "a.ply"
    out.write_bytes(b"keep me")
    result = _cli("export", str(avatar), "-o", str(out))
    assert result.exit_code == 2 and "--overwrite" in result.output
    assert out.read_bytes() == b"keep me"
    assert _cli("export", str(avatar), "-o", str(out), "--overwrite").exit_code == 0
    assert len(read_gaussian_ply(out)) == 300 and _leftovers(tmp_path) == []


def test_export_of_a_non_avatar_is_a_user_error(tmp_path):
    result = _cli("export", str(tmp_path), "-o", str(tmp_path / "x.ply"))
    assert result.exit_code == 2 and "no manifest.json" in result.output
