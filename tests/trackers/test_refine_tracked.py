"""benchmarks/refine_tracked.py: stage 6 run afterwards on a tracked sequence moves a perturbed fit back
towards the truth and records what it did, as ``gafkit track --photometric`` would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from gafkit.heads import HeadParams, load_head_model
from gafkit.synth import SynthConfig
from gafkit.synth.config import NovelViewConfig
from gafkit.synth.generate import run_synth
from gafkit.trackers.sequence import load_sequence

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "refine_tracked.py"


def test_refine_tracked_pulls_a_shifted_fit_back(tmp_path):
    subject = run_synth(SynthConfig(frames=8, size=64, novel=NovelViewConfig(every=8)), tmp_path / "s")
    seq = load_sequence(subject)
    model = load_head_model(seq.head_model)
    with torch.no_grad():
        uv, z = seq.cameras.project(model.landmark_points(model(seq.params)))
    np.savez(subject / "landmarks.npz", landmarks=torch.cat([uv, z[..., None]], -1).numpy(),
             valid=np.ones(len(seq), bool))
    truth = seq.params.translation.clone()
    shifted = seq.params.tensors()
    shifted["translation"] = truth + torch.tensor([0.006, -0.004, 0.0])  # metres: a few pixels off at 64 px
    np.savez(subject / "head_params.npz", head_model=np.array(seq.head_model),
             **{k: v.numpy() for k, v in shifted.items()})

    sets = ["photometric.steps=40", "photometric.appearance_steps=10", "photometric.render_size=64"]
    subprocess.run([sys.executable, str(SCRIPT), str(subject), "--device", "cpu",
                    *[a for s in sets for a in ("--set", s)]], check=True, capture_output=True)
    refined = HeadParams.load_npz(subject / "head_params.npz")
    before = (shifted["translation"] - truth)[:, :2].norm(dim=-1).mean()
    after = (refined.translation - truth)[:, :2].norm(dim=-1).mean()
    assert after < 0.6 * before
    section = json.loads((subject / "tracking.json").read_text())["photometric"]
    assert section["steps"] == 40 and section["photometric_l1_after"] < section["photometric_l1_before"]
    assert len(load_sequence(subject)) == 8  # the rewritten files still form a sequence
