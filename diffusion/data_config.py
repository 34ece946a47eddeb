"""Settings of ``gafkit prior data ...`` and ``gafkit prior appearances``: one dataclass per source,
saved as ``config.yaml`` in the data folder."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal


@dataclasses.dataclass
class SynthDataConfig:
    """Synthetic examples: random identities, expressions, appearances and lighting of the head model,
    seen from cameras orbiting the head centre."""

    size: int = 256
    """Square image size S of every stored image."""
    views: int = 4
    """Target views V per example."""
    seed: int = 0
    """Seeds everything; the same seed and settings give byte-identical shards."""
    subjects: int = 100
    """Subjects in all (training plus held out)."""
    heldout: int = 5
    """How many of ``subjects`` are held out (split ``heldout``, their own seeds and shards)."""
    examples_per_subject: int = 20
    """Examples per subject (each: V targets + one reference)."""
    shard_size: int = 256
    """Examples per shard file."""
    batch: int = 8
    """Examples rendered in one rasterizer call (V + 1 cameras each); bounds memory."""
    head: Literal["ict", "flame"] = "ict"
    """Head model."""
    flame_model: Path | None = None
    """FLAME model file for ``head=flame`` (or ``$GAFKIT_FLAME_MODEL``)."""
    appearances: Path | None = None
    """``gafkit prior appearances`` file of photo-based per-vertex colours and identities."""
    photo_fraction: float = 0.5
    """Probability that a subject takes a photo appearance (only with ``appearances``)."""
    shape_std: float = 0.8
    """Standard deviation of the random identity coefficients."""
    expression: float = 1.0
    """Scale of the random expressions (0: neutral faces)."""
    gaze_deg: float = 15.0
    """Eyeball rotation range (degrees, +-)."""
    fov_deg: float = 20.0
    """Field of view of every camera (the synth and tracker default, so framing matches a tracked crop)."""
    distance_m: float = 1.2
    """Camera-to-head-centre distance."""
    target_pitch_deg: float = 30.0
    """Target cameras' pitch range (+-); their yaw is uniform over the full circle."""
    reference_yaw_deg: float = 35.0
    """Reference camera's yaw range (+-, near frontal)."""
    reference_pitch_deg: float = 15.0
    """Reference camera's pitch range (+-)."""
    other_expression: float = 0.5
    """Probability that the reference shows another random expression than the targets."""
    ambient: tuple[float, float] = (0.3, 0.5)
    """Range of the ambient fraction of the albedo (per example)."""
    light_jitter_deg: float = 30.0
    """The key light (fixed in world space per example, so views agree) comes from the front-upper side,
    jittered by up to this angle."""
    supersample: int = 2
    """Colours and masks are rendered this many times larger and box-filtered (soft edges)."""


@dataclasses.dataclass
class TrackedDataConfig:
    """Examples from tracked sequences: frames of one person at different head poses serve as views."""

    size: int = 256
    """Square image size S of every stored image."""
    views: int = 4
    """Target views V per example."""
    seed: int = 0
    """Seeds the choice of frames."""
    examples_per_sequence: int = 50
    """Examples drawn from each sequence (fewer when the sequence is shorter than V + 1 frames)."""
    heldout: int = 0
    """How many of the sequences (the last ones given) are held out."""
    shard_size: int = 256
    """Examples per shard file."""
    candidates: int = 16
    """Target frames are picked greedily for diverse head rotation among this many random candidates
    nearest in expression to the example's anchor frame."""
    crop_scale: float = 1.0
    """Crop side relative to the framing of the synthetic data (1: the head fills the crop like a
    ``synth`` render at ``fov_deg``/``distance_m``)."""
    fov_deg: float = 20.0
    """Field of view of the framing that crops imitate."""
    distance_m: float = 1.2
    """Camera distance of the framing that crops imitate."""
    foreground_faces: float = 0.5
    """Normal maps show only the triangles whose centroid falls inside the foreground masks in at least
    this share of the frames (:func:`gafkit.render.silhouette.carve_bust`): the bust below the
    tracker's neck cut is background in the images, so it is left out of the normals too, and so is the
    inside of the carved mesh (back faces are culled). 0 keeps every triangle."""
    flame_model: Path | None = None
    """FLAME model file for sequences tracked with FLAME (or ``$GAFKIT_FLAME_MODEL``)."""


@dataclasses.dataclass
class MultiviewDataConfig:
    """Examples from calibrated multi-view captures (layout in docs/PRIOR.md, "Training data")."""

    size: int = 256
    """Square image size S of every stored image."""
    views: int = 4
    """Target views V per example."""
    seed: int = 0
    """Seeds the choice of target cameras."""
    examples_per_timestep: int = 1
    """Examples per timestep (each a different random set of target cameras)."""
    heldout: int = 0
    """How many subjects (the last ones in name order) are held out."""
    shard_size: int = 256
    """Examples per shard file."""
    crop_scale: float = 1.0
    """Crop side relative to the framing of the synthetic data (see :class:`TrackedDataConfig`)."""
    fov_deg: float = 20.0
    """Field of view of the framing that crops imitate."""
    distance_m: float = 1.2
    """Camera distance of the framing that crops imitate."""


@dataclasses.dataclass
class AppearancesConfig:
    """``gafkit prior appearances``: photo-based per-vertex colours of real faces."""

    frames_per_video: int = 3
    """Frames sampled (evenly spaced) from each video."""
    seed: int = 0
    """Seeds the procedural fill of unseen parts."""
    head: Literal["ict", "flame"] = "ict"
    """Head model the colours belong to."""
    flame_model: Path | None = None
    """FLAME model file for ``head=flame``."""
