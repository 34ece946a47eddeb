"""``gafkit run`` (one video through every stage) and ``gafkit batch`` (a folder of videos)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from gafkit.cli import app
from gafkit.cli.common import handles_errors, options


@app.command(name="run", rich_help_panel="Pipeline")
@handles_errors
def run_(
    video: Annotated[Path, typer.Argument(help="Video file (or folder of images) of one person.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder: tracked/, avatar/, videos, eval.json.")],
    preset: Annotated[Optional[str], typer.Option(help="demo (CPU), fast, default or quality.")] = None,
    config: Annotated[Optional[Path], typer.Option(help="YAML/TOML config overrides (sections track, fit, "
                                                        "animate, eval).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="key.sub=value override, e.g. fit.iters=300 "
                                                                     "(repeatable).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Redo every stage; may replace the run of another video.")] = False,
) -> None:
    """Track, fit, animate and evaluate: video in, avatar and preview videos out. Rerunning skips the
    stages that are up to date and resumes an interrupted fit."""
    from gafkit.config import build_config, select_preset
    from gafkit.pipeline import PRESETS, run_pipeline

    cfg = build_config(select_preset(PRESETS, preset, "default"), file=config, sets=set_ or [])
    run_pipeline(cfg, video, out, device=options.device, overwrite=overwrite)
    typer.echo(str(out))
