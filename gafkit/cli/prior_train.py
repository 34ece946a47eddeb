"""``gafkit prior train``, ``gafkit prior train-upsampler`` and ``gafkit prior sample``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from gafkit.cli.common import handles_errors, options
from gafkit.cli.prior import prior_app


@prior_app.command("train")
@handles_errors
def train(
    data: Annotated[list[Path], typer.Option("--data", help="Prior data folder (repeatable).")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output prior folder.")],
    preset: Annotated[Optional[str], typer.Option(help="default or tiny.")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Optimizer steps.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Examples per step.")] = None,
    init: Annotated[Optional[str], typer.Option(
        help="Fine-tune this prior (folder or 'default') instead of starting from scratch; its architecture is kept.")] = None,
    time_limit: Annotated[Optional[float], typer.Option(
        help="Stop with a checkpoint after this many seconds of training; rerun to continue.")] = None,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue from the checkpoint.")] = True,
    config: Annotated[Optional[Path], typer.Option(help="YAML/TOML config overrides.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="key.sub=value override (repeatable).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing OUT.")] = False,
) -> None:
    """Train the multi-view diffusion prior on data from `gafkit prior data ...`."""
    from gafkit.config import build_config, select_preset
    from gafkit.diffusion.train import run_prior_train
    from gafkit.diffusion.train_config import PRESETS

    flags = {"steps": steps, "batch_size": batch_size, "init": init}
    cfg = build_config(select_preset(PRESETS, preset, "default"), file=config, sets=set_ or [], flags=flags)
    run_prior_train(cfg, data, out, device=options.device, overwrite=overwrite, resume=resume, time_limit_s=time_limit)
    typer.echo(str(out))


@prior_app.command("train-upsampler")
@handles_errors
def train_upsampler(
    data: Annotated[list[Path], typer.Option("--data", help="Prior data folder at twice the prior's size (repeatable).")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output upsampler folder (e.g. PRIOR/upsampler).")],
    steps: Annotated[Optional[int], typer.Option(help="Optimizer steps.")] = None,
    config: Annotated[Optional[Path], typer.Option(help="YAML/TOML config overrides.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="key=value override (repeatable).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing OUT.")] = False,
) -> None:
    """Train the prior's 2x upsampler (generated views to twice the prior's size, guided by normal maps)."""
    from gafkit.config import build_config
    from gafkit.diffusion.upsampler_train import UpsamplerTrainConfig, run_upsampler_train

    cfg = build_config(UpsamplerTrainConfig(), file=config, sets=set_ or [], flags={"steps": steps})
    run_upsampler_train(cfg, data, out, device=options.device, overwrite=overwrite)
    typer.echo(str(out))


def _floats(text: str, name: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise typer.BadParameter(f"{name}: expected comma-separated numbers, got {text!r}") from None


@prior_app.command("sample")
@handles_errors
def sample(
    prior: Annotated[str, typer.Argument(help="Prior folder, or 'default' for the packaged prior.")],
    tracked: Annotated[Path, typer.Option("--tracked", help="Tracked sequence whose head mesh gives the normals.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder.")],
    ref: Annotated[Optional[Path], typer.Option(
        "--ref", help="Reference image of the person [default: the most frontal tracked frame].")] = None,
    views: Annotated[str, typer.Option("--views", help="Yaw of each view in degrees (0 = front).")] = "0,90,180,270",
    pitch: Annotated[str, typer.Option(help="Pitch in degrees: one value, or one per view.")] = "0",
    frame: Annotated[Optional[int], typer.Option(help="Tracked frame for expression and pose.")] = None,
    steps: Annotated[int, typer.Option(help="DDIM steps.")] = 30,
    size: Annotated[Optional[int], typer.Option(
        help="Output size [default: the prior's]; larger goes through the prior's upsampler when it has one.")] = None,
    guidance: Annotated[float, typer.Option(help="Classifier-free guidance scale.")] = 2.0,
    seed: Annotated[int, typer.Option(help="Noise seed.")] = 0,
    foreground_faces: Annotated[float, typer.Option(
        help="Leave out of the normals the triangles outside the foreground masks in more than this share "
             "of the frames (the bust below the neck cut); 0 keeps the whole mesh.")] = 0.5,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing OUT.")] = False,
) -> None:
    """Generate views around a tracked head from one reference image; writes each next to its normal map."""
    from gafkit.diffusion.sample import SampleConfig, run_sample

    cfg = SampleConfig(yaw_deg=_floats(views, "--views"), pitch_deg=_floats(pitch, "--pitch"), frame=frame,
                       steps=steps, size=size, guidance_scale=guidance, seed=seed, foreground_faces=foreground_faces)
    run_sample(cfg, prior, tracked, out, reference=ref, device=options.device, overwrite=overwrite)
    typer.echo(str(out))
