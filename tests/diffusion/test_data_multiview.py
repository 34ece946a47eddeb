"""`gafkit prior data multiview`: a tiny capture in the documented layout, rendered by the synth renderer."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from gafkit.cli import app
from gafkit.diffusion.data_synth import orbit_eyes, render_batch
from gafkit.heads import load_head_model
from gafkit.render.camera import Cameras

runner = CliRunner()
S, V, W = 32, 2, 64
YAWS = (0.0, -50.0, 50.0, 120.0)


def _capture(root, name, seed):
    head = load_head_model("ict")
    subject = root / name
    eyes = torch.tensor(orbit_eyes(np.array(YAWS), np.zeros(len(YAWS)), 1.2), dtype=torch.float32)
    cams = Cameras.look_at(eyes, torch.zeros_like(eyes), fov_deg=20, width=W, height=W)
    cal = {"cameras": {f"cam{k}": {"K": cams.K[k].tolist(), "w2c": cams.w2c[k].tolist(), "width": W, "height": W}
                       for k in range(len(YAWS))}}
    subject.mkdir(parents=True)
    (subject / "calibration.json").write_text(json.dumps(cal))
    rng = np.random.default_rng(seed)
    for t in range(2):
        params = head.zero_params(1)
        params.shape = torch.tensor(rng.normal(0, 0.5, (1, head.n_shape)), dtype=torch.float32)
        with torch.no_grad():
            verts = head(params)[0]
            params.translation = -(verts.amin(0) + verts.amax(0))[None] / 2
            verts = head(params)
            c = len(YAWS)
            image, alpha, _ = render_batch(head, dataclasses.replace(params, **{k: v.expand(c, *v.shape[1:])
                                                                               for k, v in params.tensors().items()}),
                                           torch.full((c, head.num_vertices, 3), 0.6), cams,
                                           torch.tensor([[0.0, 0.4, 1.0]]).expand(c, 3), torch.full((c,), 0.4), 1)
        step = subject / f"{t:03d}"
        (step / "images").mkdir(parents=True)
        (step / "masks").mkdir()
        for k in range(c):
            Image.fromarray((image[k].permute(1, 2, 0) * 255).round().byte().numpy()).save(step / "images" / f"cam{k}.png")
            Image.fromarray((alpha[k, 0] * 255).round().byte().numpy()).save(step / "masks" / f"cam{k}.png")
        lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in verts[0].tolist()]
        lines += [f"f {a + 1} {b + 1} {d + 1}" for a, b, d in head.faces.tolist()]
        (step / "mesh.obj").write_text("\n".join(lines))


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    root = tmp_path_factory.mktemp("mv") / "captures"
    _capture(root, "alice", 0)
    _capture(root, "bob", 1)
    return root


def _make(root, out, *extra):
    return runner.invoke(app, ["--device", "cpu", "prior", "data", "multiview", str(root), "-o", str(out),
                               "--size", str(S), "--views", str(V), *extra])


def test_examples_from_captures(capture, tmp_path):
    out = tmp_path / "data"
    result = _make(capture, out, "--heldout", "1", "--examples-per-timestep", "2")
    assert result.exit_code == 0, result.output
    index = json.loads((out / "index.json").read_text())
    assert [(s["name"], s["source"], s["split"]) for s in index["subjects"]] == [
        ("alice", "multiview", "train"), ("bob", "multiview", "heldout")]
    assert sorted((s["count"], s["split"]) for s in index["shards"]) == [(4, "heldout"), (4, "train")]
    t = load_file(str(out / index["shards"][0]["file"]))
    assert t["images"].shape == (4, V, 3, S, S) and t["reference_mask"].shape == (4, 1, S, S)
    fg, mesh = t["masks"][:, :, 0] > 127, t["normals"].int().sum(2) > 0
    assert (fg & mesh).sum() / (fg | mesh).sum() > 0.9  # the mesh's normal maps line up with the photos
    # The reference is cam0 (the central camera of the rig), never also drawn as a target.
    assert all(not torch.equal(t["reference"][i], t["images"][i, v]) for i in range(4) for v in range(V))
    again = tmp_path / "again"
    assert _make(capture, again, "--heldout", "1", "--examples-per-timestep", "2").exit_code == 0
    for f in sorted((out / "shards").iterdir()):
        assert f.read_bytes() == (again / "shards" / f.name).read_bytes()


def test_bad_layouts_exit_2_and_leave_nothing(capture, tmp_path):
    import shutil

    out = tmp_path / "out"
    assert _make(tmp_path / "nope", out).exit_code == 2 and not out.exists()
    wrong = tmp_path / "wrong"
    (wrong / "someone" / "000" / "images").mkdir(parents=True)
    result = _make(wrong, out)
    assert result.exit_code == 2 and "calibration.json: missing" in result.output and not out.exists()
    corrupt = tmp_path / "corrupt"
    shutil.copytree(capture, corrupt)
    (corrupt / "bob" / "001" / "images" / "cam0.png").write_bytes(b"garbage")
    result = _make(corrupt, out)
    assert result.exit_code == 2 and "cam0.png: not a readable image" in result.output, result.output
    assert not out.exists() and not (tmp_path / "out.partial").exists()
