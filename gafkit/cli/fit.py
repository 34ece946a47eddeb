"""``gafkit fit`` and ``gafkit eval``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from gafkit.cli import app
from gafkit.cli.common import handles_errors, options


@app.command(rich_help_panel="Pipeline")
@handles_errors
def fit(
    tracked: Annotated[Path, typer.Argument(help="Tracked sequence (from gafkit track, synth or import).")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output avatar folder.")],
    preset: Annotated[Optional[str], typer.Option(help="fast, default or quality.")] = None,
    iters: Annotated[Optional[int], typer.Option(help="Optimization steps.")] = None,
    sh_degree: Annotated[Optional[int], typer.Option(help="Highest spherical-harmonics degree (0-3).")] = None,
    refine_tracking: Annotated[Optional[bool], typer.Option(
        "--refine-tracking/--no-refine-tracking", help="Jointly refine per-frame expression and pose.")] = None,
    resolution: Annotated[Optional[int], typer.Option(help="Train at this image size (default: tracked size).")] = None,
    flame_model: Annotated[Optional[Path], typer.Option(help="FLAME .pkl for FLAME-tracked sequences.")] = None,
    prior: Annotated[Optional[str], typer.Option(
        help="Multi-view diffusion prior for unseen views: a prior folder, 'default' (packaged) or 'none'.")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume/--no-resume", help="Continue an interrupted run of this command from its checkpoint.")] = True,
    config: Annotated[Optional[Path], typer.Option(help="YAML/TOML config overrides.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="key.sub=value override (repeatable).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing OUT.")] = False,
) -> None:
    """Fit Gaussians bound to the tracked head mesh to the video: the avatar."""
    from gafkit.config import build_config, select_preset
    from gafkit.recon.config import PRESETS
    from gafkit.recon.train import run_fit

    flags = {"iters": iters, "sh_degree": sh_degree, "refine_tracking": refine_tracking, "resolution": resolution,
             "flame_model": flame_model}
    if prior is not None:
        flags["prior"] = {"path": prior}
    cfg = build_config(select_preset(PRESETS, preset, "default"), file=config, sets=set_ or [], flags=flags)
    run_fit(cfg, tracked, out, device=options.device, overwrite=overwrite, resume=resume)
    typer.echo(str(out))


@app.command(name="eval", rich_help_panel="Pipeline")
@handles_errors
def eval_(
    avatar: Annotated[Path, typer.Argument(help="Avatar folder (from gafkit fit).")],
    data: Annotated[Optional[Path], typer.Option(help="Tracked sequence or synthetic subject [default: the "
                                                      "avatar's own sequence].")] = None,
    split: Annotated[Literal["test", "val", "train"], typer.Option(help="Frames to score.")] = "test",
    resolution: Annotated[Optional[int], typer.Option(help="Score at this image size.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Score an avatar: PSNR/SSIM/L1 on held-out frames (full frame and inside the mask), and on the
    ground-truth novel views of synthetic subjects. LPIPS is null (no backbone weights are shipped)."""
    from gafkit.recon.evaluate import run_eval

    result = run_eval(avatar, data, split=split, device=options.device, resolution=resolution)
    if as_json:
        typer.echo(json.dumps(result, indent=1))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{avatar} on {result['data']}")
    for col in ("views", "frames", "PSNR", "SSIM", "L1", "PSNR mask", "SSIM mask", "L1 mask"):
        table.add_column(col, justify="right")
    rows = [(split, result)] + ([("novel", result["novel_views"])] if "novel_views" in result else [])
    for name, r in rows:
        table.add_row(name, str(r["frames"]), f"{r['psnr']:.2f}", f"{r['ssim']:.4f}", f"{r['l1']:.4f}",
                      f"{r['psnr_masked']:.2f}", f"{r['ssim_masked']:.4f}", f"{r['l1_masked']:.4f}")
    Console().print(table)
