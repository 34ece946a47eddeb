"""``gafkit doctor``."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from gafkit.cli import app
from gafkit.cli.common import handles_errors


@app.command(rich_help_panel="Setup")
@handles_errors
def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    flame_model: Annotated[
        Optional[str], typer.Option(help="FLAME model file to check (default: $GAFKIT_FLAME_MODEL).")
    ] = None,
) -> None:
    """Check Python, torch/CUDA, the GPU renderers, mediapipe's models, head models and disk space.

    Exits 0 when the CPU path works (GPU parts missing are warnings), 1 otherwise.
    """
    from gafkit.doctor import diagnose

    report = diagnose(flame_model)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        from gafkit.cli.doctor_view import print_report

        print_report(report)
    raise typer.Exit(0 if report["cpu_path_ok"] else 1)
