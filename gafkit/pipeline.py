"""``gafkit run``: one video through every stage -- track, fit, animate, eval -- into one folder.

Layout of ``OUT``::

    tracked/            tracked-sequence artifact (gafkit track)
    avatar/             avatar artifact (gafkit fit); avatar.partial/ holds its checkpoints while fitting
    animate_self.mp4    the avatar driven by its own sequence from the source camera (self-reenactment)
    animate_orbit.mp4   the same motion with the camera swinging around the head
    eval.json           held-out metrics (gafkit eval)
    config.yaml         the effective RunConfig (``--config OUT/config.yaml`` repeats the run)
    run.json            status, current stage, per-stage status/seconds, the error of a failed run

A stage is skipped when its output is complete and was made from the same inputs with the same
config: for ``tracked/`` and ``avatar/`` their manifests say so (config, and the content hash of the
input video / of the tracked manifest); the videos and ``eval.json`` are plain files, so ``run.json``
keeps the config and avatar hash each was made from. Everything else reruns, replacing the stale
output, so a rerun after a crash or Ctrl-C continues where it stopped (the fit itself from the last
checkpoint in ``avatar.partial/``) and a changed setting redoes the stage it affects and those after it.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Optional

from gafkit import __version__
from gafkit.artifact import atomic_write_bytes, fingerprint, read_manifest
from gafkit.config import save_config, to_dict
from gafkit.console import log
from gafkit.errors import ArtifactError, GafkitError, InputError
from gafkit.recon.animate import AnimateConfig
from gafkit.recon.camera_path import OrbitConfig
from gafkit.recon.config import PRESETS as FIT_PRESETS
from gafkit.recon.config import FitConfig
from gafkit.trackers.track import PRESETS as TRACK_PRESETS
from gafkit.trackers.track import TrackConfig

STAGES = ("track", "fit", "animate", "eval")
RUN_FILE = "run.json"
SELF_VIDEO = "animate_self.mp4"
ORBIT_VIDEO = "animate_orbit.mp4"
EVAL_FILE = "eval.json"


@dataclasses.dataclass
class PreviewConfig:
    """The two preview videos of a run (rendered by :func:`gafkit.recon.animate.run_animate`)."""

    size: Optional[int] = None
    """Longer image side in pixels; None = the tracked size."""
    bg: Optional[str] = None
    """Background: white, black, green, #RRGGBB or R,G,B; None = the avatar's training background."""
    orbit_frames: Optional[int] = None
    """Frames of the orbit video; None = as many as the tracked sequence."""
    orbit: OrbitConfig = dataclasses.field(default_factory=OrbitConfig)
    crf: int = 18
    """H.264 quality (0 = lossless .. 51 = worst)."""

    def animate_config(self, camera: Literal["source", "orbit"]) -> AnimateConfig:
        return AnimateConfig(camera=camera, size=self.size, bg=self.bg, crf=self.crf,
                             frames=self.orbit_frames if camera == "orbit" else None, orbit=self.orbit)


@dataclasses.dataclass
class EvalConfig:
    """The metrics written to ``eval.json``."""

    split: Literal["test", "val", "train"] = "test"
    resolution: Optional[int] = None
    """Score at this image size; None = the fit's training resolution (``fit.resolution``)."""


@dataclasses.dataclass
class RunConfig:
    """Everything ``gafkit run`` does: one section per stage (``--set fit.iters=300``)."""

    track: TrackConfig = dataclasses.field(default_factory=TrackConfig)
    fit: FitConfig = dataclasses.field(default_factory=FitConfig)
    animate: PreviewConfig = dataclasses.field(default_factory=PreviewConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)


def _demo() -> RunConfig:
    """The whole pipeline on a 2-core CPU in well under 20 minutes (docs/RUN.md has the timings): 100
    frames tracked at 256 px, 5000 Gaussians trained at 128 px, previews at 256 px."""
    cfg = RunConfig(track=TRACK_PRESETS["fast"](), fit=FIT_PRESETS["fast"]())
    cfg.track.preprocess.crop.size = 256
    cfg.track.preprocess.decode.max_frames = 100
    cfg.fit.iters = 800
    cfg.fit.resolution = 128
    cfg.fit.checkpoint_every = 200
    cfg.fit.init.max_gaussians = 5000
    # A fixed number of Gaussians keeps the step time, and so the demo's wall time, predictable.
    cfg.fit.densify.enabled = False
    cfg.animate.size = 256
    cfg.animate.orbit_frames = 48
    return cfg


def _preset(track: str, fit: str) -> Callable[[], RunConfig]:
    return lambda: RunConfig(track=TRACK_PRESETS[track](), fit=FIT_PRESETS[fit]())


