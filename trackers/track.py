"""``gafkit track``: a video (or image folder, or image) -> a tracked-sequence artifact.

Stages, each named and logged: decode, detect, crop, segment (``preprocess``, resumable per stage),
then ``fit`` (the head model to the landmarks, :mod:`gafkit.trackers.fit`), then ``photometric`` (the
fit refined against the pixels, :mod:`gafkit.trackers.photometric`; by default only on a GPU), then the
artifact files (``transforms.json``, parameters, ``tracking.json`` metrics and ``overlay.mp4``).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch

from gafkit.artifact import write_artifact
from gafkit.console import log
from gafkit.device import resolve_device
from gafkit.errors import InputError
from gafkit.heads import load_head_model
from gafkit.heads.base import HeadModel
from gafkit.media import sequence_fps
from gafkit.render.camera import Cameras
from gafkit.trackers.config import PreprocessConfig
from gafkit.trackers.fit import LANDMARK_GROUPS, LandmarkFitConfig, LandmarkFitResult, fit_landmarks
from gafkit.trackers.photometric import (
    PhotometricConfig,
    load_frames,
    photometric_enabled,
    refine_photometric,
)
from gafkit.trackers.preprocess import preprocess
from gafkit.trackers.sequence import contiguous_splits, write_sequence


@dataclasses.dataclass
class TrackConfig:
    """Everything ``gafkit track`` does; sections override with ``--set section.key=value``."""

    head: Literal["ict", "flame"] = "ict"
    """Head model: the embedded ICT model, or FLAME from ``flame_model``."""
    flame_model: Optional[Path] = None
    """FLAME .pkl (default: $GAFKIT_FLAME_MODEL)."""
    preprocess: PreprocessConfig = dataclasses.field(default_factory=PreprocessConfig)
    fit: LandmarkFitConfig = dataclasses.field(default_factory=LandmarkFitConfig)
    photometric: PhotometricConfig = dataclasses.field(default_factory=PhotometricConfig)
    val_fraction: float = 0.1
    """Fraction of kept frames (after the training part) used for validation."""
    test_fraction: float = 0.1
    """Fraction of kept frames at the end of the clip held out for testing."""
    overlay: bool = True
    """Write ``overlay.mp4``: frames with the fitted mesh and the landmarks drawn."""


PRESETS = {"default": TrackConfig, "fast": lambda: dataclasses.replace(
    TrackConfig(), fit=dataclasses.replace(LandmarkFitConfig(), rigid_steps=80, steps=150))}


def jitter_mm(model: HeadModel, result: LandmarkFitResult, region: str = "face") -> float:
    """Mean vertex acceleration of the face region between consecutive kept frames, in millimetres
    per frame^2: the temporal jitter of the tracked mesh."""
    with torch.no_grad():
        verts = model(result.params)
        idx = model.regions.get(region)
        if idx is not None:
            verts = verts[:, idx.to(verts.device)]
        if verts.shape[0] < 3:
            return 0.0
        acc = verts[2:] - 2 * verts[1:-1] + verts[:-2]
        return float(acc.norm(dim=-1).mean() * 1000)


def _metrics(errors: torch.Tensor, fps: float, failed: list[dict], jitter: float, timings: dict) -> dict:
    err = errors.cpu().numpy()
    per_frame = [{"mean_px": float(np.mean(e)), "p95_px": float(np.percentile(e, 95))} for e in err]
    return {
        "summary": {
            "frames_kept": int(err.shape[0]),
            "frames_failed": len(failed),
            "landmark_error_mean_px": float(np.mean(err)),
            "landmark_error_p95_px": float(np.percentile(err, 95)),
            # The iris points alone: how well the tracked gaze follows the eyes (benchmarks/bench_gaze.py).
            "iris_error_mean_px": float(np.mean(err[:, list(LANDMARK_GROUPS["iris"])])) if err.shape[1] == 478 else None,
            "jitter_mm_per_frame2": jitter,
            "stage_fps": {k: round(fps / v, 2) if v > 0 else None for k, v in timings.items()},
        },
        "failed_frames": failed,
        "per_frame": per_frame,
    }


def run_track(cfg: TrackConfig, source: Path, out: Path, *, device: str = "auto", overwrite: bool = False) -> Path:
    """Track ``source`` into the artifact ``out`` (atomic; a rerun after an interruption reuses the
    preprocessing stages already done)."""
    source, out = Path(source), Path(out)
    if not source.exists():
        raise InputError(source, "no such file or directory")
    dev = resolve_device(device)
    model = load_head_model(cfg.head, cfg.flame_model)
    if model.landmarks is None and cfg.head == "flame":
        from gafkit.heads import flame_model_path
        from gafkit.heads.landmark_cache import ensure_landmark_embedding

        log.info("building the mediapipe landmark embedding of this FLAME file (once; cached)")
        ensure_landmark_embedding(model, flame_model_path(cfg.flame_model))
    with write_artifact(out, "tracked", config=cfg, inputs={"source": source}, overwrite=overwrite,
                        resumable=True) as art:
        pre = preprocess(cfg.preprocess, source, art.dir)
        for stage, seconds in pre.timings.items():
            art.manifest.timings[stage] = seconds
        lmk = np.load(art.dir / "landmarks.npz")
        valid = lmk["valid"].astype(bool)
        keep = np.nonzero(valid)[0]
        size = pre.crop.size
        landmarks = torch.from_numpy(lmk["landmarks"][keep, :, :2].astype(np.float32))
        with art.timed("fit"):
            start = time.perf_counter()
            result = fit_landmarks(model.to(dev), landmarks, torch.ones(len(keep), dtype=torch.bool), size, size,
                                   cfg.fit)
            fit_s = time.perf_counter() - start
        info = json.loads((art.dir / "frames.json").read_text())
        frames = [info["frames"][i] for i in keep]
        failed = [{"frame": f["frame"], "source_index": f.get("source_index"), "reason": f.get("reason")}
                  for f, ok in zip(info["frames"], valid) if not ok]
        timings = {**pre.timings, "fit": fit_s}
        photometric = None
        if photometric_enabled(cfg.photometric, dev):
            with art.timed("photometric"):
                start = time.perf_counter()
                images, masks = load_frames([art.dir / f["image"] for f in frames],
                                            [art.dir / f["mask"] for f in frames], cfg.photometric.render_size)
                refined = refine_photometric(model, result.params, result.cameras, images, masks, landmarks,
                                             cfg.photometric, dev)
                timings["photometric"] = time.perf_counter() - start
            # Everything written from here on (parameters, metrics, overlay) describes the refined fit.
            result = dataclasses.replace(result, params=refined.params, errors_px=refined.errors_px)
            photometric = {"seconds": round(timings["photometric"], 3), **refined.metrics}
        cams = Cameras(K=result.cameras.K.expand(len(keep), 3, 3).cpu(),
                       w2c=result.cameras.w2c.expand(len(keep), 4, 4).cpu(), width=size, height=size)
        write_sequence(art.dir, head_model=cfg.head, params=result.params.to("cpu"), cameras=cams,
                       image_files=[frames[i]["image"] for i in range(len(keep))],
                       mask_files=[frames[i]["mask"] for i in range(len(keep))],
                       frames=[{"index": f["source_index"], "timestamp": f["time"]} for f in frames],
                       splits=contiguous_splits(len(keep), cfg.val_fraction, cfg.test_fraction), model=model)
        metrics = _metrics(result.errors_px, len(keep), failed, jitter_mm(model, result), timings)
        metrics["summary"]["photometric"] = photometric is not None
        if photometric is not None:
            metrics["photometric"] = photometric
        (art.dir / "tracking.json").write_text(json.dumps(metrics, indent=1), encoding="utf-8")
        if cfg.overlay:
            with art.timed("overlay"):
                from gafkit.trackers.overlay import write_overlay

                write_overlay(art.dir / "overlay.mp4", model, result, [art.dir / f["image"] for f in frames],
                              landmarks, fps=_fps(frames))
        # The decoded full frames only serve resuming the crop stage; the artifact keeps the crops.
        shutil.rmtree(art.dir / "frames", ignore_errors=True)
        art.manifest.extra = {"head_model": cfg.head, **metrics["summary"]}
        s = metrics["summary"]
        log.info("tracked %d frames (%d failed): landmark error mean %.2f px, p95 %.2f px",
                 s["frames_kept"], s["frames_failed"], s["landmark_error_mean_px"], s["landmark_error_p95_px"])
    return out


def _fps(frames: list[dict]) -> float:
    return sequence_fps([f["time"] for f in frames if f.get("time") is not None]) or 25.0
