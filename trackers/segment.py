"""Stage 4, segment: a foreground mask (head, hair, neck) for every crop.

mediapipe's selfie segmentation gives a person mask; it is refined with what the landmarks know:

1. threshold the person probability (``SegmentConfig.threshold``);
2. add the convex hull of the 478 face landmarks (the segmenter sometimes drops a face that is
   lit like the background);
3. fill holes (background regions not connected to the crop border, e.g. an open mouth);
4. keep the connected component that holds the face (other people, furniture);
5. cut the neck ``neck_below_chin`` face heights below the chin (landmark 152), along the face's
   own down direction (forehead landmark 10 -> chin), so a tilted head is cut square to its neck;
6. clear the padding of crops that leave the frame.

Frames without landmarks get steps 1, 3, 4 (largest component) and 6.
"""

from __future__ import annotations

import numpy as np

from gafkit.trackers.config import SegmentConfig

FOREHEAD, CHIN = 10, 152
"""mediapipe FaceMesh indices of the top of the forehead and the bottom of the chin."""


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


def refine_mask(
    cfg: SegmentConfig,
    probability: np.ndarray,
    landmarks: np.ndarray | None,
    inside: tuple[float, float, float, float] | None = None,
) -> np.ndarray:
    """Steps 1-6 above.

    Args:
        probability: ``[S, S]`` float person probability.
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
    if landmarks is not None and cfg.neck_below_chin is not None:
        top, chin = landmarks[FOREHEAD, :2], landmarks[CHIN, :2]
        down = chin - top
        face_height = float(np.linalg.norm(down))
        if face_height > 0:
            down /= face_height
            ys, xs = np.mgrid[0:size_y, 0:size_x]
            along = (xs + 0.5 - chin[0]) * down[0] + (ys + 0.5 - chin[1]) * down[1]
            mask &= along <= cfg.neck_below_chin * face_height
    if inside is not None:
        left, top_, right, bottom = inside
        ys, xs = np.mgrid[0:size_y, 0:size_x]
        centre_x, centre_y = xs + 0.5, ys + 0.5
        mask &= (centre_x >= left) & (centre_x <= right) & (centre_y >= top_) & (centre_y <= bottom)
    return mask


class Segmenter:
    """mediapipe selfie segmentation plus :func:`refine_mask`; a context manager.

    Example::

        with Segmenter(SegmentConfig()) as seg:
            mask = seg(crop_rgb, landmarks_crop)  # [S, S] bool
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
        """``[S, S]`` bool foreground of the crop ``rgb`` ``[S, S, 3]`` uint8."""
        return refine_mask(self.cfg, self.probability(rgb), landmarks, inside)
