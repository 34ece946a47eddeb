"""`gafkit synth`: complete subjects, consistent ground truth, photo projection, user errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from gafkit.artifact import read_manifest
from gafkit.cli import app
from gafkit.heads import HeadParams, load_head_model
from gafkit.render.camera import Cameras
from gafkit.render.mesh import rasterize_mesh, render_shaded
from gafkit.synth import MotionConfig, SynthConfig
from gafkit.synth.generate import make_subject
from gafkit.trackers.sequence import load_sequence

runner = CliRunner()
FRAMES, SIZE = 12, 128


def _png(path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img)


@pytest.fixture(scope="module")
def head():
    return load_head_model("ict")


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "subject"
    result = runner.invoke(app, ["synth", "-o", str(out), "--frames", str(FRAMES), "--size", str(SIZE), "--seed", "3"])
    assert result.exit_code == 0, result.output
    return out


def test_subject_is_a_complete_tracked_sequence(subject):
    manifest = read_manifest(subject, "tracked")
    assert manifest.extra["synthetic"] is True and manifest.extra["frames"] == FRAMES
    seq = load_sequence(subject)
    assert len(seq) == FRAMES and seq.cameras.width == SIZE
    assert torch.allclose(seq.cameras.w2c, seq.cameras.w2c[:1].expand_as(seq.cameras.w2c))  # one fixed camera
    for name in ("train", "val", "test"):
        assert (subject / f"transforms_{name}.json").is_file()
    gt = HeadParams.load_npz(subject / "gt" / "params.npz")
    assert torch.equal(gt.expr, seq.params.expr) and torch.equal(gt.shape, seq.params.shape)
    assert gt.shape.abs().sum() > 0  # a random identity, not the mean face
    assert len(list((subject / "gt" / "normals").glob("*.png"))) == FRAMES
    with np.load(subject / "gt" / "appearance.npz") as app_data:
        assert app_data["colors"].shape == (seq.params.offsets.shape[1] if seq.params.offsets is not None
                                            else load_head_model("ict").num_vertices, 3)
    novel = json.loads((subject / "gt" / "novel" / "cameras.json").read_text())
    held_out = sorted({e["frame"] for e in novel["frames"]})
    assert held_out == list(range(0, FRAMES, 5)) and len(novel["frames"]) == len(held_out) * 6
    for entry in novel["frames"]:
        for key in ("file_path", "mask_path", "normal_path"):
            assert (subject / "gt" / "novel" / entry[key]).is_file()
    assert Cameras.from_nerf_frames(novel["frames"]).width == SIZE


def test_masks_match_coverage_and_images(subject, head):
    seq = load_sequence(subject)
    for i in (0, FRAMES - 1):
        alpha = _png(seq.masks[i])
        mask = alpha > 127
        with torch.no_grad():
            cover = rasterize_mesh(head(seq.params[i]), head.faces, seq.cameras[i]).mask[0].numpy()
        iou = (mask & cover).sum() / (mask | cover).sum()
        assert mask.mean() > 0.05 and iou > 0.95, (i, iou)
        image = _png(seq.images[i]).astype(float)
        assert image[alpha == 0].min() == 255 and (alpha == 0).mean() > 0.3  # white background
        assert image[mask].mean() < 230  # the head is not background-coloured
        normals = _png(subject / "gt" / "normals" / f"{i:05d}.png")
        assert (normals[cover].sum(-1) > 0).mean() > 0.99 and normals[~cover].max() == 0


def test_novel_views_differ_from_training_view(subject):
    train_img = _png(subject / "images" / "00000.png").astype(float)
    train_mask = _png(subject / "fg_masks" / "00000.png") > 127
    novel = json.loads((subject / "gt" / "novel" / "cameras.json").read_text())
    for entry in (e for e in novel["frames"] if e["frame"] == 0):
        img = _png(subject / "gt" / "novel" / entry["file_path"]).astype(float)
        mask = _png(subject / "gt" / "novel" / entry["mask_path"]) > 127
        iou = (mask & train_mask).sum() / (mask | train_mask).sum()
        assert mask.mean() > 0.05 and np.abs(img - train_img).mean() > 5 and iou < 0.95, entry["name"]


def test_motion_is_seeded_smooth_and_in_range(head):
    cfg = SynthConfig(frames=40, size=32)
    a, b = make_subject(cfg, head), make_subject(cfg, head)
    c = make_subject(SynthConfig(frames=40, size=32, seed=1), head)
    assert torch.equal(a.params.rotation, b.params.rotation) and torch.equal(a.colors, b.colors)
    assert not torch.equal(a.params.rotation, c.params.rotation) and not torch.equal(a.params.shape, c.params.shape)
    yaw = a.params.rotation[:, 1].abs().max()
    assert math.radians(18) < yaw <= math.radians(MotionConfig().yaw_deg) + 1e-3
    assert (a.params.rotation.diff(dim=0).norm(dim=-1) < math.radians(10)).all()  # no jumps between frames
    jaw_open = a.params.expr[:, head.expression_names.index("jawOpen")]
    assert jaw_open.max() > 0.1 and (a.params.expr >= 0).all()


def test_photo_appearance_reproduces_the_photo(tmp_path, head):
    from skimage import data

    out = tmp_path / "photo_subject"
    result = runner.invoke(app, ["synth", "-o", str(out), "--frames", "2", "--size", "48", "--appearance", "photo"])
    assert result.exit_code == 0, result.output
    with np.load(out / "gt" / "appearance.npz") as a:
        colors, weight = torch.from_numpy(a["colors"]), a["photo_weight"]
        params = HeadParams(**{k: torch.from_numpy(a[f"photo_{k}"]) for k in
                               ("shape", "expr", "rotation", "translation", "neck", "jaw", "eyes")})
        width, height = (int(x) for x in a["photo_size"])
        cam = Cameras(K=torch.from_numpy(a["photo_K"])[None], w2c=torch.from_numpy(a["photo_w2c"])[None],
                      width=width, height=height)
    assert torch.equal(HeadParams.load_npz(out / "gt" / "params.npz").shape[:1], params.shape)
    with torch.no_grad():
        verts = head(params)
        albedo, _ = render_shaded(verts, head.faces, cam, colors=colors[None], ambient=1.0)
        raster = rasterize_mesh(verts, head.faces, cam)
    # Pixels on well-seen face triangles.
    seen = torch.from_numpy(weight > 0.9)
    good = seen[head.faces].all(1)
    face = torch.zeros(head.num_vertices, dtype=torch.bool)
    face[head.regions["face"]] = True
    good &= face[head.faces].all(1)
    inside = raster.mask[0] & good[raster.tri_id[0].clamp(min=0)]
    assert inside.sum() > 2000
    photo = torch.from_numpy(data.astronaut()).float() / 255
    render = albedo[0]
    corr = np.corrcoef(render[inside].mean(-1).numpy(), photo[inside].mean(-1).numpy())[0, 1]
    flipped = np.corrcoef(render[inside].mean(-1).numpy(), photo.flip(0)[inside].mean(-1).numpy())[0, 1]
    assert corr > 0.8 and flipped < 0.5, (corr, flipped)


@pytest.mark.parametrize("args, problem", [
    (["--appearance", "photo", "--photo", "{tmp}/nope.jpg"], "no such photo"),
    (["--head", "flame"], "FLAME model file"),
    (["--head", "flame", "--flame-model", "{tmp}/generic_model.pkl"], "generic_model.pkl"),
    (["--photo", "{tmp}/face.jpg"], "--appearance photo"),
    (["--frames", "0"], "frames >= 1"),
])
def test_bad_input_exits_2_with_one_line_and_no_output(tmp_path, monkeypatch, args, problem):
    monkeypatch.delenv("GAFKIT_FLAME_MODEL", raising=False)
    out = tmp_path / "subject"
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = runner.invoke(app, ["synth", "-o", str(out), "--size", "32", *args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and problem in lines[0], result.output
    assert not out.exists() and not (tmp_path / "subject.partial").exists()


def test_existing_subject_needs_overwrite(subject):
    result = runner.invoke(app, ["synth", "-o", str(subject), "--frames", "1", "--size", "32"])
    assert result.exit_code == 2 and "--overwrite" in result.output
    assert read_manifest(subject).extra["frames"] == FRAMES


def test_flame_subject(tmp_path, monkeypatch):
    from heads.flame_fixture import write_flame_pickle

    monkeypatch.setenv("GAFKIT_CACHE", str(tmp_path / "cache"))  # no cached landmark embedding
    model = tmp_path / "generic_model.pkl"
    write_flame_pickle(model, layout="2020", n_expr=20, seed=1)
    out = tmp_path / "flame_subject"
    result = runner.invoke(app, ["synth", "-o", str(out), "--frames", "3", "--size", "32", "--head", "flame",
                                 "--flame-model", str(model)])
    assert result.exit_code == 0, result.output
    seq = load_sequence(out)
    assert seq.head_model == "flame" and len(seq) == 3
    assert sorted(p.name for p in (out / "flame_param").iterdir()) == ["00000.npz", "00001.npz", "00002.npz"]
    assert seq.params.jaw[:, 0].max() > 0 and (_png(seq.masks[0]) > 127).mean() > 0.05
    assert read_manifest(out).inputs["flame_model"]["kind"] == "file"