PRESETS: dict[str, Callable[[], RunConfig]] = {
    "demo": _demo,
    "fast": _preset("fast", "fast"),
    "default": _preset("default", "default"),
    "quality": _preset("default", "quality"),
}


# ---- run.json -------------------------------------------------------------------------------------

def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _plain(data: Any) -> Any:
    """``data`` as it reads back from JSON (tuples become lists), so it compares with what was stored."""
    return json.loads(json.dumps(data))


def read_run(out: str | Path) -> dict | None:
    """The ``run.json`` of the run folder ``out``, or None when there is none (or it is unreadable)."""
    path = Path(out) / RUN_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class _Record:
    """``run.json``, rewritten atomically on every change so a batch can watch it and a crash leaves
    the last state."""

    def __init__(self, out: Path, video: Path, source: dict, cfg: RunConfig, device: str, old: dict | None):
        stages = {s: {"status": "pending", "seconds": None} for s in STAGES}
        for s, entry in ((old or {}).get("stages") or {}).items():
            if s in stages and isinstance(entry, dict):
                # Keep how long a stage took and what its output was made from; its status is this run's.
                stages[s].update({k: v for k, v in entry.items() if k in ("seconds", "key")})
        self.path = out / RUN_FILE
        self.data: dict[str, Any] = {
            "video": str(video), "source": source, "status": "running", "stage": None, "error": None,
            "started": _now(), "finished": None, "device": device, "gafkit_version": __version__,
            "config": _plain(to_dict(cfg)), "stages": stages, "metrics": None,
        }
        self.save()

    def save(self) -> None:
        atomic_write_bytes(self.path, json.dumps(self.data, indent=1).encode())

    def stage(self, name: str, **fields: Any) -> None:
        self.data["stages"][name].update(fields)
        self.save()

    def finish(self, status: str, error: str | None = None) -> None:
        self.data.update(status=status, error=error, finished=_now())
        self.save()


# ---- skip checks ----------------------------------------------------------------------------------

def _artifact_current(path: Path, kind: str, cfg: Any, inputs: dict[str, dict]) -> bool:
    """True when ``path`` is a complete ``kind`` artifact made with ``cfg`` from inputs of these hashes."""
    try:
        manifest = read_manifest(path, kind)
    except ArtifactError:
        return False
    if manifest.config != _plain(to_dict(cfg)):
        return False
    return all((manifest.inputs.get(name) or {}).get("sha256") == fp["sha256"] for name, fp in inputs.items())


def run_is_current(out: str | Path, video: str | Path, cfg: RunConfig) -> bool:
    """True when ``out`` holds a complete run of ``video`` (same content) with the config ``cfg``:
    what ``gafkit batch`` skips without starting a process."""
    record = read_run(out)
    if not record or record.get("status") != "complete" or record.get("config") != _plain(to_dict(cfg)):
        return False
    try:
        return (record.get("source") or {}).get("sha256") == fingerprint(video)["sha256"]
    except ArtifactError:
        return False


def _check_out(out: Path, source: dict, overwrite: bool) -> dict | None:
    """Refuse an ``out`` that is a file, a non-empty folder that is not a run, or (without
    ``overwrite``) the run of another video; returns its old ``run.json``."""
    if out.exists() and not out.is_dir():
        raise GafkitError(f"{out}: is a file, expected a run folder")
    old = read_run(out) if out.is_dir() else None
    if out.is_dir() and old is None and any(out.iterdir()):
        raise GafkitError(f"{out}: exists and is not a gafkit run folder (no {RUN_FILE}); choose another output path")
    if old is not None and (old.get("source") or {}).get("sha256") != source["sha256"] and not overwrite:
        raise GafkitError(f"{out}: holds the run of another video ({old.get('video')}); use --overwrite to replace "
                          "it or choose another output path")
    return old


# ---- the run --------------------------------------------------------------------------------------

