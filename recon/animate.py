"""``gafkit animate``: render a fitted avatar driven by a performance into an H.264 video.

The driver (:mod:`gafkit.recon.retarget`) gives per-frame expression, jaw, eyes and head motion; the
camera is the source camera, an orbit or a JSON path (:mod:`gafkit.recon.camera_path`); ``expr`` edits
set named expression coefficients on every frame, on top of the driver. Frames are posed in batches of
``chunk``, rendered one by one, and handed to an encoder thread (H.264 through PyAV, and PNG frames
with alpha when asked), so encoding overlaps rendering.

Everything the user gave is checked before anything is written; the video and the frame folder are
written under temporary names and renamed when complete (:mod:`gafkit.recon.outfile`).
"""

from __future__ import annotations

import dataclasses
import queue
import re
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from gafkit.console import log, track
from gafkit.errors import GafkitError
from gafkit.heads.base import HeadModel, HeadParams, head_center
from gafkit.recon.avatar import render_sequence
from gafkit.recon.camera_path import OrbitConfig, load_camera_path, orbit_cameras, spread
from gafkit.recon.retarget import RetargetConfig, load_driver, retarget
from gafkit.render.camera import Cameras

NAMED_COLORS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0)}
CAMERA_MODES = ("source", "orbit")
PNG_LEVEL = 1  # frames can be many and large: fast zlib beats small files here


@dataclasses.dataclass
class AnimateConfig:
    """Everything ``gafkit animate`` does (the output paths are arguments of :func:`run_animate`)."""

    driver: Optional[Path] = None
    """Tracked sequence or parameter ``.npz`` that drives the avatar; None = its own training sequence."""
    camera: str = "source"
    """``source`` (the source video's camera), ``orbit`` (see ``orbit``), or a JSON camera-path file."""
    expr: dict[str, float] = dataclasses.field(default_factory=dict)
    """Expression coefficients set on every frame, by name (ARKit names for ICT, indices for FLAME)."""
    size: Optional[int] = None
    """Longer side of the rendered image in pixels; None = the camera's own size."""
    fps: Optional[float] = None
    """Video frame rate; None = the driver's (25 when it has no timestamps)."""
    bg: Optional[str] = None
    """Background: white, black, green, #RRGGBB or R,G,B (0-255); None = the avatar's training background."""
    frames: Optional[int] = None
    """Number of video frames; None = the driver's length. A longer video loops the driver."""
    side_by_side: bool = False
    """Put the driver's video frame left of the render (needs a driver with images)."""
    crf: int = 18
    """H.264 quality (0 = lossless .. 51 = worst)."""
    chunk: int = 16
    """Frames posed in one batch (more = faster posing, more memory)."""
    backend: Literal["auto", "torch", "gsplat"] = "auto"
    flame_model: Optional[Path] = None
    """FLAME .pkl for FLAME avatars (default: the one the avatar was fitted with, or $GAFKIT_FLAME_MODEL)."""
    orbit: OrbitConfig = dataclasses.field(default_factory=OrbitConfig)
    retarget: RetargetConfig = dataclasses.field(default_factory=RetargetConfig)


@dataclasses.dataclass
class Animation:
    """A checked animation, ready to render: one entry per video frame (F).

    Shapes: params [F, ...], cameras [F], bg [3]; ``driver_frames`` are the driver's image files per
    video frame when side by side.
    """

    params: HeadParams
    cameras: Cameras
    bg: Float[Tensor, " 3"]
    fps: float
    driver_frames: list[Path] | None

    def __len__(self) -> int:
        return self.params.batch_size


# ---- parsing and checking ---------------------------------------------------------------------------

def parse_color(text: str) -> tuple[float, float, float]:
    """``white``/``black``/``green``, ``#RRGGBB`` or ``R,G,B`` (0-255) -> RGB in 0..1.

    >>> parse_color("#ff8000"), parse_color("0, 255, 0")
    ((1.0, 0.5019607843137255, 0.0), (0.0, 1.0, 0.0))
    """
    t = text.strip().lower()
    if t in NAMED_COLORS:
        return NAMED_COLORS[t]
    if re.fullmatch(r"#[0-9a-f]{6}", t):
        return tuple(int(t[i:i + 2], 16) / 255 for i in (1, 3, 5))  # type: ignore[return-value]
    parts = [p.strip() for p in t.split(",")]
    if len(parts) == 3 and all(p.isdigit() and int(p) <= 255 for p in parts):
        return tuple(int(p) / 255 for p in parts)  # type: ignore[return-value]
    raise GafkitError(f"--bg {text!r}: use white, black, green, #RRGGBB or R,G,B with values 0-255")


