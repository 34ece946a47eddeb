from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.spatial.transform import Rotation
from typer.testing import CliRunner

from gafkit.artifact import write_artifact
from gafkit.errors import ArtifactError, InputError
from gafkit.heads.base import HeadParams
from gafkit.render.camera import Cameras
from gafkit.trackers.sequence import contiguous_splits, load_sequence, write_sequence


def _params(n: int) -> HeadParams:
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return HeadParams(shape=r(1, 5).expand(n, 5).clone(), expr=r(n, 4), rotation=r(n, 3) * 0.1,
                      translation=r(n, 3), neck=r(n, 3), jaw=r(n, 3), eyes=r(n, 6))


def _write(root, head="flame", n=5, params=None, model=None):
    params = _params(n) if params is None else params
    cams = Cameras.look_at(torch.tensor([[0.0, 0.0, 1.0]]).expand(n, 3), torch.zeros(n, 3), fov_deg=20,
                           width=16, height=16)
    with write_artifact(root, "tracked", config={"head": head}) as art:
        for d in ("images", "fg_masks"):
            (art.dir / d).mkdir()
        for i in range(n):
            Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(art.dir / f"images/{i:05d}.png")
            Image.fromarray(np.zeros((16, 16), np.uint8)).save(art.dir / f"fg_masks/{i:05d}.png")
        write_sequence(art.dir, head_model=head, params=params, cameras=cams,
                       image_files=[f"images/{i:05d}.png" for i in range(n)],
                       mask_files=[f"fg_masks/{i:05d}.png" for i in range(n)],
                       frames=[{"index": 2 * i, "timestamp": 0.08 * i} for i in range(n)],
                       splits=contiguous_splits(n), model=model)
    return params, cams


def test_round_trip_with_vhap_files(tmp_path):
    params, cams = _write(tmp_path / "seq")
    seq = load_sequence(tmp_path / "seq")
    assert len(seq) == 5 and seq.head_model == "flame"
    for k, v in params.tensors().items():
        assert torch.allclose(seq.params.tensors()[k], v)
    assert torch.allclose(seq.cameras.w2c, cams.w2c, atol=1e-6) and torch.allclose(seq.cameras.K, cams.K)
    assert seq.splits == {"train": [0, 1, 2], "val": [3], "test": [4]}
    flame = np.load(tmp_path / "seq/flame_param/00002.npz")
    assert flame["expr"].shape == (1, 4) and flame["shape"].shape == (5,) and flame["eyes_pose"].shape == (1, 6)
    test = json.loads((tmp_path / "seq/transforms_test.json").read_text())
    assert [f["timestep_index_original"] for f in test["frames"]] == [8]
    assert seq.frames[4] == {"index": 8, "timestamp": pytest.approx(0.32)}
    canonical = np.load(tmp_path / "seq/canonical_params.npz")
    assert np.allclose(canonical["shape"], params.shape[:1].numpy()) and not canonical["expr"].any()


def test_inconsistent_sequences_are_refused(tmp_path):
    _write(tmp_path / "seq", head="ict")
    assert not (tmp_path / "seq/flame_param").exists()
    (tmp_path / "seq/fg_masks/00003.png").unlink()
    with pytest.raises(InputError, match="00003.png: missing"):
        load_sequence(tmp_path / "seq")
    with pytest.raises(ArtifactError, match="not a tracked artifact"):
        load_sequence(tmp_path)


def test_contiguous_splits_cover_all_frames():
    s = contiguous_splits(300)
    assert s["train"] + s["val"] + s["test"] == list(range(300))
    assert len(s["test"]) == 30 and s["test"][0] > s["val"][-1]


def vhap_vertices(arrays: dict[str, np.ndarray], flame_param: dict[str, np.ndarray], deformed: np.ndarray) -> np.ndarray:
    """VHAP's/GaussianAvatars' convention written out independently of gafkit (numpy, scipy rotations):
    ``R (v - J0) + J0 + t`` with ``J0`` the root joint regressed from the shaped mesh of the FLAME file's
    ``arrays`` and ``deformed`` [V, 3] the mesh before the head rotation (neck, jaw, eyes posed)."""
    shape, expr = flame_param["shape"].astype(np.float64), flame_param["expr"][0].astype(np.float64)
    dirs = arrays["shapedirs"]
    shaped = arrays["v_template"] + dirs[..., :len(shape)] @ shape + dirs[..., 300:300 + len(expr)] @ expr
    if "static_offset" in flame_param:
        shaped = shaped + flame_param["static_offset"][0]
    j0 = arrays["J_regressor"][0] @ shaped
    rot = Rotation.from_rotvec(flame_param["rotation"][0].astype(np.float64)).as_matrix()
    return (deformed - j0) @ rot.T + j0 + flame_param["translation"][0]


def test_flame_param_files_turn_about_the_shaped_root_joint(tmp_path):
    from heads.flame_fixture import write_flame_pickle

    from gafkit.heads.flame import FlameHead

    arrays = write_flame_pickle(tmp_path / "flame.pkl", n_expr=4)
    model = FlameHead.from_pickle(tmp_path / "flame.pkl", n_shape=5, n_expr=4)
    n = 5
    g = torch.Generator().manual_seed(3)
    params = dataclasses.replace(_params(n), rotation=torch.randn(n, 3, generator=g) * 0.4,
                                 offsets=(torch.randn(1, model.num_vertices, 3, generator=g) * 0.01).expand(n, -1, -1))
    _write(tmp_path / "seq", params=params, model=model)
    # head_params.npz stays in gafkit's convention, bit for bit.
    seq = load_sequence(tmp_path / "seq")
    assert torch.equal(seq.params.translation, params.translation)
    with torch.no_grad():
        posed, deformed = model(params).double().numpy(), model.deform(params).double().numpy()
    shifts = []
    for i in range(n):
        flame = dict(np.load(tmp_path / f"seq/flame_param/{i:05d}.npz"))
        assert np.abs(vhap_vertices(arrays, flame, deformed[i]) - posed[i]).max() < 1e-5
        shifts.append(np.abs(flame["translation"][0] - params.translation[i].numpy()).max())
    # The conversion is not a no-op here: written as gafkit's, the vertices would be off by millimetres.
    assert min(shifts) > 1e-3
    canonical = np.load(tmp_path / "seq/canonical_flame_param.npz")
    assert not canonical["translation"].any() and not canonical["rotation"].any()


def test_synth_flame_subject_writes_vhap_translations(tmp_path, monkeypatch):
    from heads.flame_fixture import write_flame_pickle

    from gafkit.cli import app
    from gafkit.heads import load_head_model

    monkeypatch.setenv("GAFKIT_CACHE", str(tmp_path / "cache"))
    arrays = write_flame_pickle(tmp_path / "flame.pkl", n_expr=20, seed=2)
    out = tmp_path / "subject"
    result = CliRunner().invoke(app, ["synth", "-o", str(out), "--frames", "3", "--size", "32", "--head", "flame",
                                      "--flame-model", str(tmp_path / "flame.pkl")])
    assert result.exit_code == 0, result.output
    seq = load_sequence(out)
    assert seq.params.rotation.abs().max() > 0.01  # the check below depends on a turned head
    model = load_head_model("flame", tmp_path / "flame.pkl")
    with torch.no_grad():
        posed, deformed = model(seq.params).double().numpy(), model.deform(seq.params).double().numpy()
    for i in range(len(seq)):
        flame = dict(np.load(out / f"flame_param/{i:05d}.npz"))
        assert np.abs(vhap_vertices(arrays, flame, deformed[i]) - posed[i]).max() < 1e-5
