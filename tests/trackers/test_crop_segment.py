"""Stages 3 and 4: crop maths and foreground masks."""

from __future__ import annotations

import numpy as np
from skimage.data import astronaut

from gafkit.trackers.config import CropConfig, DetectConfig, SegmentConfig
from gafkit.trackers.crop import CropTransform, fit_crop
from gafkit.trackers.detect import detect_landmarks
from gafkit.trackers.segment import Segmenter, refine_mask, soft_matte


def test_crop_round_trip_and_pixel_convention():
    crop = CropTransform(x0=-20, y0=30, side=200, size=100, frame_width=160, frame_height=300)
    rng = np.random.default_rng(0)
    pts = rng.uniform(-50, 300, size=(10, 3))
    assert np.allclose(crop.crop_to_frame(crop.frame_to_crop(pts)), pts)
    # Frame pixel (x, y) covers [x, x+1); a 2x downscale maps the 2x2 block at (-20+2u, 30+2v)
    # onto crop pixel (u, v), whose centre is (u+0.5, v+0.5).
    frame = np.zeros((300, 160), np.float32)
    frame[30 + 2 * 40 : 30 + 2 * 41, 2 * 35 - 20 : 2 * 36 - 20] = 1.0
    out = crop.apply(frame)
    assert out.shape == (100, 100) and np.argwhere(out > 0.99).tolist() == [[40, 35]]
    centre = crop.frame_to_crop(np.array([2 * 35 - 20 + 1.0, 30 + 2 * 40 + 1.0]))
    assert np.allclose(centre, [35.5, 40.5])
    # x < 0 is padding: black by default, the edge pixel with pad="edge".
    ones = np.ones((300, 160, 3), np.uint8)
    assert crop.apply(ones)[:, :10].max() == 0 and crop.apply(ones, pad="edge").min() == 1
    assert crop.inside == (10.0, 0.0, 90.0, 100.0)
    assert CropTransform.from_dict(crop.to_dict()) == crop


def test_fit_crop_is_robust_to_outlier_frames():
    base = np.stack(np.meshgrid(np.linspace(100, 200, 20), np.linspace(50, 170, 24)), -1).reshape(-1, 2)
    lmk = np.repeat(base[None, :478], 40, 0).astype(np.float64)
    lmk[3] += 250  # one far-off frame does not move the crop
    valid = np.ones(40, bool)
    valid[5] = False
    lmk[5] = np.nan
    crop = fit_crop(CropConfig(size=64, scale=2.0, shift_up=0.0, percentile=5.0), lmk, valid, 400, 400)
    # The centred window would start at y = -10; it is shifted into the frame instead of padded.
    assert crop.side == 240 and (crop.x0, crop.y0) == (30, 0)


def test_mask_covers_the_face_not_the_corners():
    image = astronaut()
    det = detect_landmarks(DetectConfig(), [image])
    crop = fit_crop(CropConfig(size=256), det.landmarks, det.valid, 512, 512)
    rgb = crop.apply(image)
    lmk = crop.frame_to_crop(det.landmarks[0])
    with Segmenter(SegmentConfig()) as seg:
        alpha = seg(rgb, lmk, crop.inside)
    assert alpha.dtype == np.float32 and 0 <= alpha.min() and alpha.max() <= 1
    assert 0 < ((alpha > 0.02) & (alpha < 0.98)).mean() < 0.05  # soft only along the edge
    mask = alpha > 0.5
    x, y = np.clip(lmk[:, :2].astype(int), 0, 255).T
    assert mask[y, x].mean() > 0.98  # every landmark is foreground
    for corner in (mask[:20, :20], mask[:20, -20:]):
        assert not corner.any()
    # Nothing more than the neck allowance below the chin.
    chin_y, face_h = lmk[152, 1], lmk[152, 1] - lmk[10, 1]
    rows = np.nonzero(mask.any(1))[0]
    assert rows.max() <= chin_y + 0.5 * face_h + 2


def test_refine_mask_fills_holes_and_drops_other_blobs():
    prob = np.zeros((64, 64), np.float32)
    prob[10:40, 10:40] = 1.0
    prob[20:25, 20:25] = 0.0  # a hole (an open mouth the segmenter missed)
    prob[50:60, 50:60] = 1.0  # someone else
    mask = refine_mask(SegmentConfig(neck_below_chin=None), prob, None)
    assert mask[22, 22] and not mask[55, 55] and mask.sum() == 900


def _face(size=128):
    """Landmarks on an upright ellipse (forehead index 10 at the top, chin 152 at the bottom) and an
    image: skin face and neck, green sweater from just under the chin and rising beside the jaw."""
    from gafkit.trackers.segment import CHIN, FOREHEAD

    angles = np.linspace(0, 2 * np.pi, 478, endpoint=False)
    cx, cy, rx, ry = 64.0, 50.0, 18.0, 24.0
    lmk = np.stack([cx + rx * np.sin(angles), cy - ry * np.cos(angles)], -1)
    lmk[FOREHEAD], lmk[CHIN] = (cx, cy - ry), (cx, cy + ry)
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    rgb = np.zeros((size, size, 3), np.uint8)
    rgb[:] = (40, 150, 60)  # the sweater (everything the segmenter calls person but is not skin)
    face = ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1
    neck = (np.abs(xs - cx) < 9) & (ys > cy) & (ys < cy + ry + 6)
    rgb[face | neck] = (205, 150, 120)
    rgb += np.random.default_rng(0).integers(0, 6, rgb.shape, dtype=np.uint8)  # texture for the MAD
    person = np.ones((size, size), np.float32)
    person[: int(cy - ry - 8)] = 0  # background above the hair
    person[: int(cy + 5), : int(cx - 40)] = person[: int(cy + 5), int(cx + 40) :] = 0
    return lmk, rgb, person, (xs, ys)


def test_head_region_drops_shoulders_and_clothing_under_the_chin():
    lmk, rgb, person, _ = _face()
    cfg = SegmentConfig()
    mask = refine_mask(cfg, person, lmk, rgb=rgb)
    whole = refine_mask(SegmentConfig(head_width=None, neck_skin=None), person, lmk, rgb=rgb)
    assert whole[90, 10] and whole[86, 64]  # the old mask: shoulders and sweater in
    assert mask[50, 64] and mask[30, 64] and mask[78, 64]  # face, forehead, skin of the neck
    assert not mask[90, 10] and not mask[80, 30]  # shoulder, sweater beside the neck
    assert not mask[86, 64]  # under the neck: sweater, dropped
    assert mask[22, 64] and mask[22, 50]  # room for hair above the forehead
    # Without colour the head region alone still removes what is far to the side.
    geometric = refine_mask(cfg, person, lmk)
    assert geometric[86, 64] and not geometric[90, 10]


def test_soft_matte_snaps_a_misplaced_mask_edge_to_the_image_edge():
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[:, :40], rgb[:, 40:] = (200, 150, 120), (30, 80, 40)  # skin | sweater, edge at x = 40
    rgb += np.random.default_rng(0).integers(0, 4, rgb.shape, dtype=np.uint8)
    short, wide = np.zeros((64, 64), bool), np.zeros((64, 64), bool)
    short[:, :37], wide[:, :43] = True, True  # the segmenter's edge 3 px off either way
    a, b = soft_matte(rgb, short, 6)[32], soft_matte(rgb, wide, 6)[32]
    assert a[39] - a[40] > 0.4 and a[40] < 0.05 and a[38] > 0.45  # the drop moved to the image's edge
    assert b[39] > 0.95 and b[39] - b[40] > 0.4
    assert a[:25].min() == 1 and a[50:].max() == 0  # hard far from the edge
