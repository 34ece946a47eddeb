"""Stage 4, segment: a foreground mask (head, hair, neck) for every crop.

mediapipe's selfie segmentation gives a person mask; it is refined with what the landmarks know:

1. threshold the person probability (``SegmentConfig.threshold``);
2. add the convex hull of the 478 face landmarks (the segmenter sometimes drops a face that is
   lit like the background);
3. fill holes (background regions not connected to the crop border, e.g. an open mouth);
4. keep the connected component that holds the face (other people, furniture);
5. cut the neck ``neck_below_chin`` face heights below the chin (landmark 152), along the face's
   own down direction (forehead landmark 10 -> chin), so a tilted head is cut square to its neck;
6. keep only the head region: within ``head_width`` face half-widths of the face's axis above the
   jaw, narrowing to ``neck_width`` at the chin and below. Shoulders, clothing and hands are not
   part of the head model, and Gaussians bound to its triangles cannot follow them (on d20 and d12 a
   shirt or sweater was a quarter to a third of the old masks);
7. drop clothing near the neck: below the chin keep only skin-coloured pixels (chroma, YCrCb's Cr
   and Cb, within ``neck_skin`` standard deviations of the face's own, inside the landmark hull);
   beside the jaw also drop pixels whose chroma is nearer the clothing's (the person pixels under
   the chin that failed the skin test) than the skin's, which removes shoulders that rise to the
   jaw but keeps hair; keep the part connected to the face;
8. clear the padding of crops that leave the frame;
9. (``Segmenter``) turn the binary mask into a soft matte that follows the image's own edges: a
   colour guided filter (He et al. 2010) of the mask with the crop as guide, within ``matte_radius``
   of the mask's edge. The segmenter works at 256x256, so its upsampled edges sit a few pixels off
   the real hair and jaw lines, differently in every frame; a fit cannot reproduce that, and those
   pixels dominated the masked error of early avatars.

Frames without landmarks get steps 1, 3, 4 (largest component), 8 and 9.
"""

from __future__ import annotations

import numpy as np

from gafkit.trackers.config import SegmentConfig

FOREHEAD, CHIN = 10, 152
"""mediapipe FaceMesh indices of the top of the forehead and the bottom of the chin."""
TAPER = (-0.3, 0.05)
"""The head region narrows from ``head_width`` to ``neck_width`` between these face heights from
the chin (negative = above it), i.e. along the jaw line."""


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Set background pixels that are not connected to the image border."""
    import cv2

    padded = np.pad(mask, 1).astype(np.uint8)
    flood = padded.copy()
    cv2.floodFill(flood, None, (0, 0), 1)  # the 1-pixel border joins all border regions
    holes = flood[1:-1, 1:-1] == 0
    return mask | holes


def _component(mask: np.ndarray, seed: np.ndarray | None) -> np.ndarray:
    """The connected component of ``mask`` holding the most ``seed`` pixels (largest if no seed)."""
    import cv2

    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 2:
        return mask
    if seed is not None and seed.any():
        votes = np.bincount(labels[seed], minlength=count)
        votes[0] = 0
        best = int(np.argmax(votes))
    else:
        best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == best


def _along_chin(landmarks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``[H, W]`` signed distance below the chin along the face's down direction (forehead landmark
    10 -> chin 152), in face heights; cuts along it are square to a tilted head's neck."""
    top, chin = landmarks[FOREHEAD, :2], landmarks[CHIN, :2]
    down = chin - top
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]]
    return ((xs + 0.5 - chin[0]) * down[0] + (ys + 0.5 - chin[1]) * down[1]) / max(float(down @ down), 1e-9)


def _chroma(rgb: np.ndarray) -> np.ndarray:
    """``[H, W, 2]`` YCrCb's (Cr, Cb): colour without the shading that darkens a neck under the chin."""
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2YCrCb)[..., 1:].astype(np.float32)


def _distance(crcb: np.ndarray, region: np.ndarray) -> np.ndarray:
    """``[H, W]`` chroma distance to ``region``'s, in robust standard deviations per axis.

    Median and 1.4826 x MAD, so the eyes, brows and lips inside a face hull (or the stripes of a
    shirt) do not widen the statistics much.
    """
    samples = crcb[region]
    centre = np.median(samples, axis=0)
    spread = 1.4826 * np.median(np.abs(samples - centre), axis=0) + 1.0  # +1: 8-bit quantisation
    return np.sqrt((((crcb - centre) / spread) ** 2).sum(-1))


