"""`gafkit prior data synth` and the prior-data reader: shapes, ranges, splits, determinism, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from gafkit.cli import app
from gafkit.diffusion.dataset import PriorDataset, load_split
from gafkit.errors import GafkitError

runner = CliRunner()
S, V = 32, 2
ARGS = ["--size", str(S), "--views", str(V), "--subjects", "3", "--heldout", "1", "--examples-per-subject", "3",
        "--shard-size", "2"]


def _make(out, *extra):
    result = runner.invoke(app, ["--device", "cpu", "prior", "data", "synth", "-o", str(out), *ARGS, *extra])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return _make(tmp_path_factory.mktemp("prior") / "data", "--seed", "1")


def _shards(root):
    index = json.loads((root / "index.json").read_text())
    return index, [(s, load_file(str(root / s["file"]))) for s in index["shards"]]


def test_index_and_shards_have_the_fixed_format(data):
    index, shards = _shards(data)
    assert (index["format_version"], index["size"], index["views"]) == (1, S, V)
    assert [s["split"] for s in index["subjects"]] == ["train", "train", "heldout"]
    assert all(s["source"] == "synthetic" for s in index["subjects"])
    counts = {"train": 0, "heldout": 0}
    for entry, t in shards:
        n = entry["count"]
        counts[entry["split"]] += n
        assert t["reference"].shape == (n, 3, S, S) and t["reference_mask"].shape == (n, 1, S, S)
        assert t["images"].shape == (n, V, 3, S, S) and t["normals"].shape == (n, V, 3, S, S)
        assert t["masks"].shape == (n, V, 1, S, S) and t["subject"].dtype == torch.int64
        assert all(t[k].dtype == torch.uint8 for k in ("reference", "images", "normals", "masks"))
        # Held-out subjects never share a shard with training ones.
        assert {index["subjects"][i]["split"] for i in t["subject"].tolist()} == {entry["split"]}
    assert counts == {"train": 6, "heldout": 3}


def test_images_are_composited_over_white_and_normals_follow_the_fit_encoding(data):
    _, shards = _shards(data)
    t = shards[0][1]
    images, masks, normals = t["images"].int(), t["masks"].int(), t["normals"].int()
    empty = (masks == 0).expand_as(images)
    assert (images[empty] == 255).all() and (normals[empty] == 0).all()  # background: white / black
    assert masks.amax() == 255 and 0.05 < (masks > 0).float().mean() < 0.7  # head fills part of the frame
    soft = ((masks > 0) & (masks < 255)).sum()
    assert soft > 0  # supersampled edges
    # Covered normals are unit vectors encoded as (n * (1, -1, -1) + 1) / 2.
    full = (masks == 255)[:, :, 0]  # [N, V, S, S]
    decoded = normals.permute(0, 1, 3, 4, 2)[full].float() / 255 * 2 - 1  # [P, 3]
    assert (decoded.norm(dim=-1) - 1).abs().median() < 0.02
    # The reference is near frontal, so the head covers the image centre.
    ref = t["reference"][:, :, S // 2, S // 2].int()
    assert (ref < 250).all()  # head, not background, at the centre


def test_same_seed_same_bytes_other_seed_differs(data, tmp_path):
    again = _make(tmp_path / "again", "--seed", "1")
    other = _make(tmp_path / "other", "--seed", "2")
    for f in sorted((data / "shards").iterdir()):
        assert f.read_bytes() == (again / "shards" / f.name).read_bytes()
    a, b = load_file(str(data / "shards/00000.safetensors")), load_file(str(other / "shards/00000.safetensors"))
    assert not torch.equal(a["images"], b["images"])


def test_heldout_subjects_differ_from_training_ones(data):
    ds_train, ds_held = PriorDataset(data, "train"), PriorDataset(data, "heldout")
    held = ds_held[0]["reference"]
    for i in range(len(ds_train)):
        assert not torch.equal(ds_train[i]["reference"], held)


def test_reader_returns_floats_in_unit_range(data):
    ds = PriorDataset(data)
    assert len(ds) == 6
    x = ds[5]
    assert x["images"].shape == (V, 3, S, S) and x["reference_mask"].shape == (1, S, S)
    assert x["images"].dtype == torch.float32 and 0 <= x["images"].min() and x["images"].max() <= 1
    assert x["subject"] in (0, 1)
    raw = load_file(str(data / "shards/00002.safetensors"))
    assert torch.equal((x["normals"] * 255).round().byte(), raw["normals"][1])  # example 5 = shard 2, row 1
    assert torch.equal(ds[-1]["images"], x["images"])
    with pytest.raises(IndexError):
        ds[6]
    # Pickles without open handles (DataLoader workers).
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=0)
    assert next(iter(loader))["images"].shape == (3, V, 3, S, S)


def test_load_split_stacks_folders_and_numbers_subjects_across_them(data):
    out = load_split([data, data], "train", "cpu")
    assert out["images"].shape == (12, V, 3, S, S) and out["images"].dtype == torch.uint8
    assert sorted(set(out["subject"].tolist())) == [0, 1, 3, 4]  # second folder offset by its 3 subjects
    assert load_split([data], "heldout")["reference"].shape == (3, 3, S, S)


def test_reader_errors(data, tmp_path):
    with pytest.raises(GafkitError, match="not a 'prior-data' artifact|no manifest"):
        PriorDataset(tmp_path)
    only_train = tmp_path / "t"
    _make(only_train, "--heldout", "0", "--subjects", "1", "--examples-per-subject", "1")
    with pytest.raises(GafkitError, match="no 'heldout' examples"):
        PriorDataset(only_train, "heldout")


@pytest.mark.parametrize("args, problem", [
    (["--heldout", "5"], "--heldout 5"),
    (["--appearances", "missing.npz"], "missing.npz"),
    (["--photo-fraction", "0.3"], "--photo-fraction needs --appearances"),
    (["--size", "8"], "size >= 16"),
])
def test_bad_input_exits_2_and_leaves_nothing(tmp_path, monkeypatch, args, problem):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    result = runner.invoke(app, ["prior", "data", "synth", "-o", str(out), *ARGS, *args])
    assert result.exit_code == 2, result.output
    assert problem in result.output
    assert not out.exists() and not (tmp_path / "out.partial").exists()


def test_bad_appearances_file(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, colors=np.zeros((1, 5, 3)))
    result = runner.invoke(app, ["prior", "data", "synth", "-o", str(tmp_path / "o"), *ARGS, "--appearances", str(bad)])
    assert result.exit_code == 2 and "bad.npz: not an appearances file" in result.output
    assert not (tmp_path / "o").exists()


def test_feature_edges_copy_matches_mediapipe():
    pytest.importorskip("mediapipe")
    from gafkit.diffusion.data_synth import BROW_EDGES, LIP_EDGES
    from gafkit.synth.appearance import _feature_edges

    assert _feature_edges() == {"lips": LIP_EDGES, "brows": BROW_EDGES}
