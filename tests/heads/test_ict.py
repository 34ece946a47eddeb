"""The embedded ICT head: asset contents, forward pass, gradients, eyes, jaw, and the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from plyfile import PlyData
from typer.testing import CliRunner

from gafkit.cli import app
from gafkit.heads import ICT_ASSET, load_head_model
from gafkit.heads.ict import ICTHead

runner = CliRunner()


@pytest.fixture(scope="module")
def head() -> ICTHead:
    return load_head_model("ict")


def test_asset_contents(head):
    assert ICT_ASSET.stat().st_size < 15e6  # the whole repo travels to the GPU machine
    v, f = head.num_vertices, head.faces
    assert head.template.dtype == torch.float32 and head.template.shape == (v, 3)
    assert f.dtype == torch.long and f.min() >= 0 and f.max() < v
    assert (f[:, 0] != f[:, 1]).all() and (f[:, 1] != f[:, 2]).all() and (f[:, 0] != f[:, 2]).all()
    assert head.face_uvs.shape == f.shape and head.face_uvs.max() < head.uvs.shape[0]
    assert head.n_shape == 100 and head.n_expr == 53 and "jawOpen" in head.expression_names
    assert head.landmarks is not None and head.landmarks.faces.shape == (478,)
    assert torch.allclose(head.landmarks.bary.sum(1), torch.ones(478), atol=1e-5)
    # metres: a head is ~15-25 cm wide, eyes ~6 cm apart, subject's left eye at +X
    width = head.template[head.regions["face"], 0].aminmax()
    assert 0.12 < float(width.max - width.min) < 0.3
    left, right = head.eyeball_centers
    assert 0.05 < float(left[0] - right[0]) < 0.08 and left[2] > head.pivot[2]


def test_regions_disjoint_and_complete(head):
    parts = ["face", "scalp", "neck", "eye_sockets", "eyeball_left", "eyeball_right", "mouth", "teeth"]
    all_idx = torch.cat([head.regions[k] for k in parts])
    assert all_idx.unique().numel() == all_idx.numel() == head.num_vertices
    eyes = torch.cat([head.regions["eyeball_left"], head.regions["eyeball_right"]])
    assert torch.equal(head.regions["eyes"].sort().values, eyes.sort().values)
    # the neck lies below the scalp
    y = head.template[:, 1]
    assert y[head.regions["neck"]].mean() < y[head.regions["scalp"]].mean() - 0.05


def test_normals_point_outward(head):
    n = head.vertex_normals(head.template[None])[0]
    tip = head.template[head.regions["face"], 2].argmax()  # nose tip
    assert n[head.regions["face"][tip], 2] > 0.8
    for side in (0, 1):
        idx = head.regions[("eyeball_left", "eyeball_right")[side]]
        outward = ((head.template[idx] - head.eyeball_centers[side]) * n[idx]).sum(-1) > 0
        assert outward.float().mean() > 0.8


def test_forward_batched_and_gradients(head):
    params = head.zero_params(3)
    params.shape.normal_()
    params.expr.uniform_(0, 0.5)
    params.offsets = torch.zeros(3, head.num_vertices, 3)
    for t in params.tensors().values():
        t.requires_grad_(True)
    verts = head(params)
    assert verts.shape == (3, head.num_vertices, 3)
    # every frame differs only through its own parameters
    single = head(params[1])
    assert torch.allclose(single[0], verts[1], atol=1e-6)
    (verts * torch.randn_like(verts)).sum().backward()
    for name in ("shape", "expr", "rotation", "translation", "eyes", "offsets"):
        grad = getattr(params, name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_zero_params_give_template(head):
    with torch.no_grad():
        assert torch.allclose(head(head.zero_params(1))[0], head.template, atol=1e-7)


def test_eyes_rotate_only_eyeballs_rigidly(head):
    params = head.zero_params(1)
    params.eyes[0] = torch.tensor([0.0, 0.3, 0.0, 0.2, 0.0, 0.0])
    with torch.no_grad():
        verts = head(params)[0]
    moved = (verts - head.template).norm(dim=-1) > 1e-7
    eyes = torch.zeros_like(moved)
    eyes[head.regions["eyes"]] = True
    assert moved[eyes].float().mean() > 0.9 and not moved[~eyes].any()
    # rigid about the centre: distances to the centre are kept
    idx, c = head.regions["eyeball_left"], head.eyeball_centers[0]
    assert torch.allclose((verts[idx] - c).norm(dim=-1), (head.template[idx] - c).norm(dim=-1), atol=1e-6)
    # a positive yaw turns the pupil (the front-most point) toward +X
    front = head.template[idx, 2].argmax()
    assert verts[idx[front], 0] > head.template[idx[front], 0] + 0.002


def test_jaw_open_moves_chin_down(head):
    params = head.zero_params(1)
    params.expr[0, head.expression_names.index("jawOpen")] = 1.0
    with torch.no_grad():
        verts = head(params)[0]
    chin = head.landmarks68_vertices[8]
    assert verts[chin, 1] < head.template[chin, 1] - 0.01
    # the forehead stays put
    top = head.regions["face"][head.template[head.regions["face"], 1].argmax()]
    assert (verts[top] - head.template[top]).norm() < 1e-3


def test_cli_info():
    result = runner.invoke(app, ["head", "info"])
    assert result.exit_code == 0, result.output
    assert "24591" in result.output and "478 (mediapipe embedding)" in result.output


def test_cli_export_ply(tmp_path, head):
    out = tmp_path / "open.ply"
    result = runner.invoke(app, ["head", "export", "--expr", "jawOpen=1", "--shape", "0=2", "--rotation", "0,20,0",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    ply = PlyData.read(str(out))
    xyz = np.stack([ply["vertex"][k] for k in "xyz"], 1)
    assert xyz.shape == (head.num_vertices, 3) and len(ply["face"]) == head.faces.shape[0]
    params = head.zero_params(1)
    params.expr[0, head.expression_names.index("jawOpen")] = 1.0
    params.shape[0, 0] = 2.0
    params.rotation[0, 1] = np.radians(20)
    with torch.no_grad():
        np.testing.assert_allclose(xyz, head(params)[0].numpy(), atol=1e-6)


def test_cli_export_obj(tmp_path):
    out = tmp_path / "neutral.obj"
    assert runner.invoke(app, ["head", "export", "--out", str(out)]).exit_code == 0
    lines = out.read_text().splitlines()
    assert sum(ln.startswith("v ") for ln in lines) == 24591


@pytest.mark.parametrize("args, message", [
    (["--expr", "smile=1"], "valid: browDown_L"),
    (["--expr", "jawOpen"], "expected NAME=VALUE"),
    (["--shape", "100=1"], "identity index 0..99"),
    (["--rotation", "1,2"], "expected 3 comma-separated numbers"),
])
def test_cli_export_errors(tmp_path, args, message):
    result = runner.invoke(app, ["head", "export", *args, "--out", str(tmp_path / "x.ply")])
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "x.ply").exists()
