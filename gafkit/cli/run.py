"""``gafkit run`` (one video through every stage) and ``gafkit batch`` (a folder of videos)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from gafkit.cli import app
from gafkit.cli.common import handles_errors, options


def _prior_flags(prior: str | None) -> dict:
    return {} if prior is None else {"fit": {"prior": {"path": prior}}}


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
    prior: Annotated[Optional[str], typer.Option(
        help="Multi-view diffusion prior of the fit: a prior folder, 'default' (packaged) or 'none'.")] = None,
) -> None:
    """Track, fit, animate and evaluate: video in, avatar and preview videos out. Rerunning skips the
    stages that are up to date and resumes an interrupted fit."""
    from gafkit.config import build_config, select_preset
    from gafkit.pipeline import PRESETS, run_pipeline

    cfg = build_config(select_preset(PRESETS, preset, "default"), file=config, sets=set_ or [],
                       flags=_prior_flags(prior))
    run_pipeline(cfg, video, out, device=options.device, overwrite=overwrite)
    typer.echo(str(out))


@app.command(rich_help_panel="Pipeline")
@handles_errors
def batch(
    input_dir: Annotated[Path, typer.Argument(help="Folder of videos.")],
    out_dir: Annotated[Path, typer.Option("-o", "--out", help="Output folder: one run folder per video, "
                                                              "logs/, summary.json, summary.csv.")],
    pattern: Annotated[str, typer.Option(help="Glob of the videos in INPUT_DIR ('**/*.mp4' for subfolders).")]
    = "*.mp4",
    jobs: Annotated[Optional[int], typer.Option(help="Videos at the same time [default: one per GPU, or 1].")]
    = None,
    gpus: Annotated[Optional[str], typer.Option(help="GPU indices for the job slots, e.g. 0,1 "
                                                     "(each run sees one through CUDA_VISIBLE_DEVICES).")] = None,
    executor: Annotated[str, typer.Option(help="local (child processes here) or ray (Ray tasks; "
                                               "pip install 'gafkit[cluster]').")] = "local",
    ray_address: Annotated[Optional[str], typer.Option(help="Ray cluster to join, e.g. auto or ray://HOST:10001 "
                                                            "[default: start a local Ray].")] = None,
    retries: Annotated[int, typer.Option(help="Extra attempts for a run that crashed (not for user errors).")] = 0,
    preset: Annotated[Optional[str], typer.Option(help="Run preset: demo (CPU), fast, default or quality.")] = None,
    config: Annotated[Optional[Path], typer.Option(help="YAML/TOML run-config overrides.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="key.sub=value run-config override "
                                                                     "(repeatable).")] = None,
    prior: Annotated[Optional[str], typer.Option(
        help="Multi-view diffusion prior of the fit: a prior folder, 'default' (packaged) or 'none'.")] = None,
) -> None:
    """Run the whole pipeline on every video of a folder, in parallel, each in its own process. One
    video's failure never stops the others; rerunning the same command resumes."""
    from gafkit.batch import BatchConfig, run_batch
    from gafkit.config import build_config, select_preset
    from gafkit.errors import ConfigError
    from gafkit.pipeline import PRESETS

    try:
        gpu_ids = tuple(int(g) for g in gpus.split(",") if g.strip()) if gpus else ()
    except ValueError:
        raise ConfigError(f"--gpus {gpus!r}: expected comma-separated GPU indices, e.g. 0,1") from None
    bcfg = build_config(BatchConfig(), flags={"pattern": pattern, "jobs": jobs, "gpus": gpu_ids,
                                              "executor": executor, "ray_address": ray_address, "retries": retries})
    cfg = build_config(select_preset(PRESETS, preset, "default"), file=config, sets=set_ or [],
                       flags=_prior_flags(prior))
    summary = run_batch(bcfg, cfg, input_dir, out_dir, device=options.device)
    typer.echo(str(out_dir / "summary.json"))
    counts = summary["counts"]
    typer.echo(f"{counts['complete']} complete, {counts['skipped']} skipped, {counts['failed']} failed", err=True)