def soft_matte(rgb: np.ndarray, mask: np.ndarray, radius: int, eps: float = 1e-3, subsample: int = 2) -> np.ndarray:
    """``[H, W]`` float32 alpha in 0..1: ``mask`` ``[H, W]`` bool snapped to the edges of ``rgb``
    ``[H, W, 3]`` uint8 by a colour guided filter of window radius ``radius`` px (step 9).

    The filter's linear coefficients are computed ``subsample`` times coarser and interpolated back
    (He and Sun's fast guided filter): the output still follows the full-resolution guide. Pixels
    farther than ``radius`` from the mask's edge keep their hard value.
    """
    import cv2

    h, w = mask.shape
    s = max(1, min(subsample, radius))
    guide_full = rgb.astype(np.float32) / 255
    p_full = mask.astype(np.float32)
    small = (max(1, w // s), max(1, h // s))
    guide = cv2.resize(guide_full, small, interpolation=cv2.INTER_AREA) if s > 1 else guide_full
    p = cv2.resize(p_full, small, interpolation=cv2.INTER_AREA) if s > 1 else p_full
    r = max(1, round(radius / s))
    k = (2 * r + 1, 2 * r + 1)

    def box(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, -1, k, borderType=cv2.BORDER_REFLECT)

    mean_i, mean_p = box(guide), box(p)
    cov_ip = box(guide * p[..., None]) - mean_i * mean_p[..., None]
    cov = np.empty(p.shape + (3, 3), np.float32)
    for a in range(3):
        for b in range(a, 3):
            cov[..., a, b] = cov[..., b, a] = box(guide[..., a] * guide[..., b]) - mean_i[..., a] * mean_i[..., b]
    cov += eps * np.eye(3, dtype=np.float32)
    coef = np.linalg.solve(cov, cov_ip[..., None])[..., 0]
    offset = mean_p - (coef * mean_i).sum(-1)
    coef, offset = box(coef), box(offset)
    if s > 1:
        coef = cv2.resize(coef, (w, h), interpolation=cv2.INTER_LINEAR)
        offset = cv2.resize(offset, (w, h), interpolation=cv2.INTER_LINEAR)
    alpha = np.clip((coef * guide_full).sum(-1) + offset, 0, 1)
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    near = cv2.dilate(mask.astype(np.uint8), kernel).astype(bool) & ~cv2.erode(mask.astype(np.uint8), kernel).astype(bool)
    return np.where(near, alpha, p_full).astype(np.float32)


def head_region(landmarks: np.ndarray, shape: tuple[int, int], head_width: float, neck_width: float) -> np.ndarray:
    """``[H, W]`` bool: pixels near the face's vertical axis (step 6 of the module docstring).

    The axis runs through the chin along the forehead -> chin direction; widths are in face
    half-widths (the landmarks' largest distance from the axis), so the region follows the face's
    size, roll and position. The side limit is ``head_width`` above the jaw and ``neck_width`` from the
    chin down, linear in between (``TAPER``).
    """
    top, chin = landmarks[FOREHEAD, :2], landmarks[CHIN, :2]
    down = chin - top
    face_height = float(np.linalg.norm(down))
    if face_height == 0:
        return np.ones(shape, bool)
    right = np.array([-down[1], down[0]]) / face_height
    half_width = float(np.abs((landmarks[:, :2] - chin) @ right).max())
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]]
    side = np.abs((xs + 0.5 - chin[0]) * right[0] + (ys + 0.5 - chin[1]) * right[1]) / half_width
    t = np.clip((_along_chin(landmarks, shape) - TAPER[0]) / (TAPER[1] - TAPER[0]), 0, 1)
    return side <= head_width + t * (neck_width - head_width)


