"""Stage 1, decode: a video file, a folder of images or one image -> RGB frames with timestamps.

Frames are streamed (one decoded frame in memory at a time) and downscaled while decoding, so 4K
input costs no more memory than the crop needs. Video frames are selected by their timestamps, not
their indices, so variable-frame-rate files resample correctly. The display matrix (rotation and
flips, e.g. from phones) is applied, so frames come out the way players show them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gafkit.errors import InputError
from gafkit.trackers.config import DecodeConfig

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class Frame:
    """One selected frame."""

    image: np.ndarray
    """``[H, W, 3]`` uint8 RGB, after rotation and downscaling."""
    source_index: int
    """Index of the frame in the input (decode order for video, sorted order for folders)."""
    time: float
    """Seconds since the input's first frame (folders: ``source_index / image_fps``)."""
    scale: float
    """Output pixels per input pixel (1.0 when not downscaled)."""


def _target_size(width: int, height: int, max_side: int | None) -> tuple[int, int, float]:
    """Size after downscaling so that the longer side is at most ``max_side``."""
    if max_side is None or max(width, height) <= max_side:
        return width, height, 1.0
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale)), scale


def _selector(cfg: DecodeConfig):
    """Return ``keep(t) -> "skip" | "keep" | "stop"`` implementing start/end/fps by timestamp."""
    last_slot = [-1]

    def keep(t: float) -> str:
        if cfg.end is not None and t >= cfg.end - 1e-9:
            return "stop"
        if t < cfg.start - 1e-9:
            return "skip"
        if cfg.fps is None:
            return "keep"
        # Output frame k is the first frame at or after start + k / fps (epsilon: float timestamps).
        slot = int(np.floor((t - cfg.start) * cfg.fps + 1e-6))
        if slot <= last_slot[0]:
            return "skip"
        last_slot[0] = slot
        return "keep"

    return keep


def apply_display_matrix(image: np.ndarray, matrix: np.ndarray | None) -> np.ndarray:
    """Rotate/flip ``image`` ``[H, W, C]`` as FFmpeg's 3x3 display matrix (9 int32, 16.16 fixed
    point, row-vector convention: ``x' = a x + c y``, ``y' = b x + d y``) says.

    Only the 8 axis-aligned transforms exist in practice; other matrices are rounded to them.
    """
    if matrix is None:
        return image
    a, b, c, d = (int(np.sign(round(v / 65536))) for v in (matrix[0], matrix[1], matrix[3], matrix[4]))
    if a == 0 and d == 0 and b != 0 and c != 0:  # axes swap: x' = c*y, y' = b*x
        out = image.transpose(1, 0, *range(2, image.ndim))
        if b < 0:
            out = out[::-1]
        if c < 0:
            out = out[:, ::-1]
    else:
        out = image
        if a < 0:
            out = out[:, ::-1]
        if d < 0:
            out = out[::-1]
    return np.ascontiguousarray(out)


def _display_matrix(frame) -> np.ndarray | None:
    side = frame.side_data.get("DISPLAYMATRIX") if frame.side_data else None
    if side is None:
        return None
    return np.frombuffer(bytes(side), dtype="<i4")


def _iter_video(path: Path, cfg: DecodeConfig, max_side: int | None) -> Iterator[Frame]:
    import av

    try:
        container = av.open(str(path))
    except av.error.FFmpegError as err:
        raise InputError(path, f"not a video or image FFmpeg can read ({err.strerror or err})") from err
    with container:
        if not container.streams.video:
            raise InputError(path, "has no video frames (no video stream)")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        keep = _selector(cfg)
        t0: float | None = None
        index = -1
        kept = 0
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets)
                frames = packet.decode()
            except StopIteration:
                break
            except av.error.FFmpegError as err:
                raise InputError(path, f"corrupt or truncated video after frame {index + 1} ({err})") from err
            for frame in frames:
                index += 1
                t = frame.time
                if t is None:  # no timestamps: fall back on the nominal rate
                    rate = float(stream.average_rate or stream.guessed_rate or 25)
                    t = index / rate
                if t0 is None:
                    t0 = t
                decision = keep(t - t0)
                if decision == "stop":
                    return
                if decision == "skip":
                    continue
                width, height, scale = _target_size(frame.width, frame.height, max_side)
                rgb = frame.reformat(width, height, format="rgb24", interpolation="AREA").to_ndarray()
                rgb = apply_display_matrix(rgb, _display_matrix(frame))
                yield Frame(rgb, index, round(t - t0, 6), scale)
                kept += 1
                if cfg.max_frames is not None and kept >= cfg.max_frames:
                    return
        if index < 0:
            raise InputError(path, "no frame could be decoded (empty, truncated or corrupt video)")


def _natural_key(name: str) -> list:
    """``img2`` sorts before ``img10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def list_images(folder: Path) -> list[Path]:
    """Image files of ``folder`` (not recursive), in natural order of their names."""
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files, key=lambda p: _natural_key(p.name))


def read_image(path: Path, max_side: int | None = None) -> tuple[np.ndarray, float]:
    """Read an image file as ``[H, W, 3]`` uint8 RGB, EXIF orientation applied, downscaled so the
    longer side is at most ``max_side``; also returns the scale."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img).convert("RGB")
            width, height, scale = _target_size(img.width, img.height, max_side)
            if scale != 1.0:
                img = img.resize((width, height), Image.Resampling.BOX)
            return np.asarray(img), scale
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise InputError(path, f"not a readable image ({err.__class__.__name__})") from err


def _iter_images(paths: list[Path], cfg: DecodeConfig, max_side: int | None) -> Iterator[Frame]:
    keep = _selector(cfg)
    kept = 0
    for index, path in enumerate(paths):
        t = index / cfg.image_fps
        decision = keep(t)
        if decision == "stop":
            return
        if decision == "skip":
            continue
        image, scale = read_image(path, max_side)
        yield Frame(image, index, round(t, 6), scale)
        kept += 1
        if cfg.max_frames is not None and kept >= cfg.max_frames:
            return


def iter_frames(source: Path, cfg: DecodeConfig, max_side: int | None = None) -> Iterator[Frame]:
    """Stream the selected frames of ``source`` (video file, image folder or single image).

    Args:
        source: input path.
        cfg: frame selection.
        max_side: downscale so the longer side is at most this (``None``: keep the input size).

    Raises:
        InputError: missing path, unreadable or truncated file, empty folder, no frames selected.

    Example::

        for frame in iter_frames(Path("clip.mp4"), DecodeConfig(fps=10, max_frames=5), 2048):
            print(frame.source_index, frame.time, frame.image.shape)
    """
    source = Path(source)
    if not source.exists():
        raise InputError(source, "no such file or directory")
    if source.is_dir():
        paths = list_images(source)
        if not paths:
            raise InputError(source, f"folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        frames = _iter_images(paths, cfg, max_side)
    elif source.suffix.lower() in IMAGE_EXTENSIONS:
        frames = _iter_images([source], cfg, max_side)
    else:
        frames = _iter_video(source, cfg, max_side)
    count = 0
    for frame in frames:
        count += 1
        yield frame
    if count == 0:
        raise InputError(source, "no frames selected (check start/end/fps against the input's length)")
