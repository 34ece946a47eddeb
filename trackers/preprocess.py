"""Stages 1-4 of ``gafkit track``: decode, detect, crop, segment, written into a work directory.

Each stage is resumable: after it finishes it records a key (the input's identity and the config
sections of itself and of the stages before it) in ``.stages/<stage>.json``; a later run with the
same key whose outputs are still there skips it. The on-disk layout is documented in
docs/TRACKING.md.

Example::

    result = preprocess(PreprocessConfig(), Path("clip.mp4"), Path("work"))
    result.num_valid, result.crop.size
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gafkit.config import to_dict
from gafkit.console import log, track
from gafkit.errors import InputError
from gafkit.trackers.config import PreprocessConfig, check_preprocess_config
from gafkit.trackers.crop import CropTransform, find_bars, fit_crop
from gafkit.trackers.detect import detect_landmarks
from gafkit.trackers.segment import Segmenter
from gafkit.trackers.video import iter_frames

STAGES = ("decode", "detect", "crop", "segment")
BAR_SAMPLES = 16
"""Frames spread over the clip that black-bar detection looks at (bars are constant)."""
FORMAT_VERSION = 1


@dataclass
class PreprocessResult:
    """What :func:`preprocess` wrote (paths relative to ``work_dir``, see docs/TRACKING.md)."""

    work_dir: Path
    num_frames: int
    num_valid: int
    crop: CropTransform
    timings: dict[str, float] = field(default_factory=dict)
    """Stage -> seconds spent in this run (0 for skipped stages)."""
    skipped: list[str] = field(default_factory=list)
    """Stages whose outputs were reused from an earlier run."""


def read_image_file(path: Path) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB (also for non-ASCII paths, which cv2.imread mishandles on Windows)."""
    import cv2

    bgr = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(path, "cannot read image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def write_image_file(path: Path, image: np.ndarray) -> None:
    """Write ``[H, W, 3]`` RGB or ``[H, W]`` uint8 as PNG (fast compression) or JPEG (quality 95)."""
    import cv2

    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if path.suffix == ".png":
        ok, data = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    else:
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        raise OSError(f"{path}: image encoding failed")
    path.write_bytes(data.tobytes())


def _source_id(source: Path) -> dict[str, Any]:
    """Cheap identity of the input: path, sizes and modification times (hashing 4K video is slow)."""
    source = source.resolve()
    files = [source] if source.is_file() else sorted(p for p in source.iterdir() if p.is_file())
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return {"path": str(source), "stat": h.hexdigest()}


def _key(cfg: PreprocessConfig, stage: str, source: Path) -> dict[str, Any]:
    sections = STAGES[: STAGES.index(stage) + 1]
    key = {"format": FORMAT_VERSION, "source": _source_id(source)}
    key.update({name: to_dict(getattr(cfg, name)) for name in sections})
    if stage != "decode":
        key["image_format"] = cfg.image_format
    # Decoding downscales relative to the crop size, so the decode stage depends on it too.
    key["crop_size"] = cfg.crop.size
    return key


def _reuse(work_dir: Path, stage: str, key: dict, outputs: Callable[[dict], list[Path]]) -> dict | None:
    """The recorded result of ``stage`` when its key matches and its outputs exist, else None."""
    marker = work_dir / ".stages" / f"{stage}.json"
    if not marker.is_file():
        return None
    data = json.loads(marker.read_text(encoding="utf-8"))
    if data.get("key") != key or not all(p.exists() for p in outputs(data["result"])):
        return None
    return data["result"]


def _record(work_dir: Path, stage: str, key: dict, result: dict) -> None:
    folder = work_dir / ".stages"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stage}.json").write_text(json.dumps({"key": key, "result": result}), encoding="utf-8")


def _name(i: int, ext: str) -> str:
    return f"{i:05d}.{ext}"


def _stage_decode(cfg: PreprocessConfig, source: Path, work_dir: Path) -> dict:
    folder = work_dir / "frames"
    folder.mkdir(parents=True, exist_ok=True)
    max_side = int(round(cfg.decode.max_side_factor * cfg.crop.size))
    frames, size, scale = [], None, 1.0
    for i, frame in enumerate(track(iter_frames(source, cfg.decode, max_side), "decode")):
        height, width = frame.image.shape[:2]
        if size is None:
            size, scale = (width, height), frame.scale
        elif (width, height) != tuple(size):
            raise InputError(source, f"frame {frame.source_index} is {width}x{height}, the first is {size[0]}x{size[1]}")
        write_image_file(folder / _name(i, "png"), frame.image)
        frames.append({"source_index": frame.source_index, "time": frame.time})
    return {"frames": frames, "width": size[0], "height": size[1], "decode_scale": scale}


def _frame_paths(work_dir: Path, n: int) -> list[Path]:
    return [work_dir / "frames" / _name(i, "png") for i in range(n)]


def _stage_detect(cfg: PreprocessConfig, work_dir: Path, n: int) -> dict:
    paths = _frame_paths(work_dir, n)
    det = detect_landmarks(cfg.detect, (read_image_file(p) for p in paths), total=n)
    np.savez_compressed(work_dir / "detect.npz", landmarks=det.landmarks, valid=det.valid)
    return {"reasons": det.reasons, "methods": det.methods}


