"""``gafkit track``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from gafkit.cli import app
from gafkit.cli.common import handles_errors, options


@app.command(rich_help_panel="Pipeline")
@handles_errors
def track(
    source: Annotated[Path, typer.Argument(help="Video file, folder of images, or one image.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output tracked-sequence folder.")],
    head: Annotated[Optional[Literal["ict", "flame"]], typer.Option(help="Head model (default ict).")] = None,
    flame_model: Annotated[Optional[Path], typer.Option(help="FLAME .pkl (or $GAFKIT_FLAME_MODEL).")] = None,
    size: Annotated[Optional[int], typer.Option(help="Side of the square crop in pixels (default 512).")] = None,
    fps: Annotated[Optional[float], typer.Option(help="Resample to this frame rate.")] = None,
    start: Annotated[Optional[float], typer.Option(help="Start time in seconds.")] = None,
    end: Annotated[Optional[float], typer.Option(help="End time in seconds.")] = None,
    max_frames: Annotated[Optional[int], typer.Option(help="Keep at most this many frames.")] = None,
    photometric: Annotated[Optional[bool], typer.Option(
        "--photometric/--no-photometric",
        help="Stage 6: refine the fit against the pixels (default: on with a GPU, off on the CPU).")] = None,
    preset: Annotated[Optional[str], typer.Option(help="default or fast.")] = None,
    config: Annotated[Optional[Path], typer.Option(help="YAML/TOML config overrides.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="key.sub=value override (repeatable).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing OUT.")] = False,
) -> None:
    """Track a head through a monocular video: frames, landmarks, masks and per-frame head-model fits."""
    from gafkit.config import build_config, select_preset
    from gafkit.trackers.track import PRESETS, run_track

    flags = {"head": head, "flame_model": flame_model, "preprocess.crop.size": size, "preprocess.decode.fps": fps,
             "preprocess.decode.start": start, "preprocess.decode.end": end,
             "preprocess.decode.max_frames": max_frames, "photometric.enabled": photometric}
    cfg = build_config(select_preset(PRESETS, preset, "default"), file=config, sets=set_ or [], flags=flags)
    run_track(cfg, source, out, device=options.device, overwrite=overwrite)
    typer.echo(str(out))
