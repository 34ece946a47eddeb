"""The fit on CUDA with gsplat: same avatar renders alike on both backends, and a short fit learns."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from fit_setup import make_trainer

from gafkit.recon.avatar import render_avatar
from gafkit.recon.config import FitConfig
from gafkit.recon.evaluate import load_avatar
from gafkit.recon.metrics import psnr
from gafkit.recon.train import run_fit
from gafkit.synth import SynthConfig
from gafkit.synth.generate import run_synth

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def subject(tmp_path_factory) -> Path:
    # The GPU machine has no mediapipe (procedural synth appearance uses its landmark tables): a subject
    # made elsewhere with the same settings can be passed in.
    subject = Path(os.environ.get("GAFKIT_GPU_SUBJECT", tmp_path_factory.mktemp("gpu") / "subject"))
    if not (subject / "manifest.json").is_file():
        cfg = SynthConfig(frames=24, size=128)
        cfg.novel.every = 12
        run_synth(cfg, subject)
    return subject


def test_gsplat_fit_learns_and_matches_the_torch_renderer(subject, tmp_path):
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


def test_outside_opacity_on_gsplat_matches_the_torch_renderer(subject):
    # loss.outside renders opacity at random orbit views; on the GPU that goes through gsplat, whose alpha
    # must agree with the reference renderer's and push a floater's opacity down as on the CPU.
    cfg = FitConfig(iters=10, preview=False, backend="gsplat")
    cfg.loss.outside, cfg.loss.outside_size = 1.0, 64
    trainer = make_trainer(subject, cfg, "cuda")
    a = trainer.avatar
    with torch.no_grad():
        a.xyz[0] = torch.tensor([0.0, 0.0, 8.0], device="cuda")  # a floater 8 triangle sizes off its triangle
        a.opacity_logit[0] = 2.0
        # 3 triangle sizes wide: at the initial 0.5 it covers less than a pixel of these 64-px views.
        a.log_scale[0] = math.log(3.0)
    losses, grads = {}, {}
    for backend in ("gsplat", "torch"):
        trainer.outside.gen.manual_seed(3)  # the same orbit views for both renderers
        a.opacity_logit.grad = None
        losses[backend] = sum(trainer.outside.loss(a, backend) for _ in range(8))
        losses[backend].backward()
        grads[backend] = float(a.opacity_logit.grad[0])
    assert float(losses["gsplat"]) > 0
    assert float(losses["gsplat"]) == pytest.approx(float(losses["torch"]), rel=0.05)
    assert grads["gsplat"] > 0 and grads["gsplat"] == pytest.approx(grads["torch"], rel=0.1)