def _stage_crop(cfg: PreprocessConfig, work_dir: Path, decoded: dict, frames_lmk: np.ndarray, valid: np.ndarray):
    n = len(decoded["frames"])
    paths = _frame_paths(work_dir, n)
    sample = [read_image_file(paths[i]) for i in np.unique(np.linspace(0, n - 1, min(n, BAR_SAMPLES)).astype(int))]
    content = find_bars(sample)
    if content is not None:
        log.info("crop: black bars around the picture, which spans x %d..%d, y %d..%d", content[0], content[2],
                 content[1], content[3])
    crop = fit_crop(cfg.crop, frames_lmk, valid, decoded["width"], decoded["height"], content)
    folder = work_dir / "images"
    folder.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(track(_frame_paths(work_dir, n), "crop")):
        write_image_file(folder / _name(i, cfg.image_format), crop.apply(read_image_file(path), cfg.crop.pad))
    crop_lmk = crop.frame_to_crop(frames_lmk).astype(np.float32)
    left, top, right, bottom = crop.inside
    x, y = crop_lmk[..., 0], crop_lmk[..., 1]
    visible = valid[:, None] & (x >= left) & (x < right) & (y >= top) & (y < bottom)
    np.savez_compressed(
        work_dir / "landmarks.npz",
        landmarks=crop_lmk,
        landmarks_frame=frames_lmk.astype(np.float32),
        valid=valid,
        visible=visible,
        time=np.array([f["time"] for f in decoded["frames"]], dtype=np.float64),
        source_index=np.array([f["source_index"] for f in decoded["frames"]], dtype=np.int64),
    )
    info = {**crop.to_dict(), "decode_scale": decoded["decode_scale"], "pad": cfg.crop.pad,
            "inside": list(crop.inside)}
    (work_dir / "crop.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    return crop


def _stage_segment(cfg: PreprocessConfig, work_dir: Path, crop: CropTransform, n: int) -> dict:
    folder = work_dir / "fg_masks"
    folder.mkdir(parents=True, exist_ok=True)
    lmk = np.load(work_dir / "landmarks.npz")
    landmarks, valid = lmk["landmarks"], lmk["valid"]
    coverage = []
    with Segmenter(cfg.segment) as seg:
        for i in track(range(n), "segment"):
            rgb = read_image_file(work_dir / "images" / _name(i, cfg.image_format))
            alpha = seg(rgb, landmarks[i] if valid[i] else None, crop.inside)
            write_image_file(folder / _name(i, "png"), (alpha * 255 + 0.5).astype(np.uint8))
            coverage.append(float((alpha > 0.5).mean()))
    return {"mean_coverage": float(np.mean(coverage)) if coverage else 0.0}


def preprocess(cfg: PreprocessConfig, source: Path, work_dir: Path) -> PreprocessResult:
    """Run decode, detect, crop and segment on ``source`` (video, image folder or image).

    Writes ``frames/``, ``images/``, ``fg_masks/``, ``landmarks.npz``, ``frames.json``,
    ``crop.json`` into ``work_dir`` (layout in docs/TRACKING.md); skips stages already done there
    with the same config.

    Raises:
        ConfigError: a setting out of its range.
        InputError: unreadable input, or fewer than ``cfg.min_valid_ratio`` of the frames have a face.
    """
    check_preprocess_config(cfg)
    source, work_dir = Path(source), Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    skipped: list[str] = []

    def run(stage: str, outputs, body):
        key = _key(cfg, stage, source)
        done = _reuse(work_dir, stage, key, outputs)
        if done is not None:
            log.info("%s: reusing the outputs of an earlier run", stage)
            skipped.append(stage)
            timings[stage] = 0.0
            return done
        start = time.perf_counter()
        result = body()
        timings[stage] = round(time.perf_counter() - start, 3)
        _record(work_dir, stage, key, result)
        return result

    decoded = run(
        "decode",
        lambda done: _frame_paths(work_dir, len(done["frames"])),
        lambda: _stage_decode(cfg, source, work_dir),
    )
    n = len(decoded["frames"])
    log.info("decode: %d frames of %dx%d", n, decoded["width"], decoded["height"])

    detected = run("detect", lambda _: [work_dir / "detect.npz"], lambda: _stage_detect(cfg, work_dir, n))
    data = np.load(work_dir / "detect.npz")
    frames_lmk, valid = data["landmarks"], data["valid"]
    num_valid = int(valid.sum())
    if num_valid < max(1, cfg.min_valid_ratio * n):
        raise InputError(
            source,
            f"no face in {n - num_valid} of {n} frames (at least {cfg.min_valid_ratio:.0%} need one; "
            "is the face visible and not too small?)",
        )

    def crop_outputs(_: dict) -> list[Path]:
        images = [work_dir / "images" / _name(i, cfg.image_format) for i in range(n)]
        return [work_dir / "crop.json", work_dir / "landmarks.npz", *images]

    crop_info = run(
        "crop", crop_outputs,
        lambda: _stage_crop(cfg, work_dir, decoded, frames_lmk, valid).to_dict(),
    )
    crop = CropTransform.from_dict(crop_info)
    run(
        "segment",
        lambda _: [work_dir / "fg_masks" / _name(i, "png") for i in range(n)],
        lambda: _stage_segment(cfg, work_dir, crop, n),
    )

    frames = []
    for i, (info, ok, reason, method) in enumerate(
        zip(decoded["frames"], valid, detected["reasons"], detected["methods"])
    ):
        frames.append({
            "frame": i,
            "image": f"images/{_name(i, cfg.image_format)}",
            "mask": f"fg_masks/{_name(i, 'png')}",
            **info,
            "status": "ok" if ok else "failed",
            "reason": reason,
            "detector": method,
        })
    summary = {
        "source": str(source),
        "num_frames": n,
        "num_valid": num_valid,
        "width": decoded["width"],
        "height": decoded["height"],
        "decode_scale": decoded["decode_scale"],
        "frames": frames,
    }
    (work_dir / "frames.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    for stage in STAGES:
        if stage in timings and stage not in skipped:
            log.info("%s: %.2f s (%.1f frames/s)", stage, timings[stage], n / max(timings[stage], 1e-9))
    return PreprocessResult(work_dir, n, num_valid, crop, timings, skipped)
