"""The fit on CUDA with gsplat: same avatar renders alike on both backends, and a short fit learns."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from gafkit.recon.avatar import render_avatar
from gafkit.recon.config import FitConfig
from gafkit.recon.evaluate import load_avatar
from gafkit.recon.metrics import psnr
from gafkit.recon.train import run_fit
from gafkit.synth import SynthConfig
from gafkit.synth.generate import run_synth

pytestmark = pytest.mark.gpu


def test_gsplat_fit_learns_and_matches_the_torch_renderer(tmp_path):
    # The GPU machine has no mediapipe (procedural synth appearance uses its landmark tables): a subject
    # made elsewhere with the same settings can be passed in.
    subject = Path(os.environ.get("GAFKIT_GPU_SUBJECT", tmp_path / "subject"))
    if not (subject / "manifest.json").is_file():
        cfg = SynthConfig(frames=24, size=128)
        cfg.novel.every = 12
        run_synth(cfg, subject)
    fit = FitConfig(iters=600, eval_every=600, preview=False, backend="gsplat")
    run_fit(fit, subject, tmp_path / "avatar", device="cuda")
    metrics = json.loads((tmp_path / "avatar" / "metrics.json").read_text())
    assert metrics["psnr"] > metrics["history"][0]["psnr"] + 5
    assert metrics["peak_vram_mb"] is not None and metrics["fps_render"] > 50
    bundle = load_avatar(tmp_path / "avatar", "cuda")
    i = bundle.splits["test"][0]
    with torch.no_grad():
        a = render_avatar(bundle.avatar, bundle.model, bundle.params[i], bundle.cameras[i], bg=bundle.background,
                          backend="gsplat").rgb
        b = render_avatar(bundle.avatar, bundle.model, bundle.params[i], bundle.cameras[i], bg=bundle.background,
                          backend="torch").rgb
    assert psnr(a, b) > 45
