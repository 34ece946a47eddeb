"""Fixtures of the pipeline tests: a run config small enough that a whole `gafkit run` takes seconds."""

from __future__ import annotations

import pytest

TINY = """\
track:
  preprocess: {crop: {size: 64}, decode: {max_frames: 6}}
  fit: {rigid_steps: 40, steps: 60}
  overlay: false
fit:
  iters: 20
  resolution: 64
  checkpoint_every: 10
  preview: false
  init: {max_gaussians: 300}
  densify: {enabled: false}
animate: {size: 64, orbit_frames: 6}
"""


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory):
    """A YAML file for `--config`: 6 frames tracked at 64 px, 20 fit steps on 300 Gaussians."""
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text(TINY, encoding="utf-8")
    return path
