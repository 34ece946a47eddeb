"""Config sections of the tracking preprocessing stages (decode, detect, crop, segment).

One dataclass per stage, nested in :class:`PreprocessConfig`, so overrides read
``--set crop.size=256`` and each stage's resume check compares only its own section (plus the
sections of the stages before it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class DecodeConfig:
    """Stage 1: which frames of the input to use."""

    fps: float | None = None
    """Resample to this rate by timestamp (the first frame at or after each ``start + k / fps`` is
    kept; frames are never duplicated). ``None`` keeps every frame."""
    start: float = 0.0
    """Skip frames before this time (seconds from the first frame)."""
    end: float | None = None
    """Stop at this time (seconds, exclusive). ``None`` reads to the end."""
    max_frames: int | None = None
    """Keep at most this many frames (after fps/start/end selection)."""
    image_fps: float = 25.0
    """Frame rate assumed for a folder of images (they carry no timestamps)."""
    max_side_factor: float = 4.0
    """Frames are downscaled while decoding so that their longer side is at most
    ``max_side_factor * crop.size``: enough resolution for the crop, bounded memory for 4K input."""


@dataclass
class DetectConfig:
    """Stage 2: mediapipe FaceMesh landmarks (478 with iris) and the choice of one subject."""

    max_faces: int = 4
    """Faces FaceMesh looks for per frame; more than one lets the subject be told apart from others."""
    min_detection_confidence: float = 0.5
    min_tracking_confidence: float = 0.5
    fallback: bool = True
    """When tracking-mode FaceMesh finds no subject, run the full-range face detector and a
    static FaceMesh on the detected region (finds small faces, e.g. a person far from the camera)."""
    fallback_region: float = 2.2
    """Side of the square region given to the fallback FaceMesh, in face-detector box sizes."""
    max_jump: float = 1.0
    """A face is the subject only if its box centre is within ``max_jump`` face widths of the
    subject's last known centre; otherwise the frame fails as 'subject not found'."""


@dataclass
class CropConfig:
    """Stage 3: one fixed square crop for the whole sequence."""

    size: int = 512
    """Side of the output images in pixels."""
    scale: float = 2.0
    """Crop side = ``scale`` x the larger side of the robust face-landmark box (room for hair, ears,
    neck)."""
    shift_up: float = 0.1
    """Move the crop centre up by this fraction of the face-box height (hair needs more room than
    the neck)."""
    percentile: float = 5.0
    """The robust face box spans the ``percentile``..``100 - percentile`` range of the per-frame
    landmark boxes over all good frames, ignoring a few outlier frames."""
    min_scale: float = 1.6
    """Where the ``scale`` window does not fit in the frame it is shifted inside, and shrinks towards
    the frame's shorter side, keeping at least the frame content of a ``min_scale`` window (head and
    hair); it pads only beyond that. ``min_scale >= scale`` never shrinks (it still shifts)."""
    pad: Literal["black", "edge"] = "black"
    """How crop pixels outside the frame are filled, where padding is unavoidable: zeros, or the
    nearest frame pixel. The masks mark padded pixels as background either way."""


@dataclass
class SegmentConfig:
    """Stage 4: foreground (head, hair, neck) masks."""

    model: Literal["general", "landscape"] = "general"
    """mediapipe selfie segmentation model (256x256 'general' or 144x256 'landscape')."""
    threshold: float = 0.5
    """Foreground probability above which a pixel is foreground."""
    neck_below_chin: float | None = 0.5
    """Cut the mask this many face heights (forehead landmark 10 to chin 152) below the chin,
    along the face's own down direction; ``None`` keeps the whole body."""
    head_width: float | None = 1.6
    """Keep the mask within this many face half-widths of the face's axis above the jaw (hair, ears);
    ``None`` keeps everything the segmenter found (shoulders, clothing, hands)."""
    neck_width: float = 0.75
    """... narrowing to this many face half-widths from the chin down (the neck, not the collar)."""
    neck_skin: float | None = 4.0
    """Below the chin keep only pixels whose chroma is within this many (robust) standard deviations
    of the face's skin, so a collar or sweater under the chin is dropped; ``None`` skips the test."""
    matte_radius: int = 6
    """Soften the mask into a matte that follows the frame's edges within this many pixels (at 512;
    scaled with the crop size) of its border (guided filter); 0 keeps hard 0/255 masks."""


@dataclass
class PreprocessConfig:
    """Stages 1-4 of ``gafkit track``."""

    decode: DecodeConfig = field(default_factory=DecodeConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    crop: CropConfig = field(default_factory=CropConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    min_valid_ratio: float = 0.5
    """Fail (InputError, nothing written by the caller) when fewer frames than this have a face."""
    image_format: Literal["png", "jpg"] = "png"
    """Format of ``images/`` (jpg at quality 95 is ~5x smaller, lossy)."""


def check_preprocess_config(cfg: PreprocessConfig) -> None:
    """Refuse settings that would silently do something else (``max_frames: 0`` would still keep a
    frame, a negative ``fps`` would keep only the first). Raises ConfigError naming the key."""
    from gafkit.errors import ConfigError

    d, c = cfg.decode, cfg.crop
    rules = [
        ("decode.fps", d.fps is None or d.fps > 0, "must be > 0 (or null for every frame)"),
        ("decode.start", d.start >= 0, "must be >= 0"),
        ("decode.end", d.end is None or d.end > d.start, "must be after decode.start"),
        ("decode.max_frames", d.max_frames is None or d.max_frames >= 1, "must be >= 1 (or null)"),
        ("decode.image_fps", d.image_fps > 0, "must be > 0"),
        ("decode.max_side_factor", d.max_side_factor >= 1, "must be >= 1"),
        ("detect.max_faces", cfg.detect.max_faces >= 1, "must be >= 1"),
        ("detect.max_jump", cfg.detect.max_jump > 0, "must be > 0"),
        ("detect.fallback_region", cfg.detect.fallback_region > 0, "must be > 0"),
        ("crop.size", c.size >= 16, "must be >= 16"),
        ("crop.scale", c.scale > 0, "must be > 0"),
        ("crop.min_scale", c.min_scale > 0, "must be > 0"),
        ("crop.percentile", 0 <= c.percentile < 50, "must be in [0, 50)"),
        ("segment.threshold", 0 < cfg.segment.threshold < 1, "must be in (0, 1)"),
        ("min_valid_ratio", 0 <= cfg.min_valid_ratio <= 1, "must be in [0, 1]"),
    ]
    for key, ok, rule in rules:
        if not ok:
            raise ConfigError(f"preprocess.{key} {rule}")
