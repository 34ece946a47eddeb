"""Stage 2, detect: 478 mediapipe FaceMesh landmarks (with iris) per frame, for one subject.

FaceMesh runs in tracking mode (``static_image_mode=False``): it detects a face once and then
follows it, which is faster and steadier than detecting on every frame. When it finds no face that
can be the subject, the full-range face detector looks for the face on the whole frame and a static
FaceMesh runs on a square region around it; this finds small faces that FaceMesh's short-range
detector misses (a person far from the camera in a landscape frame).

With several people in view one subject is chosen on the first frame that has a face: the largest,
most central one. On later frames the subject is the face closest to the subject's last known
position, and only within ``max_jump`` face widths of it, so another face never takes over.

Landmark coordinates are frame pixels with pixel ``j`` covering ``[j, j+1)`` (mediapipe's
normalized x times the width follows this convention); ``z`` is mediapipe's relative depth times
the frame width, so it has the same scale as x.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from gafkit.console import log, track
from gafkit.trackers.config import DetectConfig

NUM_LANDMARKS = 478


@dataclass
class Detections:
    """Landmarks of the subject in every frame."""

    landmarks: np.ndarray
    """``[N, 478, 3]`` float32 frame pixels (x, y, z*width); NaN where the frame failed."""
    valid: np.ndarray
    """``[N]`` bool, True where the subject's face was found."""
    reasons: list[str | None] = field(default_factory=list)
    """Per frame: ``None`` when valid, else why it failed."""
    methods: list[str | None] = field(default_factory=list)
    """Per frame: ``"track"`` (tracking FaceMesh), ``"fallback"`` (detector + static FaceMesh)."""


def _to_pixels(face, width: int, height: int) -> np.ndarray:
    pts = np.array([(p.x, p.y, p.z) for p in face.landmark], dtype=np.float32)
    return pts * np.array([width, height, width], dtype=np.float32)