def parse_expr_edits(items: Sequence[str]) -> dict[str, float]:
    """``["jawOpen=0.6", "3=-1.5"]`` -> ``{"jawOpen": 0.6, "3": -1.5}`` (names are checked later)."""
    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            out[name.strip()] = float(value)
        except ValueError:
            raise GafkitError(f"--expr {item!r}: expected NAME=VALUE, e.g. --expr jawOpen=0.5") from None
    return out


def apply_expr_edits(params: HeadParams, model: HeadModel, edits: dict[str, float]) -> HeadParams:
    """Set the named expression coefficients on every frame; unknown names and values outside the
    model's range are errors that list what is valid."""
    if not edits:
        return params
    names = list(model.expression_names)
    expr = params.expr.clone()
    for name, value in edits.items():
        if name not in names:
            raise GafkitError(f"--expr {name}: no such expression in the {model.name} model; valid names: "
                              f"{', '.join(names)}")
        if model.expr_bounds is not None and not model.expr_bounds[0] <= value <= model.expr_bounds[1]:
            lo, hi = model.expr_bounds
            raise GafkitError(f"--expr {name}={value:g}: outside the {model.name} model's range {lo:g}..{hi:g}")
        expr[:, names.index(name)] = value
    return dataclasses.replace(params, expr=expr)


def _check(cfg: AnimateConfig) -> None:
    problems = [f"{key} must be {rule}, got {value}" for key, value, ok, rule in [
        ("size", cfg.size, cfg.size is None or 16 <= cfg.size <= 8192, "16..8192"),
        ("fps", cfg.fps, cfg.fps is None or 0 < cfg.fps <= 240, "in (0, 240]"),
        ("frames", cfg.frames, cfg.frames is None or cfg.frames >= 1, ">= 1"),
        ("crf", cfg.crf, 0 <= cfg.crf <= 51, "0..51"),
        ("chunk", cfg.chunk, cfg.chunk >= 1, ">= 1"),
    ] if not ok]
    if problems:
        raise GafkitError("animate: " + "; ".join(problems))


def _loop(n_video: int, n: int) -> torch.Tensor:
    return torch.arange(n_video) % n


# ---- planning -----------------------------------------------------------------------------------

def plan_animation(cfg: AnimateConfig, bundle) -> Animation:
    """Check every input of ``cfg`` against the avatar in ``bundle`` and lay out the frames."""
    _check(cfg)
    device = bundle.params.expr.device
    bg = torch.tensor(parse_color(cfg.bg), device=device) if cfg.bg is not None else bundle.background
    driver = load_driver(cfg.driver, bundle, device)
    if cfg.side_by_side and driver.images is None:
        what = "a parameter file has no video frames" if cfg.driver is not None else \
            f"the avatar's source sequence {driver.source} is not available"
        raise GafkitError(f"--side-by-side needs the driver's frames, but {what}")
    params, cameras = retarget(driver, bundle, cfg.retarget)
    params = apply_expr_edits(params, bundle.model, cfg.expr)
    n_video = cfg.frames or len(driver)
    idx = _loop(n_video, len(driver)).to(device)
    params, cameras = params[idx], cameras[idx]
    if cfg.camera == "orbit":
        with torch.no_grad():
            sample = params[torch.linspace(0, n_video - 1, min(n_video, 16), device=device).round().long()]
            center = torch.stack([head_center(bundle.model, v) for v in bundle.model(sample)]).mean(0)
        cameras = orbit_cameras(cameras[0], center, n_video, cfg.orbit)
    elif cfg.camera != "source":
        cameras = spread(load_camera_path(cfg.camera).to(device), n_video)
    if cfg.size is not None:
        cameras = cameras.scaled(cfg.size / max(cameras.width, cameras.height))
    frames = [driver.images[i] for i in idx.tolist()] if cfg.side_by_side else None
    return Animation(params=params, cameras=cameras, bg=bg, fps=cfg.fps or driver.fps or 25.0, driver_frames=frames)


# ---- rendering ------------------------------------------------------------------------------------

@torch.no_grad()
def render_frames(bundle, anim: Animation, backend: str = "auto", chunk: int = 16
                  ) -> Iterator[tuple[Float[Tensor, "H W 3"], Float[Tensor, "H W 1"]]]:
    """Yield each video frame's colour (over ``anim.bg``) and alpha, on the avatar's device."""
    yield from render_sequence(bundle.avatar, bundle.model, anim.params, anim.cameras, bg=anim.bg, backend=backend,
                               chunk=chunk)


