"""benchmarks/bench_gaze.py: tracked-vs-detected gaze on a synthetic subject whose "detections" are its
true landmark points, so a sequence holding the true parameters follows them exactly and one with the
eyes held straight does not."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from gafkit.heads import HeadParams, load_head_model
from gafkit.synth import SynthConfig
from gafkit.synth.config import MotionConfig, NovelViewConfig
from gafkit.synth.generate import run_synth
from gafkit.trackers.sequence import load_sequence

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_gaze.py"


def _run(*args: str) -> dict:
    out = subprocess.run([sys.executable, str(SCRIPT), *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def test_bench_gaze_scores_true_and_frozen_eyes(tmp_path):
    subject = run_synth(SynthConfig(frames=24, size=128, novel=NovelViewConfig(every=24),
                                    motion=MotionConfig(gaze_deg=25.0)), tmp_path / "s")
    seq = load_sequence(subject)
    model = load_head_model(seq.head_model)
    with torch.no_grad():
        uv, z = seq.cameras.project(model.landmark_points(model(seq.params)))
    n = uv.shape[0]
    np.savez(subject / "landmarks.npz", landmarks=torch.cat([uv, z[..., None]], -1).numpy(),
             valid=np.ones(n, bool))

    exact = _run(str(subject))["train"]
    assert exact["iris_error_px"] < 1e-3 and exact["face_error_px"] < 1e-3
    assert abs(exact["gaze_x"]["slope"] - 1) < 1e-3 and exact["gaze_x"]["corr"] > 0.999
    assert abs(exact["eye_openness"]["slope"] - 1) < 1e-3

    frozen = HeadParams(**{k: v.clone() for k, v in seq.params.tensors().items()})
    frozen.eyes.zero_()
    frozen.save_npz(tmp_path / "frozen.npz")
    stiff = _run(str(subject), "--params", str(tmp_path / "frozen.npz"))["train"]
    assert stiff["iris_error_px"] > 0.3 and abs(stiff["gaze_x"]["slope"]) < 0.3
    # The 468 face points sit off the eyeballs: turning the eyes moves none of them.
    assert stiff["face_error_px"] < 1e-3
