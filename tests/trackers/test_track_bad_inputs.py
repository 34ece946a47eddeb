"""``gafkit track`` end to end on awkward inputs: a clear result or one error line, exit 2, no OUT.

Each run is small (128-px crops, a few frames, a short fit) so the file stays at a few seconds per case.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from face_media import FACE, canvas, write_video
from PIL import Image
from typer.testing import CliRunner

from gafkit.cli import app

runner = CliRunner()
QUICK = ["--size", "128", "--preset", "fast", "--set", "fit.rigid_steps=20", "--set", "fit.steps=30"]


def track(source: Path, out: Path, *extra: str):
    return runner.invoke(app, ["--device", "cpu", "track", str(source), "-o", str(out), *QUICK, *extra])


def assert_user_error(result, out: Path, *words: str) -> str:
    """Exit 2, exactly one ``error:`` line (the last), holding ``words``; neither OUT nor OUT.partial."""
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and result.output.strip().endswith(errors[0]), result.output
    for word in words:
        assert word in errors[0], errors[0]
    assert not out.exists() and not Path(str(out) + ".partial").exists()
    return errors[0]


def summary(out: Path) -> dict:
    return json.loads((out / "tracking.json").read_text())["summary"]


def test_two_faces_track_the_larger_central_one(tmp_path):
    small = cv2.resize(FACE, (150, 162))
    frames = [canvas(320, 640, (FACE, 40 + 6 * t, 40), (small, 460 - 6 * t, 80)) for t in range(4)]
    out = tmp_path / "out"
    result = track(write_video(tmp_path / "two.mp4", frames), out, "--set", "overlay=false")
    assert result.exit_code == 0, result.output
    assert summary(out)["frames_failed"] == 0
    lmk = np.load(out / "landmarks.npz")
    assert (lmk["landmarks_frame"][:, :, 0].mean(1) < 320).all()  # always the big face on the left
    crop = json.loads((out / "crop.json").read_text())
    assert crop["x0"] + crop["side"] / 2 < 320  # the crop sits on the subject, not between the two


def test_face_leaving_the_frame_drops_those_frames(tmp_path):
    xs = [100, 110, 700, 700, 120, 130]  # frames 2 and 3: the face is outside the frame
    frames = [canvas(360, 640, (FACE, x, 60)) if x < 640 else canvas(360, 640) for x in xs]
    out = tmp_path / "out"
    result = track(write_video(tmp_path / "leaves.mp4", frames), out)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "tracking.json").read_text())
    assert metrics["summary"]["frames_kept"] == 4 and metrics["summary"]["frames_failed"] == 2
    assert [f["source_index"] for f in metrics["failed_frames"]] == [2, 3]
    assert {f["reason"] for f in metrics["failed_frames"]} == {"no face found"}
    transforms = json.loads((out / "transforms.json").read_text())
    assert [f["timestep_index_original"] for f in transforms["frames"]] == [0, 1, 4, 5]
    assert (out / "overlay.mp4").is_file()


def test_4k_portrait_with_rotation_metadata_gives_upright_crops(tmp_path):
    # A phone video: stored 3840x2160 landscape, shown 2160x3840 portrait (display matrix 90 degrees).
    face = cv2.resize(FACE, (960, 1040))
    shown = np.full((3840, 2160, 3), 180, np.uint8)
    shown[1200:2240, 600:1560] = face
    stored = np.ascontiguousarray(np.rot90(shown, k=-1))  # players turn it back counter-clockwise
    video = write_video(tmp_path / "phone.mp4", [stored] * 2, rotation=90, options={"preset": "ultrafast"})
    out = tmp_path / "out"
    result = track(video, out, "--set", "overlay=false")
    assert result.exit_code == 0, result.output
    frames = json.loads((out / "frames.json").read_text())
    assert (frames["width"], frames["height"]) == (288, 512)  # portrait, downscaled while decoding
    assert frames["decode_scale"] == pytest.approx(512 / 3840)
    lmk = np.load(out / "landmarks.npz")
    assert lmk["valid"].all()
    crop_pts = lmk["landmarks"][0]
    forehead, chin, left_eye, right_eye = crop_pts[10], crop_pts[152], crop_pts[33], crop_pts[263]
    face_height = chin[1] - forehead[1]
    assert face_height > 30  # chin below forehead: upright, not sideways or upside down
    assert abs(chin[0] - forehead[0]) < 0.2 * face_height
    assert abs(left_eye[1] - right_eye[1]) < 0.1 * face_height  # eyes level
    # Landmarks in source pixels fall on the pasted face.
    source_pts = lmk["landmarks_frame"][0, :, :2] / frames["decode_scale"]
    assert (source_pts[:, 0] > 600).all() and (source_pts[:, 0] < 1560).all()
    assert (source_pts[:, 1] > 1200).all() and (source_pts[:, 1] < 2240).all()
    image = np.asarray(Image.open(out / "images" / "00000.png"))
    assert image.shape == (128, 128, 3)


def test_grayscale_video_in_a_path_with_spaces_and_non_ascii(tmp_path):
    folder = tmp_path / "vidéo à tester 顔"
    folder.mkdir()
    gray = cv2.cvtColor(canvas(300, 300, (FACE, 30, 20)), cv2.COLOR_RGB2GRAY)
    video = write_video(folder / "clip ü.mkv", [gray] * 3, codec="ffv1", pix_fmt="gray")
    out = tmp_path / "résultat 顔"
    result = track(video, out, "--set", "overlay=false")
    assert result.exit_code == 0, result.output
    assert summary(out)["frames_kept"] == 3
    image = np.asarray(Image.open(out / "images" / "00001.png"))
    assert image.shape == (128, 128, 3)
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()


def test_truncated_zero_frame_and_empty_inputs_exit_2(tmp_path):
    good = write_video(tmp_path / "good.mp4", [canvas(64, 64)] * 10)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    zero = tmp_path / "zero.mp4"
    with av.open(str(zero), "w") as container:  # a valid container with a video stream, no frames
        stream = container.add_stream("libx264", rate=10)
        stream.width = stream.height = 32
        container.start_encoding()
    empty = tmp_path / "no images"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    broken_image = tmp_path / "photo.jpg"
    broken_image.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    cases = [(truncated, "truncated.mp4"), (zero, "no video frames"), (empty, "holds no images"),
             (broken_image, "not a readable image")]
    for i, (source, words) in enumerate(cases):
        assert_user_error(track(source, tmp_path / f"out{i}"), tmp_path / f"out{i}", str(source), words)


def test_no_face_in_any_frame_exits_2(tmp_path):
    frames = [canvas(240, 320) for _ in range(4)]
    out = tmp_path / "out"
    assert_user_error(track(write_video(tmp_path / "empty room.mp4", frames), out), out, "empty room.mp4",
                      "no face in 4 of 4 frames")


@pytest.mark.parametrize(("setting", "words"), [
    (["--max-frames", "0"], "preprocess.decode.max_frames must be >= 1"),
    (["--fps", "-5"], "preprocess.decode.fps must be > 0"),
    (["--start", "2", "--end", "1"], "preprocess.decode.end must be after decode.start"),
    (["--set", "preprocess.crop.percentile=60"], "preprocess.crop.percentile"),
])
def test_out_of_range_settings_exit_2(tmp_path, setting, words):
    video = write_video(tmp_path / "v.mp4", [canvas(64, 64)] * 2)
    out = tmp_path / "out"
    assert_user_error(track(video, out, *setting), out, words)
