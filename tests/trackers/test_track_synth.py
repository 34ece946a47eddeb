"""The whole tracking path on a synthetic photo-textured subject, measured against its ground truth
(issue #5; the 512 px numbers come from benchmarks/bench_track_synth.py).

Small: 12 frames at 256 px (mediapipe finds the astronaut render at this size), preset ``fast``. The
bounds are generous, but a crop transform applied wrongly (tens of pixels) or a mirrored or unmapped
rotation (tens of degrees at +-25 degrees yaw) fails them. Doctored copies of the output (a crop.json
without the window, mirrored rotations in head_params.npz) check that the measure sees such errors.
"""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from gafkit.config import build_config
from gafkit.heads import HeadParams
from gafkit.heads.base import axis_angle_to_matrix
from gafkit.synth import SynthConfig
from gafkit.synth.config import NovelViewConfig
from gafkit.synth.generate import run_synth
from gafkit.trackers.accuracy import geodesic_deg, track_accuracy
from gafkit.trackers.track import PRESETS, run_track

FRAMES, SIZE = 12, 256


@pytest.fixture(scope="module")
def tracked_subject(tmp_path_factory):
    root = tmp_path_factory.mktemp("track_synth")
    subject = run_synth(SynthConfig(frames=FRAMES, size=SIZE, appearance="photo",
                                    novel=NovelViewConfig(every=FRAMES)), root / "subject")
    cfg = build_config(PRESETS["fast"](), sets=["overlay=false"], flags={"preprocess.crop.size": SIZE})
    tracked = run_track(cfg, subject / "images", root / "tracked", device="cpu")
    return subject, tracked


def test_tracked_photo_subject_matches_ground_truth(tracked_subject):
    subject, tracked = tracked_subject
    acc = track_accuracy(tracked, subject)
    assert acc.frames == list(range(FRAMES))  # every frame detected and matched to its source
    assert acc.image_size == SIZE
    s = acc.summary()
    assert s["face_vertex_error_px_mean"] < 6.0, s
    assert s["rotation_error_deg_mean"] < 6.0 and s["rotation_error_deg_max"] < 10.0, s
    assert acc.detector_px.shape == (FRAMES, 478) and 0.0 < s["detector_error_px_mean"] < 6.0, s
    crop = json.loads((tracked / "crop.json").read_text())
    assert crop["side"] < SIZE  # the crop really differs from the subject image: the mapping matters


def test_measure_sees_a_wrong_crop_mapping(tracked_subject, tmp_path):
    subject, tracked = tracked_subject
    doctored = tmp_path / "tracked"
    shutil.copytree(tracked, doctored)
    crop = json.loads((doctored / "crop.json").read_text())
    # As if the crop were the whole frame: off by the window's corner and scale.
    crop.update(x0=0, y0=0, side=crop["size"])
    (doctored / "crop.json").write_text(json.dumps(crop))
    good = track_accuracy(tracked, subject).summary()["face_vertex_error_px_mean"]
    bad = track_accuracy(doctored, subject).summary()["face_vertex_error_px_mean"]
    assert bad > 6.0 and bad > 3 * good, (good, bad)


def test_measure_sees_a_mirrored_head_turn(tracked_subject, tmp_path):
    subject, tracked = tracked_subject
    doctored = tmp_path / "tracked"
    shutil.copytree(tracked, doctored)
    with np.load(doctored / "head_params.npz") as data:
        params = dict(data)
    params["rotation"] = params["rotation"] * np.array([1.0, -1.0, -1.0], dtype=np.float32)  # yaw, roll mirrored
    np.savez(doctored / "head_params.npz", **params)
    truth = HeadParams.load_npz(subject / "gt" / "params.npz")
    yaw = np.degrees(np.abs(truth.rotation[:, 1].numpy()))
    err = track_accuracy(doctored, subject).rotation_deg
    assert err.mean() > 6.0 and err.mean() > yaw.mean(), (err.mean(), yaw.mean())


def test_geodesic_angle():
    deg = math.radians(1.0)
    a = axis_angle_to_matrix(torch.tensor([[0.0, 25 * deg, 0.0], [0.3, -0.2, 0.1]]))
    b = axis_angle_to_matrix(torch.tensor([[0.0, -25 * deg, 0.0], [0.3, -0.2, 0.1]]))
    np.testing.assert_allclose(geodesic_deg(a, b).numpy(), [50.0, 0.0], atol=0.05)
