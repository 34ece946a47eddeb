"""One tiny fitted avatar (and a second subject to drive it) shared by the animate/export/view tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from gafkit.recon.config import FitConfig
from gafkit.recon.train import run_fit
from gafkit.synth import SynthConfig
from gafkit.synth.generate import run_synth


@pytest.fixture(scope="session")
def animate_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("animate")
    run_synth(SynthConfig(frames=12, size=64, seed=0), root / "subject")
    # Another identity with its own motion: the cross-reenactment driver.
    run_synth(SynthConfig(frames=8, size=64, seed=1), root / "driver")
    return root


@pytest.fixture(scope="session")
def avatar(animate_data) -> Path:
    cfg = FitConfig(iters=30, preview=False, eval_every=0)
    cfg.init.max_gaussians = 300
    return run_fit(cfg, animate_data / "subject", animate_data / "avatar", device="cpu")


@pytest.fixture(scope="session")
def subject(animate_data, avatar) -> Path:
    return animate_data / "subject"


@pytest.fixture(scope="session")
def driver(animate_data) -> Path:
    return animate_data / "driver"
