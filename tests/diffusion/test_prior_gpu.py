"""The packaged prior on CUDA (bf16, as the fit runs it) against the CPU float32 reference, and a short
gsplat fit that uses it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from gafkit.diffusion.pipeline import MultiViewPrior

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("size", [256, 512])
def test_bf16_cuda_pseudo_ground_truth_matches_cpu_float32(size):
    """At 512 the views go through the packaged upsampler."""
    torch.manual_seed(0)
    renders, normals = torch.rand(1, 4, 3, size, size), torch.rand(1, 4, 3, size, size)
    ref = torch.rand(1, 3, 256, 256)
    outs = []
    for device, dtype in (("cpu", torch.float32), ("cuda", torch.bfloat16)):
        prior = MultiViewPrior.from_pretrained("default", device=device, dtype=dtype)
        assert prior.upsampler is not None  # the packaged prior carries one
        g = torch.Generator().manual_seed(0)  # a CPU generator: the same noise on both devices
        noise_free = prior.pseudo_ground_truth(renders.to(device), normals.to(device), ref.to(device), 0.3,
                                               num_inference_steps=10, generator=g)
        outs.append(noise_free.float().cpu())
    assert torch.isfinite(outs[1]).all() and outs[1].shape == (1, 4, 3, size, size)
    # Same noise; bf16 against float32: close on average, not bitwise.
    assert (outs[0] - outs[1]).abs().mean() < 0.03


def test_gsplat_fit_with_the_default_prior(tmp_path):
    from gafkit.recon.config import FitConfig
    from gafkit.recon.train import run_fit

    subject = Path(os.environ.get("GAFKIT_GPU_SUBJECT", ""))
    if not (subject / "manifest.json").is_file():
        pytest.skip("set GAFKIT_GPU_SUBJECT to a synthetic subject (the GPU machine has no mediapipe)")
    fit = FitConfig(iters=300, eval_every=0, preview=False, backend="gsplat")
    fit.prior.path, fit.prior.regenerate_every = "default", 50
    run_fit(fit, subject, tmp_path / "avatar", device="cuda")
    metrics = json.loads((tmp_path / "avatar" / "metrics.json").read_text())
    assert metrics["prior"]["generations"] == 5  # iterations 60, 110, ..., 260
    assert metrics["psnr"] > 15
