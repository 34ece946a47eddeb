"""``gafkit prior data synth|tracked|multiview`` and ``gafkit prior appearances``: the prior's training data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from gafkit.cli.common import handles_errors, options
from gafkit.cli.prior import prior_app

data_app = typer.Typer(help="Build the prior's training examples (one data folder per command).",
                       no_args_is_help=True)
prior_app.add_typer(data_app, name="data")

Out = Annotated[Path, typer.Option("--out", "-o", help="Output data folder (a prior-data artifact).")]
Size = Annotated[Optional[int], typer.Option(help="Image size S [default: 256].")]
Views = Annotated[Optional[int], typer.Option(help="Target views V per example [default: 4].")]
Seed = Annotated[Optional[int], typer.Option(help="Seed [default: 0].")]
ShardSize = Annotated[Optional[int], typer.Option(help="Examples per shard file [default: 256].")]
Config = Annotated[Optional[Path], typer.Option(help="YAML/TOML file of settings.")]
Sets = Annotated[Optional[list[str]], typer.Option("--set", help="KEY=VALUE override (repeatable).")]
Overwrite = Annotated[bool, typer.Option(help="Replace an existing artifact at --out.")]


@data_app.command("synth")
@handles_errors
def synth(
    out: Out,
    subjects: Annotated[Optional[int], typer.Option(help="Subjects in all [default: 100].")] = None,
    examples_per_subject: Annotated[Optional[int], typer.Option(help="Examples per subject [default: 20].")] = None,
    heldout: Annotated[Optional[int], typer.Option(help="Subjects held out of --subjects [default: 5].")] = None,
    appearances: Annotated[Optional[Path], typer.Option(help="File from `gafkit prior appearances`.")] = None,
    photo_fraction: Annotated[Optional[float], typer.Option(
        help="Share of subjects with a photo appearance (needs --appearances) [default: 0.5].")] = None,
    head: Annotated[Optional[Literal["ict", "flame"]], typer.Option(help="Head model [default: ict].")] = None,
    flame_model: Annotated[Optional[Path], typer.Option(help="FLAME model file (--head flame).")] = None,
    size: Size = None, views: Views = None, seed: Seed = None, shard_size: ShardSize = None,
    config: Config = None, set_: Sets = None, overwrite: Overwrite = False,
) -> None:
    """Synthetic subjects of the head model: random identities, expressions, appearances and lighting."""
    from gafkit.config import build_config
    from gafkit.diffusion.data_config import SynthDataConfig
    from gafkit.diffusion.data_synth import run_synth_data
    from gafkit.errors import GafkitError

    if photo_fraction is not None and appearances is None:
        raise GafkitError("--photo-fraction needs --appearances FILE")
    flags = {"subjects": subjects, "examples_per_subject": examples_per_subject, "heldout": heldout,
             "appearances": appearances, "photo_fraction": photo_fraction, "head": head, "flame_model": flame_model,
             "size": size, "views": views, "seed": seed, "shard_size": shard_size}
    cfg = build_config(SynthDataConfig(), file=config, sets=set_ or (), flags=flags)
    run_synth_data(cfg, out, device=options.device, overwrite=overwrite)
    typer.echo(str(out))


@prior_app.command("appearances")
@handles_errors
def appearances(
    inputs: Annotated[list[Path], typer.Argument(help="Videos, images or image folders of real faces.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .npz of per-vertex colours and identities.")],
    frames_per_video: Annotated[Optional[int], typer.Option(help="Frames sampled per video [default: 3].")] = None,
    head: Annotated[Optional[Literal["ict", "flame"]], typer.Option(help="Head model [default: ict].")] = None,
    flame_model: Annotated[Optional[Path], typer.Option(help="FLAME model file (--head flame).")] = None,
    seed: Seed = None,
    overwrite: Overwrite = False,
) -> None:
    """Photo-based appearances (needs mediapipe) for `gafkit prior data synth --appearances`."""
    from gafkit.config import build_config
    from gafkit.diffusion.data_config import AppearancesConfig
    from gafkit.diffusion.data_synth import collect_appearances

    flags = {"frames_per_video": frames_per_video, "head": head, "flame_model": flame_model, "seed": seed}
    collect_appearances(inputs, out, build_config(AppearancesConfig(), flags=flags), overwrite=overwrite)
    typer.echo(str(out))


@data_app.command("tracked")
@handles_errors
def tracked(
    sequences: Annotated[list[Path], typer.Argument(help="Tracked sequences (`gafkit track` or `gafkit synth` output).")],
    out: Out,
    examples_per_sequence: Annotated[Optional[int], typer.Option(help="Examples per sequence [default: 50].")] = None,
    heldout: Annotated[Optional[int], typer.Option(help="How many of the last sequences are held out [default: 0].")] = None,
    flame_model: Annotated[Optional[Path], typer.Option(help="FLAME model file (FLAME-tracked sequences).")] = None,
    size: Size = None, views: Views = None, seed: Seed = None, shard_size: ShardSize = None,
    config: Config = None, set_: Sets = None, overwrite: Overwrite = False,
) -> None:
    """Frames of tracked sequences as views: head-centred crops, fg masks over white, tracked normal maps."""
    from gafkit.config import build_config
    from gafkit.diffusion.data_config import TrackedDataConfig
    from gafkit.diffusion.data_tracked import run_tracked_data

    flags = {"examples_per_sequence": examples_per_sequence, "heldout": heldout, "flame_model": flame_model,
             "size": size, "views": views, "seed": seed, "shard_size": shard_size}
    cfg = build_config(TrackedDataConfig(), file=config, sets=set_ or (), flags=flags)
    run_tracked_data(cfg, sequences, out, device=options.device, overwrite=overwrite)
    typer.echo(str(out))


@data_app.command("multiview")
@handles_errors
def multiview(
    root: Annotated[Path, typer.Argument(help="Captures: ROOT/<subject>/calibration.json, <timestep>/images/ ...")],
    out: Out,
    examples_per_timestep: Annotated[Optional[int], typer.Option(help="Examples per timestep [default: 1].")] = None,
    heldout: Annotated[Optional[int], typer.Option(help="How many of the last subjects are held out [default: 0].")] = None,
    size: Size = None, views: Views = None, seed: Seed = None, shard_size: ShardSize = None,
    config: Config = None, set_: Sets = None, overwrite: Overwrite = False,
) -> None:
    """Calibrated multi-view captures (layout in docs/PRIOR.md): V cameras + the most frontal as reference."""
    from gafkit.config import build_config
    from gafkit.diffusion.data_config import MultiviewDataConfig
    from gafkit.diffusion.data_multiview import run_multiview_data

    flags = {"examples_per_timestep": examples_per_timestep, "heldout": heldout, "size": size, "views": views,
             "seed": seed, "shard_size": shard_size}
    cfg = build_config(MultiviewDataConfig(), file=config, sets=set_ or (), flags=flags)
    run_multiview_data(cfg, root, out, device=options.device, overwrite=overwrite)
    typer.echo(str(out))
