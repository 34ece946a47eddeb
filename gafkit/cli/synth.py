"""``gafkit synth``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from gafkit.cli import app
from gafkit.cli.common import handles_errors


@app.command(rich_help_panel="Data")
@handles_errors
def synth(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output subject folder (a tracked sequence + gt/).")],
    frames: Annotated[Optional[int], typer.Option(help="Training frames [default: 60].")] = None,
    size: Annotated[Optional[int], typer.Option(help="Image size in pixels [default: 512].")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of identity, appearance and motion [default: 0].")] = None,
    head: Annotated[Optional[Literal["ict", "flame"]], typer.Option(help="Head model [default: ict].")] = None,
    flame_model: Annotated[Optional[Path], typer.Option(help="FLAME model file (--head flame).")] = None,
    appearance: Annotated[Optional[Literal["procedural", "photo"]], typer.Option(help="Appearance [default: procedural].")] = None,
    photo: Annotated[Optional[Path], typer.Option(help="Face photo for --appearance photo [default: astronaut].")] = None,
    config: Annotated[Optional[Path], typer.Option(help="YAML/TOML file of SynthConfig settings.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="KEY=VALUE override, e.g. motion.yaw_deg=30.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing artifact at --out.")] = False,
) -> None:
    """Render a synthetic ground-truth subject: training video, masks, novel views, true parameters."""
    from gafkit.config import build_config
    from gafkit.synth import SynthConfig
    from gafkit.synth.generate import run_synth

    flags = {"frames": frames, "size": size, "seed": seed, "head": head, "flame_model": flame_model,
             "appearance": appearance, "photo": photo}
    run_synth(build_config(SynthConfig(), file=config, sets=set_ or (), flags=flags), out, overwrite=overwrite)