def _box(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre ``[2]`` and width of the 2D bounding box of ``points`` ``[K, >=2]``."""
    lo, hi = points[:, :2].min(0), points[:, :2].max(0)
    return (lo + hi) / 2, float(max(hi[0] - lo[0], 1e-6))


class FaceDetector:
    """Stateful per-frame detector (tracking mode keeps state between calls); a context manager.

    Example::

        with FaceDetector(DetectConfig()) as det:
            for rgb in frames:  # [H, W, 3] uint8
                landmarks, reason, method = det(rgb)  # [478, 3] or None
    """

    def __init__(self, cfg: DetectConfig):
        import mediapipe as mp

        self.cfg = cfg
        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=False,
            max_num_faces=cfg.max_faces,
            refine_landmarks=True,
            min_detection_confidence=cfg.min_detection_confidence,
            min_tracking_confidence=cfg.min_tracking_confidence,
        )
        self._static = None
        self._boxes = None
        if cfg.fallback:
            self._static = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=True,
                max_num_faces=1,
                refine_landmarks=True,
                min_detection_confidence=cfg.min_detection_confidence,
            )
            # model 1 is the full-range detector (faces up to ~5 m away).
            self._boxes = mp.solutions.face_detection.FaceDetection(
                model_selection=1, min_detection_confidence=cfg.min_detection_confidence
            )
        self._last: tuple[np.ndarray, float] | None = None
        """Centre and width of the subject's face where it was last seen."""

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for solution in (self._mesh, self._static, self._boxes):
            if solution is not None:
                solution.close()

    def _choose(self, centres: list[np.ndarray], widths: list[float], shape) -> int | None:
        """Index of the subject among candidate faces, or None when none can be it."""
        if not centres:
            return None
        if self._last is None:
            height, width = shape[:2]
            half_diag = 0.5 * float(np.hypot(width, height))
            mid = np.array([width / 2, height / 2])
            scores = [
                w * w * max(0.05, 1.0 - float(np.linalg.norm(c - mid)) / half_diag)
                for c, w in zip(centres, widths)
            ]
            return int(np.argmax(scores))
        last_centre, last_width = self._last
        dists = [float(np.linalg.norm(c - last_centre)) / last_width for c in centres]
        best = int(np.argmin(dists))
        return best if dists[best] <= self.cfg.max_jump else None

    def _fallback(self, rgb: np.ndarray) -> np.ndarray | None:
        import cv2

        height, width = rgb.shape[:2]
        found = self._boxes.process(rgb).detections or []
        centres, widths, sides = [], [], []
        for det in found:
            box = det.location_data.relative_bounding_box
            w, h = box.width * width, box.height * height
            centres.append(np.array([(box.xmin + box.width / 2) * width, (box.ymin + box.height / 2) * height]))
            widths.append(float(w))
            sides.append(float(max(w, h)) * self.cfg.fallback_region)
        pick = self._choose(centres, widths, rgb.shape)
        if pick is None:
            return None
        # A square region around the box, zero-padded where it leaves the frame, resized to 384 px.
        side = max(sides[pick], 8.0)
        x0, y0 = centres[pick] - side / 2
        res = 384
        s = res / side
        matrix = np.array([[s, 0, s * (0.5 - x0) - 0.5], [0, s, s * (0.5 - y0) - 0.5]], dtype=np.float64)
        region = cv2.warpAffine(rgb, matrix, (res, res), flags=cv2.INTER_LINEAR)
        faces = self._static.process(region).multi_face_landmarks
        if not faces:
            return None
        pts = _to_pixels(faces[0], res, res) / s
        pts[:, 0] += x0
        pts[:, 1] += y0
        return pts

    def __call__(self, rgb: np.ndarray) -> tuple[np.ndarray | None, str | None, str | None]:
        """Landmarks ``[478, 3]`` of the subject in ``rgb`` ``[H, W, 3]`` uint8 (or None), the
        failure reason (or None) and the method that found it."""
        rgb = np.ascontiguousarray(rgb)
        height, width = rgb.shape[:2]
        faces = self._mesh.process(rgb).multi_face_landmarks or []
        candidates = [_to_pixels(f, width, height) for f in faces]
        boxes = [_box(c) for c in candidates]
        pick = self._choose([b[0] for b in boxes], [b[1] for b in boxes], rgb.shape)
        points, method = (candidates[pick], "track") if pick is not None else (None, None)
        if points is None and self._static is not None:
            points = self._fallback(rgb)
            method = "fallback" if points is not None else None
            if points is not None and self._last is not None:
                # The fallback box passed the jump test; check the mesh it produced as well.
                centre, _ = _box(points)
                if float(np.linalg.norm(centre - self._last[0])) / self._last[1] > self.cfg.max_jump:
                    points, method = None, None
        if points is None:
            reason = "no face found" if not candidates else f"subject not found ({len(candidates)} other face(s))"
            return None, reason, None
        self._last = _box(points)
        return points, None, method


def detect_landmarks(cfg: DetectConfig, frames: Iterable[np.ndarray], total: int | None = None) -> Detections:
    """Run the detector over ``frames`` (each ``[H, W, 3]`` uint8 RGB, in time order).

    Example::

        det = detect_landmarks(DetectConfig(), [skimage.data.astronaut()])
        det.landmarks.shape  # (1, 478, 3)
    """
    start = time.perf_counter()
    landmarks, valid, reasons, methods = [], [], [], []
    with FaceDetector(cfg) as detector:
        for rgb in track(frames, "detect faces", total=total):
            points, reason, method = detector(rgb)
            ok = points is not None
            landmarks.append(points if ok else np.full((NUM_LANDMARKS, 3), np.nan, np.float32))
            valid.append(ok)
            reasons.append(reason)
            methods.append(method)
    result = Detections(
        landmarks=np.stack(landmarks).astype(np.float32) if landmarks else np.zeros((0, NUM_LANDMARKS, 3), np.float32),
        valid=np.array(valid, dtype=bool),
        reasons=reasons,
        methods=methods,
    )
    took = time.perf_counter() - start
    n = len(valid)
    log.info(
        "detect: face in %d of %d frames (%d by fallback), %.1f frames/s",
        int(result.valid.sum()), n, sum(m == "fallback" for m in methods), n / max(took, 1e-9),
    )
    return result
