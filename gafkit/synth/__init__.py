"""Synthetic ground-truth subjects (``gafkit synth``): a head-model identity with a procedural or
photo-based appearance, a smooth seeded trajectory, a monocular training video in the tracked-sequence
layout and held-out novel views with normals, masks and all true parameters (``docs/SYNTH.md``).

The renderer lives in :mod:`gafkit.synth.generate` (``run_synth``); importing this package is cheap.
"""

from gafkit.synth.config import MotionConfig, NovelViewConfig, SynthConfig

__all__ = ["MotionConfig", "NovelViewConfig", "SynthConfig"]