def refine_mask(
    cfg: SegmentConfig,
    probability: np.ndarray,
    landmarks: np.ndarray | None,
    inside: tuple[float, float, float, float] | None = None,
    rgb: np.ndarray | None = None,
) -> np.ndarray:
    """Steps 1-8 above (7 only with ``rgb``).

    Args:
        probability: ``[S, S]`` float person probability.
        rgb: ``[S, S, 3]`` uint8 crop, for the skin test below the chin.
        landmarks: ``[478, 2|3]`` crop pixels of the face, or None.
        inside: crop-pixel box ``(left, top, right, bottom)`` that shows the frame; outside is cleared.

    Returns:
        ``[S, S]`` bool foreground mask.
    """
    import cv2

    size_y, size_x = probability.shape
    mask = probability > cfg.threshold
    hull = None
    if landmarks is not None:
        pts = landmarks[:, :2] - 0.5  # pixel-centre convention -> OpenCV's integer centres
        hull_poly = cv2.convexHull(np.round(pts).astype(np.int32))
        hull = np.zeros((size_y, size_x), np.uint8)
        cv2.fillConvexPoly(hull, hull_poly, 1)
        hull = hull.astype(bool)
        mask |= hull
    mask = _fill_holes(mask)
    mask = _component(mask, hull)
    along = _along_chin(landmarks, (size_y, size_x)) if landmarks is not None else None
    if along is not None and cfg.neck_below_chin is not None:
        mask &= along <= cfg.neck_below_chin
    if landmarks is not None and cfg.head_width is not None:
        mask &= head_region(landmarks, (size_y, size_x), cfg.head_width, cfg.neck_width)
    if along is not None and rgb is not None and cfg.neck_skin is not None and hull.any():
        crcb = _chroma(rgb)
        skin_d = _distance(crcb, hull)
        mask &= (along <= 0) | (skin_d <= cfg.neck_skin)
        clothes = (probability > cfg.threshold) & (along > 0.1) & (skin_d > cfg.neck_skin)
        if clothes.sum() >= 200:
            beside_jaw = (along > TAPER[0]) & ~hull
            mask &= ~(beside_jaw & (_distance(crcb, clothes) < skin_d))
        # Colour tests leave slivers along clothing edges; hair above the jaw keeps its fine strands.
        opened = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, np.ones((5, 5), np.uint8)).astype(bool)
        mask = np.where(along > TAPER[0], opened, mask)
        mask = _component(_fill_holes(mask), hull)  # a shadow the skin test dropped inside the neck
    if inside is not None:
        mask &= _inside(inside, mask.shape)
    return mask


def _inside(box: tuple[float, float, float, float], shape: tuple[int, int]) -> np.ndarray:
    """``[H, W]`` bool: pixel centres inside the crop-pixel box ``(left, top, right, bottom)``."""
    left, top, right, bottom = box
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]] + 0.5
    return (xs >= left) & (xs <= right) & (ys >= top) & (ys <= bottom)


class Segmenter:
    """mediapipe selfie segmentation plus :func:`refine_mask`; a context manager.

    Example::

        with Segmenter(SegmentConfig()) as seg:
            alpha = seg(crop_rgb, landmarks_crop)  # [S, S] float32 in 0..1
    """

    def __init__(self, cfg: SegmentConfig):
        import mediapipe as mp

        self.cfg = cfg
        self._model = mp.solutions.selfie_segmentation.SelfieSegmentation(
            model_selection=0 if cfg.model == "general" else 1
        )

    def __enter__(self) -> Segmenter:
        return self

    def __exit__(self, *exc) -> None:
        self._model.close()

    def probability(self, rgb: np.ndarray) -> np.ndarray:
        """``[S, S]`` float32 person probability of ``rgb`` ``[S, S, 3]`` uint8."""
        return self._model.process(np.ascontiguousarray(rgb)).segmentation_mask

    def __call__(
        self,
        rgb: np.ndarray,
        landmarks: np.ndarray | None,
        inside: tuple[float, float, float, float] | None = None,
    ) -> np.ndarray:
        """``[S, S]`` float32 foreground alpha in 0..1 of the crop ``rgb`` ``[S, S, 3]`` uint8 (hard 0/1
        with ``matte_radius`` 0)."""
        mask = refine_mask(self.cfg, self.probability(rgb), landmarks, inside, rgb)
        if self.cfg.matte_radius <= 0:
            return mask.astype(np.float32)
        radius = max(1, round(self.cfg.matte_radius * rgb.shape[0] / 512))
        alpha = soft_matte(rgb, mask, radius)
        return alpha * _inside(inside, alpha.shape) if inside is not None else alpha