def to_uint8(x: Tensor) -> np.ndarray:
    return (x.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()


def unpremultiply(rgb: Float[Tensor, "H W 3"], alpha: Float[Tensor, "H W 1"], bg: Float[Tensor, " 3"]
                  ) -> Float[Tensor, "H W 4"]:
    """RGBA with straight (not premultiplied) colour from a render composited over ``bg``."""
    fg = (rgb - (1 - alpha) * bg) / alpha.clamp_min(1e-4)
    return torch.cat([torch.where(alpha > 1e-4, fg, torch.zeros_like(fg)), alpha], dim=-1)


def side_by_side(driver_image: Path, render: np.ndarray) -> np.ndarray:
    """The driver's frame scaled to the render's height, left of it."""
    from PIL import Image

    h = render.shape[0]
    with Image.open(driver_image) as im:
        im = im.convert("RGB")
        im = im.resize((max(1, round(im.width * h / im.height)), h), Image.BILINEAR)
        left = np.asarray(im)
    return np.concatenate([left, render], axis=1)


class _Writer:
    """Encodes video frames and writes PNG frames on a worker thread, fed through a bounded queue."""

    def __init__(self, video: Path, fps: float, crf: int, frames_dir: Path | None):
        self.queue: queue.Queue = queue.Queue(maxsize=8)
        self.error: BaseException | None = None
        self.finished = False
        self.frames_dir = frames_dir
        self.thread = threading.Thread(target=self._run, args=(video, fps, crf), daemon=True)
        self.thread.start()

    def _items(self) -> Iterator[np.ndarray]:
        from PIL import Image

        while (item := self.queue.get()) is not None:
            index, picture, rgba = item
            if rgba is not None:
                Image.fromarray(rgba, "RGBA").save(self.frames_dir / f"{index:05d}.png", compress_level=PNG_LEVEL)
            yield picture
        self.finished = True

    def _run(self, video: Path, fps: float, crf: int) -> None:
        from gafkit.media import write_video

        try:
            write_video(video, self._items(), fps=fps, crf=crf)
        except BaseException as err:  # handed to the main thread
            self.error = err
            while not self.finished and self.queue.get() is not None:  # unblock the producer until it stops
                pass

    def put(self, index: int, picture: np.ndarray, rgba: np.ndarray | None) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put((index, picture, rgba))

    def close(self) -> None:
        """Finish the video; re-raises what went wrong on the worker."""
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error

    def abort(self) -> None:
        """Stop the worker after a failure on the producer's side (its own error, if any, is dropped)."""
        self.queue.put(None)
        self.thread.join()


def run_animate(cfg: AnimateConfig, avatar_path: str | Path, out: str | Path, *, frames_dir: str | Path | None = None,
                device: str = "auto", overwrite: bool = False) -> dict:
    """Render the animation of ``cfg`` into the H.264 video ``out`` (and PNG frames with alpha into
    ``frames_dir``); returns a summary: frames, size, fps, seconds and frames per second."""
    import contextlib

    from gafkit.device import resolve_device
    from gafkit.recon.evaluate import load_avatar
    from gafkit.recon.outfile import atomic_file, atomic_folder, check_target

    out = Path(out)
    if out.suffix.lower() != ".mp4":
        raise GafkitError(f"{out}: the video must be an .mp4 file")
    check_target(out, overwrite)
    if frames_dir is not None:
        check_target(Path(frames_dir), overwrite, folder=True)
    dev = resolve_device(device)
    bundle = load_avatar(avatar_path, dev, flame_model=cfg.flame_model)
    anim = plan_animation(cfg, bundle)
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        video = stack.enter_context(atomic_file(out, overwrite))
        folder = stack.enter_context(atomic_folder(Path(frames_dir), overwrite)) if frames_dir is not None else None
        writer = _Writer(video, anim.fps, cfg.crf, folder)
        try:
            frames = render_frames(bundle, anim, cfg.backend, cfg.chunk)
            for i, (rgb, alpha) in enumerate(track(frames, "animate", total=len(anim))):
                picture = to_uint8(rgb)
                if anim.driver_frames is not None:
                    picture = side_by_side(anim.driver_frames[i], picture)
                rgba = to_uint8(unpremultiply(rgb, alpha, anim.bg)) if folder is not None else None
                writer.put(i, picture, rgba)
        except BaseException:
            writer.abort()
            raise
        writer.close()
    seconds = time.perf_counter() - start
    summary = {"video": str(out), "frames": len(anim), "width": anim.cameras.width, "height": anim.cameras.height,
               "fps": anim.fps, "seconds": round(seconds, 3), "frames_per_second": round(len(anim) / seconds, 2)}
    log.info("animate: %d frames (%dx%d) in %.1f s", len(anim), anim.cameras.width, anim.cameras.height, seconds)
    return summary
