"""Settings of ``gafkit synth``: one nested dataclass, saved as ``config.yaml`` in the subject folder."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal


@dataclasses.dataclass
class MotionConfig:
    """The seeded, smooth trajectory. Each channel is a sum of three sinusoids of 0.5 to 2 cycles per
    sequence, rescaled so that its largest value over the sequence is exactly its amplitude (so short
    sequences still sweep the whole range)."""

    yaw_deg: float = 25.0
    """Head yaw amplitude (degrees, +-)."""
    pitch_deg: float = 10.0
    """Head pitch amplitude (degrees, +-)."""
    roll_deg: float = 5.0
    """Head roll amplitude (degrees, +-)."""
    drift_m: float = 0.01
    """Head translation amplitude per axis (metres, +-)."""
    gaze_deg: float = 10.0
    """Eyeball rotation amplitude (degrees, +-; both eyes look the same way)."""
    expression: float = 1.0
    """Scale of the expression weights (0 keeps the face neutral)."""
    blinks_per_100_frames: float = 4.0
    """Blink rate (ICT: ``eyeBlink_L/R`` pulses; models without blink shapes ignore it)."""


@dataclasses.dataclass
class NovelViewConfig:
    """Held-out renders of every ``every``-th frame from cameras orbiting the head's rest position."""

    every: int = 5
    """Frame stride of the held-out renders (frames 0, every, 2*every, ...)."""
    yaws_deg: tuple[float, ...] = (-60.0, -30.0, 30.0, 60.0)
    """Yaw-only views (degrees about the world up axis; positive = camera to the subject's left)."""
    pitches_deg: tuple[float, ...] = (-20.0, 20.0)
    """Pitch-only views (degrees; positive = camera above the head)."""


@dataclasses.dataclass
class SynthConfig:
    """A ground-truth subject: identity, appearance, motion, a monocular video and held-out views."""

    frames: int = 60
    """Number of training frames."""
    size: int = 512
    """Square image size in pixels (training and novel views)."""
    seed: int = 0
    """Seeds the identity, the procedural appearance and the motion."""
    head: Literal["ict", "flame"] = "ict"
    """Head model; ``flame`` needs ``flame_model`` (or ``$GAFKIT_FLAME_MODEL``)."""
    flame_model: Path | None = None
    """FLAME model file (``generic_model.pkl`` / ``flame2023.pkl``)."""
    appearance: Literal["procedural", "photo"] = "procedural"
    """``procedural``: seeded skin, lips, brows, eyes and hair colours on the model's regions;
    ``photo``: the head fitted to a face photo and the photo projected onto it (its identity too)."""
    photo: Path | None = None
    """Face photo for ``appearance=photo`` (default: scikit-image's public-domain astronaut)."""
    shape_std: float = 0.8
    """Standard deviation of the random identity coefficients (procedural appearance)."""
    fps: float = 25.0
    """Frame rate written into ``frames.json`` timestamps."""
    fov_deg: float = 20.0
    """Horizontal field of view of every camera."""
    distance_m: float = 1.2
    """Camera-to-head distance (training camera and novel-view orbit)."""
    background: Literal["white", "black"] = "white"
    """Background colour of the rendered images (masks hold the coverage)."""
    supersample: int = 2
    """Colour images are rendered this many times larger and box-filtered (antialiased edges and
    soft mask borders); 1 renders hard edges."""
    light_dir: tuple[float, float, float] = (-0.3, -0.4, -1.0)
    """Camera-space direction toward the light (OpenCV axes: from the upper left of the camera)."""
    ambient: float = 0.35
    """Fraction of the albedo seen without direct light."""
    motion: MotionConfig = dataclasses.field(default_factory=MotionConfig)
    novel: NovelViewConfig = dataclasses.field(default_factory=NovelViewConfig)
