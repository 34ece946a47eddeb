"""Test inputs for the tracking stages: synthetic videos and frames with real faces pasted in."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from skimage.data import astronaut

FACE = astronaut()[20:280, 100:340]  # [260, 240, 3]: head and hair of the astronaut


def write_video(path: Path, frames: list[np.ndarray], fps: int = 10, rotation: int | None = None,
                pix_fmt: str = "yuv420p", codec: str = "libx264", options: dict[str, str] | None = None) -> Path:
    """Encode ``frames`` (``[H, W, 3]`` RGB or ``[H, W]`` gray uint8); ``rotation`` adds a display matrix."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps, options=options or {})
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for image in frames:
            fmt = "gray" if image.ndim == 2 else "rgb24"
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format=fmt)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def canvas(height: int, width: int, *faces: tuple[np.ndarray, int, int]) -> np.ndarray:
    """A grey ``[height, width, 3]`` frame with each ``(image, x, y)`` pasted at its top-left corner."""
    image = np.full((height, width, 3), 200, np.uint8)
    for face, x, y in faces:
        image[y : y + face.shape[0], x : x + face.shape[1]] = face
    return image
