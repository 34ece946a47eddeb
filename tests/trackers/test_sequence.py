from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

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


def _write(root, head="flame", n=5):
    params = _params(n)
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
                       splits=contiguous_splits(n))
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
