"""Stage 2: landmarks on a real face photo, subject choice, frames without the subject."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from face_media import FACE, canvas
from skimage.data import astronaut

from gafkit.trackers.config import DetectConfig
from gafkit.trackers.detect import detect_landmarks


def test_finds_the_astronaut():
    det = detect_landmarks(DetectConfig(), [astronaut()])
    assert det.valid.tolist() == [True] and det.landmarks.shape == (1, 478, 3)
    lo, hi = det.landmarks[0, :, :2].min(0), det.landmarks[0, :, :2].max(0)
    # The face sits at about x 175..275, y 70..180 in the 512x512 photo.
    assert 150 < lo[0] < 200 and 250 < hi[0] < 300 and 50 < lo[1] < 100 and 160 < hi[1] < 210


def test_two_faces_one_subject_throughout():
    small = cv2.resize(FACE, (180, 195))
    frames = []
    for t in range(5):  # both people drift; the small one moves towards the centre
        frames.append(canvas(400, 800, (FACE, 60 + 10 * t, 100), (small, 520 - 30 * t, 120)))
    det = detect_landmarks(DetectConfig(), frames)
    assert det.valid.all()
    centres = det.landmarks[:, :, 0].mean(1)
    assert np.all(centres < 330)  # always the larger face on the left
    assert np.all(np.abs(np.diff(centres) - 10) < 4)


def test_face_leaving_the_frame_fails_those_frames():
    xs = [100, 110, 120, 700, 700, 130]  # frames 3 and 4: the face is outside the frame
    frames = [canvas(400, 640, (FACE, x, 80)) if x < 640 else canvas(400, 640) for x in xs]
    det = detect_landmarks(DetectConfig(), frames)
    assert det.valid.tolist() == [True, True, True, False, False, True]
    assert det.reasons[3] == "no face found" and det.reasons[0] is None


def test_other_face_does_not_take_over():
    frames = [canvas(400, 800, (FACE, 60, 100))] * 2 + [canvas(400, 800, (FACE, 540, 100))] * 2
    det = detect_landmarks(DetectConfig(), frames)
    assert det.valid.tolist() == [True, True, False, False]
    assert "subject not found" in det.reasons[2]


@pytest.mark.parametrize("fallback", [False, True])
def test_small_face_needs_the_fallback(fallback):
    small = cv2.resize(FACE, (240, 260))
    frame = canvas(720, 1280, (small, 900, 300))
    det = detect_landmarks(DetectConfig(fallback=fallback), [frame])
    assert det.valid[0] == fallback
    if fallback:
        assert det.methods == ["fallback"]
        x = det.landmarks[0, :, 0]
        assert 900 < x.min() and x.max() < 1140
