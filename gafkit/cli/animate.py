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
        "--format", help="ply (3DGS Gaussians), splat (web viewers) or mesh (default: from the extension).")] = None,
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


@app.command(rich_help_panel="Pipeline")
@handles_errors
def animate(
    avatar: Annotated[Path, typer.Argument(help="Avatar folder (from gafkit fit).")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output video (.mp4, H.264).")],
    driver: Annotated[Optional[Path], typer.Option(
        help="Tracked sequence or parameter .npz that drives the avatar (default: its own sequence).")] = None,
    camera: Annotated[Optional[str], typer.Option(help="source, orbit or a JSON camera-path file.")] = None,
    expr: Annotated[Optional[list[str]], typer.Option(
        help="NAME=VALUE: set an expression coefficient on every frame (repeatable).")] = None,
    size: Annotated[Optional[int], typer.Option(help="Longer image side in pixels.")] = None,
    fps: Annotated[Optional[float], typer.Option(help="Frame rate (default: the driver's).")] = None,
    bg: Annotated[Optional[str], typer.Option(
        help="Background: white, black, green, #RRGGBB or R,G,B (default: the avatar's).")] = None,
    frames_dir: Annotated[Optional[Path], typer.Option(help="Also write PNG frames with alpha here.")] = None,
    side_by_side: Annotated[Optional[bool], typer.Option(
        "--side-by-side/--no-side-by-side", help="Put the driving frames next to the render.")] = None,
    config: Annotated[Optional[Path], typer.Option(help="YAML/TOML config overrides.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="key.sub=value override (repeatable).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing OUT / frames folder.")] = False,
) -> None:
    """Render the avatar driven by a performance (cross- or self-reenactment) into a video."""
    from gafkit.config import build_config
    from gafkit.recon.animate import AnimateConfig, parse_expr_edits, run_animate

    flags = {"driver": driver, "camera": camera, "size": size, "fps": fps, "bg": bg, "side_by_side": side_by_side}
    cfg = build_config(AnimateConfig(), file=config, sets=set_ or [], flags=flags)
    if expr:
        cfg.expr = {**cfg.expr, **parse_expr_edits(expr)}
    summary = run_animate(cfg, avatar, out, frames_dir=frames_dir, device=options.device, overwrite=overwrite)
    typer.echo(json.dumps(summary))


@app.command(rich_help_panel="Pipeline")
@handles_errors
def view(
    avatar: Annotated[Path, typer.Argument(help="Avatar folder (from gafkit fit).")],
    port: Annotated[int, typer.Option(help="Port to serve the viewer on.")] = 8080,
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 exposes it to the network).")] = "127.0.0.1",
    driver: Annotated[Optional[Path], typer.Option(
        help="Sequence on the timeline (tracked folder or parameter .npz) (default: the avatar's own).")] = None,
    resolution: Annotated[Optional[int], typer.Option(
        help="Longer side of the rendered image (default: 512 on CUDA, 256 on the CPU).")] = None,
    config: Annotated[Optional[Path], typer.Option(help="YAML/TOML config overrides.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="key.sub=value override (repeatable).")] = None,
) -> None:
    """Open the avatar in a browser viewer: live rendering, camera control, pose and expression sliders,
    and a timeline that plays the driving sequence. Ctrl-C stops it."""
    from gafkit.config import build_config
    from gafkit.recon.viewer import ViewerConfig, run_view

    cfg = build_config(ViewerConfig(), file=config, sets=set_ or [],
                       flags={"driver": driver, "resolution": resolution})
    viewer = run_view(cfg, avatar, host=host, port=port, device=options.device)
    typer.echo(f"gafkit view: {viewer.url} (Ctrl-C to stop)")
    viewer.serve_forever()
