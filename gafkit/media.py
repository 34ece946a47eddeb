"""Video writing shared by every command that produces an mp4 (overlay, preview, animate)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float, crf: int = 20) -> int:
    """Encode ``[H, W, 3]`` uint8 RGB frames as H.264 (yuv420p, even sizes padded) with PyAV.

    Returns the number of frames written.
    """
    import av

    count = 0
    with av.open(str(path), mode="w") as container:
        stream = None
        for image in frames:
            if stream is None:
                h, w = image.shape[:2]
                stream = container.add_stream("libx264", rate=int(round(fps)))
                stream.width, stream.height = w + (w % 2), h + (h % 2)
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": str(crf)}
            if image.shape[0] != stream.height or image.shape[1] != stream.width:
                image = np.pad(image, ((0, stream.height - image.shape[0]), (0, stream.width - image.shape[1]), (0, 0)))
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
            count += 1
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    return count


def sequence_fps(timestamps: list[float]) -> float | None:
    """Frame rate of evenly spread ``timestamps`` (seconds), None when they carry none."""
    if len(timestamps) < 2 or timestamps[-1] <= timestamps[0]:
        return None
    return max(1.0, (len(timestamps) - 1) / (timestamps[-1] - timestamps[0]))
