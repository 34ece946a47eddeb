"""Stage 3, crop: one square window per sequence around the head, resized to ``size``.

Why one fixed crop: the avatar is fitted with one camera intrinsics for the whole sequence; a
window that followed the head would change the intrinsics every frame and turn head motion into
camera motion. The window is derived from the landmark boxes of all good frames, robustly
(percentiles of the per-frame boxes, so a few bad frames do not move it), enlarged by
``CropConfig.scale`` for hair, ears and neck and moved up by ``shift_up`` face heights.

Padding outside the frame adds no picture, only black (or smeared) borders that waste resolution,
so the window is then fitted to the frame (:func:`place_window`): it is shifted inside the frame,
and where it is larger than the frame's shorter side it shrinks, but never below the part of the
frame that a ``min_scale`` window shows ("essential" content: head and hair, little background).
Padding remains only when that essential part is taller/wider than the frame's shorter side (a
close-up whose head fills a landscape frame), and then as little as possible. Black bars baked into
the video (letterbox/pillarbox, :func:`find_bars`) count as outside the frame: the window avoids
them like padding, and where it cannot, they are filled and masked like padding.

The window has integer corners and side in frame pixels, so cutting it out is exact, and resizing
uses OpenCV's half-pixel-centre mapping, which matches the convention that pixel ``j`` covers
``[j, j+1)``. Conversions are therefore exact affine maps::

    crop = (frame - offset) * scale        frame = crop / scale + offset

with ``scale = size / side``. ``z`` coordinates (same units as x) are multiplied by ``scale`` too.
Parts of the window outside the frame are filled with zeros (``pad="black"``) or the nearest frame
pixel (``pad="edge"``); ``CropTransform.inside`` gives the crop-pixel box that shows the frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from gafkit.errors import GafkitError
from gafkit.trackers.config import CropConfig


@dataclass(frozen=True)
class CropTransform:
    """A square window ``[x0, x0 + side) x [y0, y0 + side)`` of the frame, resized to ``size``."""

    x0: int
    """Left edge of the window in frame pixels (may be negative: outside the frame)."""
    y0: int
    """Top edge of the window in frame pixels."""
    side: int
    """Window side in frame pixels."""
    size: int
    """Output side in crop pixels."""
    frame_width: int
    frame_height: int
    content: tuple[int, int, int, int] | None = None
    """Frame-pixel box ``(x0, y0, x1, y1)`` of the picture inside black bars baked into the video;
    None: the whole frame. Pixels outside it are treated like pixels outside the frame."""

    @property
    def content_box(self) -> tuple[int, int, int, int]:
        return self.content or (0, 0, self.frame_width, self.frame_height)

    @property
    def scale(self) -> float:
        """Crop pixels per frame pixel."""
        return self.size / self.side

    @property
    def offset(self) -> np.ndarray:
        """``[2]`` window corner (x0, y0) in frame pixels."""
        return np.array([self.x0, self.y0], dtype=np.float64)

    @property
    def inside(self) -> tuple[float, float, float, float]:
        """Crop-pixel box ``(left, top, right, bottom)`` of the part of the crop that shows the
        picture (the frame without padding and bars)."""
        s = self.scale
        cx0, cy0, cx1, cy1 = self.content_box
        return (
            max(0.0, (cx0 - self.x0) * s),
            max(0.0, (cy0 - self.y0) * s),
            min(float(self.size), (cx1 - self.x0) * s),
            min(float(self.size), (cy1 - self.y0) * s),
        )

    def frame_to_crop(self, points: np.ndarray) -> np.ndarray:
        """``[..., 2|3]`` frame pixels -> crop pixels (z scaled like x)."""
        out = np.array(points, dtype=np.float64, copy=True)
        out[..., :2] -= self.offset
        out *= self.scale
        return out

    def crop_to_frame(self, points: np.ndarray) -> np.ndarray:
        """``[..., 2|3]`` crop pixels -> frame pixels."""
        out = np.array(points, dtype=np.float64, copy=True) / self.scale
        out[..., :2] += self.offset
        return out

    def apply(self, image: np.ndarray, pad: str = "black") -> np.ndarray:
        """Cut ``image`` ``[H, W, C]`` (or ``[H, W]``) to ``[size, size, C]``."""
        import cv2

        height, width = image.shape[:2]
        if (height, width) != (self.frame_height, self.frame_width):
            raise ValueError(f"frame is {width}x{height}, crop was made for {self.frame_width}x{self.frame_height}")
        # Cut from the picture inside the bars, so bars are padded (and masked) like the outside.
        cx0, cy0, cx1, cy1 = self.content_box
        image = image[cy0:cy1, cx0:cx1]
        height, width = image.shape[:2]
        x0, y0 = self.x0 - cx0, self.y0 - cy0
        x1, y1 = x0 + self.side, y0 + self.side
        left, top = max(0, -x0), max(0, -y0)
        right, bottom = max(0, x1 - width), max(0, y1 - height)
        window = image[max(0, y0) : min(height, y1), max(0, x0) : min(width, x1)]
        if left or top or right or bottom:
            border = cv2.BORDER_CONSTANT if pad == "black" else cv2.BORDER_REPLICATE
            window = cv2.copyMakeBorder(window, top, bottom, left, right, border, value=0)
        interp = cv2.INTER_AREA if self.side > self.size else cv2.INTER_LINEAR
        return cv2.resize(window, (self.size, self.size), interpolation=interp)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "scale": self.scale}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CropTransform:
        content = data.get("content")
        return cls(**{k: int(data[k]) for k in ("x0", "y0", "side", "size", "frame_width", "frame_height")},
                   content=None if content is None else tuple(int(v) for v in content))


def find_bars(images: Sequence[np.ndarray], threshold: int = 24) -> tuple[int, int, int, int] | None:
    """The picture box ``(x0, y0, x1, y1)`` inside black bars baked into a video (letterbox,
    pillarbox, a portrait clip inside a landscape frame), or None when there are none.

    A bar is a run of edge rows or columns whose every pixel stays at most ``threshold`` (of 255) in
    every frame of ``images`` (``[H, W, 3]`` uint8, a sample of the video's frames). A dark
    background that is ever lighter than that is never a bar.
    """
    peak = np.max([np.asarray(im).max(axis=-1) for im in images], axis=0)  # [H, W]
    lit_cols = np.nonzero(peak.max(axis=0) > threshold)[0]
    lit_rows = np.nonzero(peak.max(axis=1) > threshold)[0]
    height, width = peak.shape
    if len(lit_cols) < 8 or len(lit_rows) < 8:  # (nearly) black video: nothing to go by
        return None
    box = (int(lit_cols[0]), int(lit_rows[0]), int(lit_cols[-1]) + 1, int(lit_rows[-1]) + 1)
    return None if box == (0, 0, width, height) else box


def fit_crop(
    cfg: CropConfig, landmarks: np.ndarray, valid: np.ndarray, frame_width: int, frame_height: int,
    content: tuple[int, int, int, int] | None = None,
) -> CropTransform:
    """The sequence's crop window from the subject's landmarks.

    Args:
        cfg: crop settings.
        landmarks: ``[N, 478, 2|3]`` frame pixels.
        valid: ``[N]`` bool, frames whose landmarks count.
        frame_width, frame_height: decoded frame size.
        content: picture box inside black bars (:func:`find_bars`); the window is placed in it.

    Example::

        crop = fit_crop(CropConfig(size=512), det.landmarks, det.valid, 480, 480)
        crop.frame_to_crop(det.landmarks[0])  # [478, 3] crop pixels
    """
    good = landmarks[np.asarray(valid, dtype=bool), :, :2]
    if len(good) == 0:
        raise GafkitError("crop: no frame with a face to place the crop on")
    lo, hi = good.min(1), good.max(1)  # [G, 2] per-frame boxes
    p = cfg.percentile
    left, top = np.percentile(lo, p, axis=0)
    right, bottom = np.percentile(hi, 100 - p, axis=0)
    centre = np.array([(left + right) / 2, (top + bottom) / 2 - cfg.shift_up * (bottom - top)])
    face = max(right - left, bottom - top)
    cx0, cy0, cx1, cy1 = content or (0, 0, frame_width, frame_height)
    x0, y0, side = place_window(centre - [cx0, cy0], cfg.scale * face, min(cfg.min_scale, cfg.scale) * face,
                                cx1 - cx0, cy1 - cy0)
    return CropTransform(x0 + cx0, y0 + cy0, side, cfg.size, frame_width, frame_height, content)


def place_window(centre: np.ndarray, side: float, essential: float, frame_width: int,
                 frame_height: int) -> tuple[int, int, int]:
    """Integer square window ``(x0, y0, side)`` near the one of side ``side`` centred at ``centre``
    ``[2]`` (frame pixels) that pads as little as possible.

    Guarantees: the result shows every frame pixel of the ``essential``-sided window at the same
    centre; it lies inside the frame when its side fits the shorter frame side; it is not larger
    than ``side`` (give or take a pixel of rounding). Where it must pad (the essential part spans more than the shorter side), it covers
    that whole frame axis and pads only ``side - axis length`` pixels.

    >>> place_window(np.array([240.0, 220.0]), 640.0, 400.0, 480, 480)  # d20: the whole frame
    (0, 0, 480)
    >>> place_window(np.array([50.0, 60.0]), 160.0, 120.0, 640, 480)  # near a corner: shifted in
    (0, 0, 160)
    """
    size = np.array([frame_width, frame_height])
    want = max(8, int(round(side)))
    # Frame pixels the essential window shows, per axis (integer bounds that contain it).
    ess_lo = np.clip(np.floor(centre - essential / 2), 0, size).astype(int)
    ess_hi = np.clip(np.ceil(centre + essential / 2), 0, size).astype(int)
    needed = int((ess_hi - ess_lo).max())
    side_px = max(min(want, int(size.min())), needed)
    corner = []
    for axis in range(2):
        start = int(round(centre[axis] - side_px / 2))
        length = int(size[axis])
        if side_px <= length:  # inside the frame, still holding the essential span
            low, high = max(0, int(ess_hi[axis]) - side_px), min(length - side_px, int(ess_lo[axis]))
        else:  # covers the whole axis; the padding stays where the wanted window had it
            low, high = length - side_px, 0
        corner.append(int(np.clip(start, low, high)))
    return corner[0], corner[1], side_px
