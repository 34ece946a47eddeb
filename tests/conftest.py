"""Shared test setup: the `gpu` marker skips without CUDA; paths to the shared real clips."""

from __future__ import annotations

import pytest
import torch

from paths import EXAMPLE_VIDEO, REAL_DATA, REPO  # noqa: F401  (re-exported for older imports)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (run through the device machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
