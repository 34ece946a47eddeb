"""Stage 3: the crop window stays inside the frame (and inside baked-in black bars) instead of padding."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from skimage.data import astronaut

from gafkit.trackers.config import CropConfig, DetectConfig, PreprocessConfig
from gafkit.trackers.crop import CropTransform, find_bars, fit_crop, place_window
from gafkit.trackers.detect import detect_landmarks
from gafkit.trackers.preprocess import preprocess


def box_landmarks(left: float, top: float, right: float, bottom: float, frames: int = 3) -> np.ndarray:
    """``[frames, 478, 3]`` landmarks filling the box (what fit_crop reads of them is their extent)."""
    xs, ys = np.meshgrid(np.linspace(left, right, 22), np.linspace(top, bottom, 22))
    pts = np.stack([xs.ravel(), ys.ravel(), np.zeros(xs.size)], -1)[:478]
    return np.repeat(pts[None], frames, 0)


def padded_pixels(crop) -> float:
    left, top, right, bottom = crop.inside
    return crop.size * crop.size - (right - left) * (bottom - top)


def test_big_face_in_a_square_frame_uses_the_whole_frame():
    # d20-like: a 480x480 talking head whose 2x window (640 px) is larger than the frame.
    lmk = box_landmarks(130, 110, 350, 380)
    crop = fit_crop(CropConfig(size=128), lmk, np.ones(3, bool), 480, 480)
    assert (crop.x0, crop.y0, crop.side) == (0, 0, 480)
    assert padded_pixels(crop) == 0
    # Without fitting to the frame (min_scale = scale keeps the content of the full 2x window, which
    # is the whole frame here) the result is the same: padding would have shown nothing more.
    same = fit_crop(CropConfig(size=128, min_scale=2.0), lmk, np.ones(3, bool), 480, 480)
    assert (same.x0, same.y0, same.side) == (0, 0, 480)


def test_face_near_the_edge_is_shifted_in_not_padded():
    lmk = box_landmarks(20, 40, 120, 160)  # 120-px face near the top-left of a 640x480 frame
    cfg = CropConfig(size=64, shift_up=0.1)
    crop = fit_crop(cfg, lmk, np.ones(3, bool), 640, 480)
    assert crop.side == 240  # the full scale-2 window fits the frame: same size, just moved
    assert (crop.x0, crop.y0) == (0, 0) and padded_pixels(crop) == 0
    inner = crop.frame_to_crop(lmk[0])[:, :2]
    assert inner.min() >= 0 and inner.max() <= crop.size


def test_close_up_in_a_landscape_frame_pads_only_what_it_must():
    # The head fills a 320x180 frame: even the min_scale window is taller than the frame.
    lmk = box_landmarks(110, 30, 210, 150)
    cfg = CropConfig(size=100, scale=2.0, shift_up=0.0, min_scale=1.6)
    crop = fit_crop(cfg, lmk, np.ones(3, bool), 320, 180)
    essential = 1.6 * 120  # 192 > 180: padding is unavoidable, vertically only
    assert crop.side == 192 and crop.side < 240
    assert 0 <= crop.x0 and crop.x0 + crop.side <= 320  # no horizontal padding
    assert crop.y0 <= 0 and crop.y0 + crop.side >= 180  # the whole frame height is shown
    assert padded_pixels(crop) == pytest.approx((crop.side - 180) * crop.side * crop.scale**2)
    centre = np.array([160.0, 90.0])
    lo, hi = np.clip(centre - essential / 2, 0, [320, 180]), np.clip(centre + essential / 2, 0, [320, 180])
    assert crop.x0 <= lo[0] and crop.x0 + crop.side >= hi[0]


def test_place_window_guarantees_on_random_layouts():
    rng = np.random.default_rng(3)
    for _ in range(500):
        width, height = rng.integers(40, 800, size=2)
        face = rng.uniform(10, 1.2 * max(width, height))
        centre = rng.uniform(-0.2, 1.2, size=2) * [width, height]
        scale = rng.uniform(1.2, 3.0)
        min_scale = rng.uniform(1.0, scale)
        x0, y0, side = place_window(centre, scale * face, min_scale * face, int(width), int(height))
        want = max(8, round(scale * face))
        assert side <= want + 2
        # Every frame pixel of the essential window is in the result.
        lo = np.clip(centre - min_scale * face / 2, 0, [width, height])
        hi = np.clip(centre + min_scale * face / 2, 0, [width, height])
        assert x0 <= lo[0] + 1e-9 and y0 <= lo[1] + 1e-9
        assert x0 + side >= hi[0] - 1e-9 and y0 + side >= hi[1] - 1e-9
        for start, length in ((x0, width), (y0, height)):
            if side <= length:  # fits: entirely inside the frame
                assert 0 <= start and start + side <= length
            else:  # too big for this axis: it covers the whole axis
                assert start <= 0 and start + side >= length
        if side > min(width, height):  # padding only where the essential part needs the room
            assert side <= max(np.ceil(hi - lo).max() + 1, min(width, height))


def test_cropped_astronaut_has_no_padding():
    # A tight head shot (240x260): the window centred on the face would start above the picture.
    frame = astronaut()[20:280, 100:340]
    det = detect_landmarks(DetectConfig(), [frame])
    assert det.valid[0]
    cfg = CropConfig(size=128)
    lo, hi = det.landmarks[0, :, :2].min(0), det.landmarks[0, :, :2].max(0)
    centred_top = (lo[1] + hi[1]) / 2 - cfg.shift_up * (hi[1] - lo[1]) - cfg.scale * (hi - lo).max() / 2
    assert centred_top < -5  # what the old centred window did: rows of black padding on top
    crop = fit_crop(cfg, det.landmarks, det.valid, 240, 260)
    assert padded_pixels(crop) == 0 and crop.y0 == 0
    # Every crop pixel is picture: the crop is the frame window, resized.
    window = frame[crop.y0 : crop.y0 + crop.side, crop.x0 : crop.x0 + crop.side]
    assert window.shape[:2] == (crop.side, crop.side)
    lmk = crop.frame_to_crop(det.landmarks[0])[:, :2]
    assert lmk.min() > 2 and lmk.max() < 126  # the whole face is in the crop


def pillarboxed(left: int = 40, right: int = 200, frames: int = 3, seed: int = 0) -> list[np.ndarray]:
    """Pictures spanning x ``left..right`` of 240x120 frames, black bars (compressed: 0..6) beside them."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(frames):
        frame = rng.integers(0, 7, (120, 240, 3), dtype=np.uint8)
        frame[:, left:right] = rng.integers(30, 255, (120, right - left, 3), dtype=np.uint8)
        out.append(frame)
    return out


