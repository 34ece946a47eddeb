"""``gafkit export``, ``gafkit animate`` and ``gafkit view``: using a fitted avatar."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from gafkit.cli import app
from gafkit.cli.common import handles_errors, options


@app.command(rich_help_panel="Pipeline")
@handles_errors
def export(
    avatar: Annotated[Path, typer.Argument(help="Avatar folder (from gafkit fit).")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output file: .ply (3DGS), .splat, or .ply/.obj mesh.")],
    format_: Annotated[Optional[str], typer.Option(
        "--format", help="ply (3DGS Gaussians), splat (web viewers) or mesh [default: from the extension].")] = None,
    frame: Annotated[Optional[int], typer.Option(help="Pose of this source frame (0-based).")] = None,
    neutral: Annotated[bool, typer.Option(help="Neutral expression and pose at the model origin (the default).")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing OUT.")] = False,
) -> None:
    """Write the avatar at one pose as a world-space 3DGS PLY, a .splat file or the head mesh."""
    from gafkit.config import build_config
    from gafkit.errors import GafkitError
    from gafkit.recon.export import ExportConfig, run_export

    if neutral and frame is not None:
        raise GafkitError("--frame and --neutral exclude each other")
    cfg = build_config(ExportConfig(), flags={"format": format_, "frame": frame})
    summary = run_export(cfg, avatar, out, device=options.device, overwrite=overwrite)
    typer.echo(json.dumps(summary))
