from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from gafkit.artifact import read_manifest
from gafkit.cli import app
from gafkit.trackers.sequence import load_sequence
from paths import EXAMPLE_VIDEO

runner = CliRunner()


def test_track_example_clip(tmp_path):
    out = tmp_path / "tracked dir ü"  # spaces and non-ASCII in the output path
    result = runner.invoke(app, ["--device", "cpu", "track", str(EXAMPLE_VIDEO), "-o", str(out), "--size", "128",
                                 "--max-frames", "8", "--preset", "fast"])
    assert result.exit_code == 0, result.output
    manifest = read_manifest(out, "tracked")
    assert manifest.config["preprocess"]["crop"]["size"] == 128
    assert {"decode", "detect", "crop", "segment", "fit"} <= set(manifest.timings)
    seq = load_sequence(out)
    assert len(seq) == 8 and seq.head_model == "ict" and seq.cameras.width == 128
    metrics = json.loads((out / "tracking.json").read_text())
    assert metrics["summary"]["frames_failed"] == 0
    assert metrics["summary"]["landmark_error_mean_px"] < 2.0  # ~1 px at 128 with the fast preset
    assert 0 < metrics["summary"]["iris_error_mean_px"] < 1.5  # the gaze follows the eyes (0.4 px here)
    assert len(metrics["per_frame"]) == 8
    assert (out / "overlay.mp4").stat().st_size > 1000
    assert not (out / "frames").exists()
    params = np.load(out / "head_params.npz")
    assert np.ptp(params["shape"], axis=0).max() == 0  # one identity for the whole sequence
    assert (params["expr"] >= 0).all() and (params["expr"] <= 1).all()  # ICT blendshape weights


def test_track_bad_inputs_exit_2_without_output(tmp_path):
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("this is not a video")
    for source, message in ((not_video, "notes.mp4"), (tmp_path / "missing.mp4", "no such file")):
        out = tmp_path / "out"
        result = runner.invoke(app, ["track", str(source), "-o", str(out)])
        assert result.exit_code == 2, result.output
        assert message in result.output and len(result.output.strip().splitlines()) == 1
        assert not out.exists() and not (tmp_path / "out.partial").exists()
    result = runner.invoke(app, ["track", str(EXAMPLE_VIDEO), "-o", str(tmp_path / "o"), "--set", "fit.stepz=3"])
    assert result.exit_code == 2 and "unknown setting 'fit.stepz'" in result.output