def run_pipeline(cfg: RunConfig, video: str | Path, out: str | Path, *, device: str = "auto",
                 overwrite: bool = False) -> dict:
    """Track ``video``, fit an avatar, render its previews and score it, all under ``out``; returns
    the final ``run.json`` content. ``overwrite`` redoes every stage (and may replace the run of
    another video). A :class:`GafkitError` of any stage is recorded in ``run.json`` and raised."""
    video, out = Path(video), Path(out)
    if not video.exists():
        raise InputError(video, "no such file or directory")
    source = fingerprint(video)
    old = _check_out(out, source, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    if overwrite:
        for name in ("tracked", "avatar", "tracked.partial", "avatar.partial"):
            shutil.rmtree(out / name, ignore_errors=True)
        for name in (SELF_VIDEO, ORBIT_VIDEO, EVAL_FILE):
            (out / name).unlink(missing_ok=True)
        old = None
    save_config(cfg, out / "config.yaml")
    record = _Record(out, video, source, cfg, device, old)
    steps: list[tuple[str, Callable[[], bool]]] = [
        ("track", lambda: _track(cfg, video, source, out, device)),
        ("fit", lambda: _fit(cfg, out, device)),
        ("animate", lambda: _animate(cfg, out, device, record)),
        ("eval", lambda: _eval(cfg, out, device, record)),
    ]
    for name, step in steps:
        record.data["stage"] = name
        record.stage(name, status="running")
        start = time.perf_counter()
        try:
            ran = step()
        except GafkitError as err:
            record.stage(name, status="failed")
            record.finish("failed", str(err))
            raise
        except KeyboardInterrupt:
            record.stage(name, status="interrupted")
            record.finish("interrupted", f"interrupted during {name}")
            raise
        except BaseException as err:
            record.stage(name, status="failed")
            record.finish("failed", f"{name}: {err.__class__.__name__}: {err}")
            raise
        if ran:
            record.stage(name, status="done", seconds=round(time.perf_counter() - start, 3))
            log.info("run: %s done in %.1f s", name, record.data["stages"][name]["seconds"])
        else:
            record.stage(name, status="skipped")
            log.info("run: %s is up to date, skipped", name)
    record.data["stage"] = None
    record.data["metrics"] = _metrics_summary(json.loads((out / EVAL_FILE).read_text(encoding="utf-8")))
    record.finish("complete")
    return record.data


def _track(cfg: RunConfig, video: Path, source: dict, out: Path, device: str) -> bool:
    from gafkit.trackers.track import run_track

    if _artifact_current(out / "tracked", "tracked", cfg.track, {"source": source}):
        return False
    run_track(cfg.track, video, out / "tracked", device=device, overwrite=True)
    return True


def _fit(cfg: RunConfig, out: Path, device: str) -> bool:
    from gafkit.recon.train import run_fit

    tracked = fingerprint(out / "tracked")
    if _artifact_current(out / "avatar", "avatar", cfg.fit, {"tracked": tracked}):
        return False
    # resume: an interrupted fit of the same job continues from avatar.partial/checkpoints.
    run_fit(cfg.fit, out / "tracked", out / "avatar", device=device, overwrite=True, resume=True)
    return True


def _file_current(path: Path, record: _Record, stage: str, part: str, key: dict) -> bool:
    keys = record.data["stages"][stage].get("key") or {}
    return path.is_file() and keys.get(part) == _plain(key)


def _remember(record: _Record, stage: str, part: str, key: dict) -> None:
    keys = dict(record.data["stages"][stage].get("key") or {})
    keys[part] = _plain(key)
    record.stage(stage, key=keys)


def _animate(cfg: RunConfig, out: Path, device: str, record: _Record) -> bool:
    from gafkit.recon.animate import run_animate

    avatar = fingerprint(out / "avatar")["sha256"]
    ran = False
    for camera, name in (("source", SELF_VIDEO), ("orbit", ORBIT_VIDEO)):
        acfg = cfg.animate.animate_config(camera)
        key = {"config": to_dict(acfg), "avatar": avatar}
        if _file_current(out / name, record, "animate", name, key):
            continue
        run_animate(acfg, out / "avatar", out / name, device=device, overwrite=True)
        _remember(record, "animate", name, key)
        ran = True
    return ran


def _eval(cfg: RunConfig, out: Path, device: str, record: _Record) -> bool:
    from gafkit.recon.evaluate import run_eval

    resolution = cfg.eval.resolution or cfg.fit.resolution
    key = {"split": cfg.eval.split, "resolution": resolution, "avatar": fingerprint(out / "avatar")["sha256"]}
    if _file_current(out / EVAL_FILE, record, "eval", EVAL_FILE, key):
        return False
    result = run_eval(out / "avatar", split=cfg.eval.split, device=device, resolution=resolution)
    atomic_write_bytes(out / EVAL_FILE, json.dumps(result, indent=1).encode())
    _remember(record, "eval", EVAL_FILE, key)
    return True


METRIC_KEYS = ("psnr", "ssim", "l1", "psnr_masked", "ssim_masked", "l1_masked")


def _metrics_summary(result: dict) -> dict:
    return {"split": result.get("split"), "frames": result.get("frames"),
            **{k: result.get(k) for k in METRIC_KEYS}}
