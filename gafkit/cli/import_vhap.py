"""``gafkit import vhap``: other trackers' outputs as gafkit tracked sequences."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from gafkit.cli import app
from gafkit.cli.common import handles_errors

import_app = typer.Typer(name="import", help="Import sequences tracked by other tools.", no_args_is_help=True)
app.add_typer(import_app, rich_help_panel="Data")


@import_app.command("vhap")
@handles_errors
def vhap(
    source: Annotated[Path, typer.Argument(help="Folder written by VHAP's export_as_nerf_dataset.py (monocular).")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output tracked-sequence folder.")],
    flame_model: Annotated[Optional[Path], typer.Option(
        help="FLAME .pkl (or $GAFKIT_FLAME_MODEL): check coefficient counts, convert translations.")] = None,
    fps: Annotated[Optional[float], typer.Option(help="Frame rate for timestamps when the export has none [25].")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing OUT.")] = False,
) -> None:
    """Import a VHAP FLAME export (transforms.json, images, masks, flame_param/) as a tracked sequence."""
    from gafkit.config import build_config
    from gafkit.trackers.vhap_import import VhapImportConfig, import_vhap

    cfg = build_config(VhapImportConfig(), flags={"flame_model": flame_model, "fps": fps})
    import_vhap(cfg, source, out, overwrite=overwrite)
    typer.echo(str(out))
