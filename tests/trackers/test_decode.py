"""Stage 1: decoding videos, image folders and single images; user errors on bad inputs."""

from __future__ import annotations

import av
import numpy as np
import pytest
from face_media import write_video
from PIL import Image

from gafkit.errors import InputError
from gafkit.trackers.config import DecodeConfig
from gafkit.trackers.video import apply_display_matrix, iter_frames


def numbered(n: int, height: int = 32, width: int = 48) -> list[np.ndarray]:
    """Frames whose brightness encodes their index (survives lossy coding)."""
    return [np.full((height, width, 3), 10 + 20 * i, np.uint8) for i in range(n)]


def brightness_index(image: np.ndarray) -> int:
    return int(round((image.mean() - 10) / 20))


def test_video_selection_by_timestamp(tmp_path):
    path = write_video(tmp_path / "v.mp4", numbered(12), fps=10)
    frames = list(iter_frames(path, DecodeConfig()))
    assert [f.source_index for f in frames] == list(range(12))
    assert [f.time for f in frames] == pytest.approx([i / 10 for i in range(12)])
    assert [brightness_index(f.image) for f in frames] == list(range(12))

    picked = list(iter_frames(path, DecodeConfig(fps=5, start=0.2, end=1.0)))
    assert [f.source_index for f in picked] == [2, 4, 6, 8]
    assert [brightness_index(f.image) for f in picked] == [2, 4, 6, 8]
    assert [f.time for f in picked] == pytest.approx([0.2, 0.4, 0.6, 0.8])

    limited = list(iter_frames(path, DecodeConfig(start=0.5, max_frames=3)))
    assert [f.source_index for f in limited] == [5, 6, 7]


def test_video_downscaled_while_decoding(tmp_path):
    path = write_video(tmp_path / "big.mp4", numbered(2, 96, 160))
    frame = next(iter_frames(path, DecodeConfig(), max_side=80))
    assert frame.image.shape == (48, 80, 3) and frame.scale == pytest.approx(0.5)


@pytest.mark.parametrize("rotation", [90, -90])
def test_rotation_metadata_is_applied(tmp_path, rotation):
    image = np.zeros((32, 64, 3), np.uint8)
    image[:16, :16] = 255  # a white block in the top-left corner
    path = write_video(tmp_path / "r.mp4", [image] * 2, rotation=rotation)
    frame = next(iter_frames(path, DecodeConfig()))
    assert frame.image.shape == (64, 32, 3)
    # Counter-clockwise by `rotation` degrees, as players show it.
    expected = np.rot90(image, k=1 if rotation == 90 else -1)
    assert np.abs(frame.image.astype(int) - expected).mean() < 10


def test_display_matrix_flip():
    image = np.arange(6, dtype=np.uint8).reshape(2, 3, 1)
    hflip = np.array([-65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30])
    assert np.array_equal(apply_display_matrix(image, hflip), image[:, ::-1])


def test_grayscale_video_gives_rgb(tmp_path):
    gray = [np.full((32, 48), 100, np.uint8)] * 3
    path = write_video(tmp_path / "g.mkv", gray, codec="ffv1", pix_fmt="gray")
    frames = list(iter_frames(path, DecodeConfig()))
    assert len(frames) == 3 and frames[0].image.shape == (32, 48, 3)
    assert np.all(frames[0].image == 100)


def test_image_folder_and_single_image(tmp_path):
    folder = tmp_path / "dossier d'images é"
    folder.mkdir()
    for i in (1, 2, 10):
        Image.fromarray(np.full((20, 30, 3), i, np.uint8)).save(folder / f"img{i}.png")
    (folder / "notes.txt").write_text("not an image")
    frames = list(iter_frames(folder, DecodeConfig(image_fps=10)))
    assert [int(f.image[0, 0, 0]) for f in frames] == [1, 2, 10]  # natural order, not 1, 10, 2
    assert [f.time for f in frames] == pytest.approx([0.0, 0.1, 0.2])
    single = list(iter_frames(folder / "img2.png", DecodeConfig()))
    assert len(single) == 1 and single[0].image.shape == (20, 30, 3)


def test_path_with_spaces_and_non_ascii(tmp_path):
    folder = tmp_path / "vidéo à tester 顔"
    folder.mkdir()
    path = write_video(folder / "clip ü.mp4", numbered(3))
    assert len(list(iter_frames(path, DecodeConfig()))) == 3


def test_bad_inputs_raise_input_error(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    good = write_video(tmp_path / "good.mp4", numbered(10, 64, 64))
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    zero = tmp_path / "zero.mp4"
    with av.open(str(zero), "w") as container:  # a valid container with a video stream, no frames
        stream = container.add_stream("libx264", rate=10)
        stream.width = stream.height = 32
        container.start_encoding()
    zero_bytes = tmp_path / "zero_bytes.mov"
    zero_bytes.write_bytes(b"")
    cases = {
        text: "FFmpeg",
        truncated: "",
        empty_dir: "no images",
        zero: "no video frames",
        zero_bytes: "FFmpeg",
        tmp_path / "missing.mp4": "no such file",
    }
    for path, words in cases.items():
        with pytest.raises(InputError) as err:
            list(iter_frames(path, DecodeConfig()))
        assert str(path) in str(err.value) and words in str(err.value), str(err.value)
    with pytest.raises(InputError, match="no frames selected"):
        list(iter_frames(good, DecodeConfig(start=100.0)))
