"""Shared test setup: the `gpu` marker skips without CUDA; paths to the shared real clips."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_VIDEO = REPO / "examples" / "d20.mp4"
REAL_DATA = REPO.parent / "shared" / "data" / "real"


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (run through the device machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
