"""`gafkit prior data tracked`: examples from tiny synthetic tracked sequences."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from gafkit.cli import app

runner = CliRunner()
S, V = 32, 2


@pytest.fixture(scope="module")
def sequences(tmp_path_factory):
    root = tmp_path_factory.mktemp("tracked")
    paths = []
    for seed in (1, 2):
        out = root / f"seq{seed}"
        result = runner.invoke(app, ["synth", "-o", str(out), "--frames", "8", "--size", "64", "--seed", str(seed),
                                     "--set", "novel.every=100"])
        assert result.exit_code == 0, result.output
        paths.append(out)
    return paths


def _make(sequences, out, *extra):
    args = ["--device", "cpu", "prior", "data", "tracked", *map(str, sequences), "-o", str(out), "--size", str(S),
            "--views", str(V), "--examples-per-sequence", "2", *extra]
    return runner.invoke(app, args)


@pytest.fixture(scope="module")
def data(sequences, tmp_path_factory):
    out = tmp_path_factory.mktemp("tdata") / "data"
    result = _make(sequences, out, "--heldout", "1")
    assert result.exit_code == 0, result.output
    return out


def test_examples_shapes_splits_and_alignment(data):
    index = json.loads((data / "index.json").read_text())
    assert [(s["name"], s["source"], s["split"]) for s in index["subjects"]] == [
        ("seq1", "tracked", "train"), ("seq2", "tracked", "heldout")]
    assert [(s["count"], s["split"]) for s in index["shards"]] == [(2, "train"), (2, "heldout")]
    for shard in index["shards"]:
        t = load_file(str(data / shard["file"]))
        assert t["images"].shape == (2, V, 3, S, S) and t["reference"].shape == (2, 3, S, S)
        masks, normals, images = t["masks"][:, :, 0].int(), t["normals"].int(), t["images"].int()
        assert ((images == 255) | (masks[:, :, None] > 0)).all()  # background composited to white
        # The fg masks (from the frames) and the rendered normals' coverage (from the crop camera) agree.
        fg, mesh = masks > 127, normals.sum(2) > 0
        iou = (fg & mesh).sum() / (fg | mesh).sum()
        assert iou > 0.85, iou
        # Head centred: the mask's centroid is near the image centre horizontally.
        ys, xs = torch.nonzero(fg[0, 0], as_tuple=True)
        assert abs(xs.float().mean() - S / 2) < S * 0.1


def test_deterministic_with_seed(sequences, data, tmp_path):
    assert _make(sequences, tmp_path / "a", "--heldout", "1").exit_code == 0
    for f in sorted((data / "shards").iterdir()):
        assert f.read_bytes() == (tmp_path / "a" / "shards" / f.name).read_bytes()


def test_bad_inputs_exit_2_and_leave_nothing(sequences, tmp_path):
    out = tmp_path / "out"
    result = _make([tmp_path / "missing"], out)
    assert result.exit_code == 2 and "missing" in result.output and not out.exists()
    plain = tmp_path / "plain"
    plain.mkdir()
    result = _make([plain], out)
    assert result.exit_code == 2 and "not a tracked artifact" in result.output and not out.exists()
    broken = tmp_path / "broken"
    shutil.copytree(sequences[0], broken)
    for png in (broken / "images").glob("*.png"):
        png.write_bytes(b"not a png")
    result = _make([broken], out)
    assert result.exit_code == 2 and "not a readable image" in result.output, result.output
    assert not out.exists() and not (tmp_path / "out.partial").exists()


def test_normals_leave_out_what_the_masks_cut(sequences, tmp_path):
    """With the lower part of every mask cut below the chin (as the tracker cuts the neck), the normal
    maps leave out the triangles there by default, and keep them with ``foreground_faces=0``."""
    import numpy as np
    from PIL import Image

    cut = tmp_path / "cut"
    shutil.copytree(sequences[0], cut)
    for png in sorted((cut / "fg_masks").glob("*.png")):
        m = np.asarray(Image.open(png)).copy()
        m[int(m.shape[0] * 0.65):] = 0
        Image.fromarray(m).save(png)

    def outside(out, *extra):
        assert _make([cut], out, *extra).exit_code == 0
        t = load_file(str(out / "shards" / "00000.safetensors"))
        fg, mesh = t["masks"][:, :, 0] > 127, t["normals"].int().sum(2) > 0
        return float((mesh & ~fg).sum() / mesh.sum())

    carved, whole = outside(tmp_path / "a"), outside(tmp_path / "b", "--set", "foreground_faces=0")
    assert whole > 0.3 and carved < 0.05, (carved, whole)  # measured: 0.027 and 0.41
    bad = _make([cut], tmp_path / "c", "--set", "foreground_faces=1.5")
    assert bad.exit_code == 2 and "foreground_faces 1.5" in bad.output and not (tmp_path / "c").exists()


def test_pack_round_trip_for_the_gpu_machine(data, tmp_path):
    """scripts/prior_data_pack.py: a split packed as JPEG/PNG and unpacked loads like the original."""
    import importlib.util
    from pathlib import Path

    from gafkit.diffusion.dataset import load_split

    spec = importlib.util.spec_from_file_location(
        "prior_data_pack", Path(__file__).parents[2] / "scripts" / "prior_data_pack.py")
    pack = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pack)
    pack.pack(data, tmp_path / "h.tar", "heldout", None, True, 95)
    pack.unpack(tmp_path / "h.tar", tmp_path / "h")
    a, b = load_split([tmp_path / "h"], "heldout"), load_split([data], "heldout")
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}
    assert torch.equal(a["subject"], b["subject"])
    for key in ("reference", "images", "normals"):
        assert (a[key].float() - b[key].float()).abs().mean() < 8, key  # 32-px JPEG; 256 px: about 1
    assert ((a["masks"] > 127) == (b["masks"] > 127)).float().mean() > 0.99
    pack.pack(data, tmp_path / "t.tar", "train", None, False, 90)  # training reads no masks: all 255
    pack.unpack(tmp_path / "t.tar", tmp_path / "t")
    assert (load_split([tmp_path / "t"], "train")["masks"] == 255).all()