def test_find_bars():
    frames = pillarboxed()
    assert find_bars(frames) == (40, 0, 200, 120)
    letterbox = [np.ascontiguousarray(f.transpose(1, 0, 2)) for f in frames]
    assert find_bars(letterbox) == (0, 40, 120, 200)
    assert find_bars([np.full((50, 60, 3), 128, np.uint8)]) is None  # no bars
    assert find_bars([np.zeros((50, 60, 3), np.uint8)]) is None  # a black video: nothing to go by
    # A dark edge that is lit in one frame is picture, not a bar.
    lit = [f.copy() for f in frames]
    lit[1][60, 5] = 200
    assert find_bars(lit) == (5, 0, 200, 120)


def test_crop_avoids_bars_like_padding():
    frames = pillarboxed()
    content = find_bars(frames)
    lmk = box_landmarks(70, 20, 130, 90)  # face 70 px high in the 160-px-wide picture
    crop = fit_crop(CropConfig(size=64), lmk, np.ones(3, bool), 240, 120, content)
    assert crop.side == 120 and crop.x0 >= 40 and crop.x0 + crop.side <= 200  # the full height, between the bars
    assert (crop.apply(frames[0]).max(-1) >= 30).all()  # no bar pixel in the crop
    assert padded_pixels(crop) == 0
    assert CropTransform.from_dict(json.loads(json.dumps(crop.to_dict()))) == crop
    # A portrait picture (80x120) too narrow for the head: the bars are filled and masked like padding.
    narrow = find_bars(pillarboxed(80, 160))
    assert narrow == (80, 0, 160, 120)
    crop = fit_crop(CropConfig(size=100, min_scale=1.6), box_landmarks(95, 20, 145, 90), np.ones(3, bool), 240, 120,
                    narrow)
    assert crop.side == 104 and crop.y0 == 0 and crop.x0 < 80 and crop.x0 + crop.side > 160  # 1.6 x 70 px, clipped at the top
    left, top, right, bottom = crop.inside
    assert (left, right) == (pytest.approx((80 - crop.x0) * crop.scale), pytest.approx((160 - crop.x0) * crop.scale))
    frame = np.full((120, 240, 3), 255, np.uint8)
    frame[:, :80] = frame[:, 160:] = 3
    assert crop.apply(frame, pad="edge").min() == 255  # bars replaced by the picture's edge
    black = crop.apply(frame)
    assert black[:, : int(left) - 1].max() == 0 and black[:, int(np.ceil(right)) + 1 :].max() == 0


def test_preprocess_crops_inside_pillarbox_bars(tmp_path):
    # A talking head inside a 4:3 picture, pillarboxed into a 16:9-ish frame.
    picture = np.asarray(Image.fromarray(astronaut()[0:300, 60:400]).resize((240, 212)))
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        frame = np.zeros((212, 376, 3), np.uint8)
        frame[:, 68:308] = np.roll(picture, 2 * i, axis=1)
        Image.fromarray(frame).save(folder / f"{i}.png")
    cfg = PreprocessConfig()
    cfg.crop.size = 128
    preprocess(cfg, folder, tmp_path / "work")
    info = json.loads((tmp_path / "work" / "crop.json").read_text())
    assert info["content"] == [68, 0, 308, 212]
    assert info["x0"] >= 68 and info["x0"] + info["side"] <= 308 and info["inside"] == [0.0, 0.0, 128.0, 128.0]
    for i in range(3):
        image = np.asarray(Image.open(tmp_path / "work" / "images" / f"{i:05d}.png"))
        assert (image.max(axis=(0, 2)) > 24).all()  # no black column left
