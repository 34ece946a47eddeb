"""preprocess(): stages 1-4 end to end, resuming, and the usable-frame ratio."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage.data import astronaut

from gafkit.errors import InputError
from gafkit.trackers.config import PreprocessConfig
from gafkit.trackers.preprocess import preprocess

EXAMPLE_VIDEO = Path(__file__).resolve().parents[2] / "examples" / "d20.mp4"



def small_config(**decode) -> PreprocessConfig:
    cfg = PreprocessConfig()
    cfg.crop.size = 128
    for key, value in decode.items():
        setattr(cfg.decode, key, value)
    return cfg


def test_preprocess_example_video(tmp_path):
    work = tmp_path / "work"
    cfg = small_config(fps=5, max_frames=6)
    result = preprocess(cfg, EXAMPLE_VIDEO, work)
    assert result.num_frames == result.num_valid == 6 and result.skipped == []

    frames = json.loads((work / "frames.json").read_text())
    assert [f["source_index"] for f in frames["frames"]] == [0, 5, 10, 15, 20, 25]
    assert [f["time"] for f in frames["frames"]] == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert {f["status"] for f in frames["frames"]} == {"ok"}
    lmk = np.load(work / "landmarks.npz")
    assert lmk["landmarks"].shape == (6, 478, 3) and lmk["valid"].all() and lmk["visible"].mean() > 0.9
    crop = json.loads((work / "crop.json").read_text())
    # The stored landmarks are the frame landmarks through the stored transform.
    expected = (lmk["landmarks_frame"][..., :2] - [crop["x0"], crop["y0"]]) * crop["scale"]
    assert np.allclose(lmk["landmarks"][..., :2], expected, atol=1e-3)
    image = np.asarray(Image.open(work / "images" / "00003.png"))
    mask = np.asarray(Image.open(work / "fg_masks" / "00003.png"))
    assert image.shape == (128, 128, 3) and mask.shape == (128, 128) and {0, 255} <= set(np.unique(mask))
    assert ((mask > 0) & (mask < 255)).mean() < 0.1  # an alpha matte: soft along the edge only
    x, y = lmk["landmarks"][3, :, :2].astype(int).T
    assert (mask[y.clip(0, 127), x.clip(0, 127)] > 127).mean() > 0.95

    again = preprocess(cfg, EXAMPLE_VIDEO, work)
    assert again.skipped == ["decode", "detect", "crop", "segment"]
    cfg.segment.threshold = 0.7  # only the last stage's section changed
    third = preprocess(cfg, EXAMPLE_VIDEO, work)
    assert third.skipped == ["decode", "detect", "crop"]


def test_too_few_faces_is_an_input_error(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(astronaut()).save(folder / "0.png")
    for i in range(1, 4):
        Image.fromarray(np.full((512, 512, 3), 90, np.uint8)).save(folder / f"{i}.png")
    with pytest.raises(InputError, match="no face in 3 of 4 frames"):
        preprocess(small_config(), folder, tmp_path / "work")
    cfg = small_config()
    cfg.min_valid_ratio = 0.25
    result = preprocess(cfg, folder, tmp_path / "work")
    frames = json.loads((tmp_path / "work" / "frames.json").read_text())["frames"]
    assert result.num_valid == 1 and [f["status"] for f in frames] == ["ok", "failed", "failed", "failed"]
    assert frames[1]["reason"] == "no face found"
