"""`gafkit prior appearances` on a real clip, then `prior data synth --appearances` using it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from gafkit.cli import app
from paths import REAL_DATA

runner = CliRunner()


def test_photo_appearances_feed_synth_subjects(tmp_path):
    pytest.importorskip("mediapipe")
    clip = REAL_DATA / "d20.mp4"
    if not clip.is_file():
        pytest.skip("real clips not available")
    faces = tmp_path / "faces.npz"
    result = runner.invoke(app, ["prior", "appearances", str(clip), "-o", str(faces), "--frames-per-video", "1"])
    assert result.exit_code == 0, result.output
    with np.load(faces) as data:
        assert data["colors"].shape == (1, 24591, 3) and str(data["names"][0]).startswith(f"{clip}#")
        assert 0 <= data["colors"].min() and data["colors"].max() <= 1
    out = tmp_path / "data"
    result = runner.invoke(app, ["--device", "cpu", "prior", "data", "synth", "-o", str(out), "--size", "32", "--views",
                                 "1", "--subjects", "1", "--heldout", "0", "--examples-per-subject", "1",
                                 "--appearances", str(faces), "--photo-fraction", "1"])
    assert result.exit_code == 0, result.output
    subject = json.loads((out / "index.json").read_text())["subjects"][0]
    assert subject["appearance"].startswith(f"photo:{clip}#")
    missing = runner.invoke(app, ["prior", "appearances", str(tmp_path / "none.mp4"), "-o", str(tmp_path / "x.npz")])
    assert missing.exit_code == 2 and "none.mp4: no such file" in missing.output
    assert not (tmp_path / "x.npz").exists()
