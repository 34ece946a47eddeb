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
close-up whose head fills a landscape frame), and then as little as possible.

The window has integer corners and side in frame pixels, so cutting it out is exact, and resizing
uses OpenCV's half-pixel-centre mapping, which matches the convention that pixel ``j`` covers
``[j, j+1)``. Conversions are therefore exact affine maps::

    crop = (frame - offset) * scale        frame = crop / scale + offset

with ``scale = size / side``. ``z`` coordinates (same units as x) are multiplied by ``scale`` too.
Parts of the window outside the frame are filled with zeros (``pad="black"``) or the nearest frame
pixel (``pad="edge"``); ``CropTransform.inside`` gives the crop-pixel box that shows the frame.
"""

from __future__ import annotations

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
        """Crop-pixel box ``(left, top, right, bottom)`` of the part of the crop that shows the frame."""
        s = self.scale
        return (
            max(0.0, -self.x0 * s),
            max(0.0, -self.y0 * s),
            min(float(self.size), (self.frame_width - self.x0) * s),
            min(float(self.size), (self.frame_height - self.y0) * s),
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
        x1, y1 = self.x0 + self.side, self.y0 + self.side
        left, top = max(0, -self.x0), max(0, -self.y0)
        right, bottom = max(0, x1 - width), max(0, y1 - height)
        window = image[max(0, self.y0) : min(height, y1), max(0, self.x0) : min(width, x1)]
        if left or top or right or bottom:
            border = cv2.BORDER_CONSTANT if pad == "black" else cv2.BORDER_REPLICATE
            window = cv2.copyMakeBorder(window, top, bottom, left, right, border, value=0)
        interp = cv2.INTER_AREA if self.side > self.size else cv2.INTER_LINEAR
        return cv2.resize(window, (self.size, self.size), interpolation=interp)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "scale": self.scale}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CropTransform:
        return cls(**{k: int(data[k]) for k in ("x0", "y0", "side", "size", "frame_width", "frame_height")})


def fit_crop(
    cfg: CropConfig, landmarks: np.ndarray, valid: np.ndarray, frame_width: int, frame_height: int
) -> CropTransform:
    """The sequence's crop window from the subject's landmarks.

    Args:
        cfg: crop settings.
        landmarks: ``[N, 478, 2|3]`` frame pixels.
        valid: ``[N]`` bool, frames whose landmarks count.
        frame_width, frame_height: decoded frame size.

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
    x0, y0, side = place_window(centre, cfg.scale * face, min(cfg.min_scale, cfg.scale) * face,
                                frame_width, frame_height)
    return CropTransform(x0, y0, side, cfg.size, frame_width, frame_height)


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
