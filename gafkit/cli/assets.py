"""``gafkit assets build-ict``: rebuild the embedded ICT head asset from ICT-FaceKit."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from gafkit.cli import app
from gafkit.cli.common import handles_errors

assets_app = typer.Typer(help="Build the files shipped in gafkit/assets.", no_args_is_help=True)
app.add_typer(assets_app, name="assets", rich_help_panel="Setup")


@assets_app.command("build-ict")
@handles_errors
def build_ict(
    ict_dir: Annotated[Path, typer.Argument(help="ICT-FaceKit checkout (or its FaceXModel folder).")],
    out: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="Output .safetensors (default: the packaged asset).")
    ] = None,
) -> None:
    """Convert ICT-FaceKit (MIT) into the head asset, landmark embedding included (about a minute)."""
    import hashlib

    from gafkit.heads import ICT_ASSET
    from gafkit.heads.ict_build import build_ict_asset

    path = build_ict_asset(ict_dir, out or ICT_ASSET)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    typer.echo(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, sha256 {digest})")


@assets_app.command("build-taef2")
@handles_errors
def build_taef2(
    taesd_dir: Annotated[Path, typer.Argument(help="Checkout of github.com/madebyollin/taesd (taef2_*.pth).")],
    out: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="Output folder (default: the packaged gafkit/assets/taef2).")
    ] = None,
) -> None:
    """Convert TAESD's FLUX.2 tiny autoencoder (MIT) into the prior's autoencoder folder (under a minute)."""
    from gafkit.artifact import fingerprint
    from gafkit.diffusion.autoencoder import TAEF2_ASSET
    from gafkit.diffusion.autoencoder_build import build_taef2_asset

    path = build_taef2_asset(taesd_dir, out or TAEF2_ASSET)
    size = sum(f.stat().st_size for f in path.iterdir())
    typer.echo(f"wrote {path} ({size / 1e6:.1f} MB, sha256 {fingerprint(path)['sha256']})")
