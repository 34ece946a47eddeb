"""``gafkit head info`` and ``gafkit head export``: inspect a head model and write posed meshes."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from gafkit.cli import app
from gafkit.cli.common import handles_errors
from gafkit.errors import GafkitError

head_app = typer.Typer(help="Inspect the head models and export posed meshes.", no_args_is_help=True)
app.add_typer(head_app, name="head", rich_help_panel="Setup")

HeadOpt = Annotated[Literal["ict", "flame"], typer.Option("--head", help="Head model.")]
FlameOpt = Annotated[
    Optional[str], typer.Option(help="FLAME model file (default: $GAFKIT_FLAME_MODEL); for --head flame.")
]


@head_app.command()
@handles_errors
def info(head: HeadOpt = "ict", flame_model: FlameOpt = None) -> None:
    """Vertex and face counts, parameter sizes, regions and whether a landmark embedding is present."""
    from gafkit.heads import load_head_model

    model = load_head_model(head, flame_model)
    typer.echo(f"head model:      {model.name}")
    typer.echo(f"vertices:        {model.num_vertices}")
    typer.echo(f"triangles:       {model.faces.shape[0]}")
    typer.echo(f"shape params:    {model.n_shape}")
    typer.echo(f"expr params:     {model.n_expr}")
    typer.echo(f"jaw joint:       {'yes' if model.has_jaw_joint else 'no'}")
    typer.echo(f"eye joints:      {'yes' if model.has_eye_joints else 'no'}")
    typer.echo(f"uv coordinates:  {'yes' if model.uvs is not None else 'no'}")
    lms = model.landmarks
    typer.echo(f"landmarks:       {f'{lms.faces.shape[0]} (mediapipe embedding)' if lms is not None else 'none'}")
    typer.echo("regions:         " + ", ".join(f"{k} ({v.numel()})" for k, v in sorted(model.regions.items())))
    pivot = ", ".join(f"{x:.4f}" for x in model.pivot.tolist())
    typer.echo(f"pivot (m):       {pivot}")


@head_app.command()
@handles_errors
def export(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output mesh, .ply or .obj.")],
    head: HeadOpt = "ict",
    flame_model: FlameOpt = None,
    expr: Annotated[list[str], typer.Option(help="Expression weight NAME=VALUE (repeatable), e.g. jawOpen=1.")] = [],  # noqa: B006
    shape: Annotated[list[str], typer.Option(help="Identity coefficient INDEX=VALUE (repeatable).")] = [],  # noqa: B006
    rotation: Annotated[
        Optional[str], typer.Option(help="Head rotation as axis-angle RX,RY,RZ in degrees, e.g. 0,30,0.")
    ] = None,
) -> None:
    """Write the head mesh posed with the given expression, identity and rotation."""
    import torch

    from gafkit.heads import load_head_model

    if out.suffix.lower() not in (".ply", ".obj"):
        raise GafkitError(f"{out}: the output must end in .ply or .obj")
    model = load_head_model(head, flame_model)
    params = model.zero_params(1)
    names = {n: i for i, n in enumerate(model.expression_names)}
    for name, value in (_assignment(a, "--expr") for a in expr):
        if name not in names:
            raise GafkitError(f"--expr: unknown expression {name!r} for {model.name}; valid: {', '.join(names)}")
        params.expr[0, names[name]] = value
    for index, value in (_assignment(a, "--shape") for a in shape):
        if not index.isdigit() or int(index) >= model.n_shape:
            raise GafkitError(f"--shape: {index!r} is not an identity index 0..{model.n_shape - 1}")
        params.shape[0, int(index)] = value
    if rotation is not None:
        params.rotation[0] = torch.tensor([math.radians(v) for v in _floats(rotation, 3, "--rotation")])
    with torch.no_grad():
        verts = model(params)[0].numpy()
    _write_mesh(out, verts, model.faces.numpy())
    typer.echo(f"wrote {out} ({verts.shape[0]} vertices, {model.faces.shape[0]} triangles)")


def _assignment(text: str, flag: str) -> tuple[str, float]:
    key, sep, value = text.partition("=")
    try:
        if not sep or not key:
            raise ValueError
        return key.strip(), float(value)
    except ValueError:
        raise GafkitError(f"{flag}: expected NAME=VALUE, got {text!r}") from None


def _floats(text: str, count: int, flag: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != count:
        raise GafkitError(f"{flag}: expected {count} comma-separated numbers, got {text!r}")
    return values


def _write_mesh(path: Path, verts, faces) -> None:
    """Binary PLY (plyfile) or text OBJ of a triangle mesh."""
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".ply":
        from plyfile import PlyData, PlyElement

        v = np.empty(len(verts), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
        v["x"], v["y"], v["z"] = verts.T
        f = np.empty(len(faces), dtype=[("vertex_indices", "i4", (3,))])
        f["vertex_indices"] = faces
        PlyData([PlyElement.describe(v, "vertex"), PlyElement.describe(f, "face")]).write(str(path))
    else:
        with open(path, "w") as fh:
            np.savetxt(fh, verts, fmt="v %.6f %.6f %.6f")
            np.savetxt(fh, faces + 1, fmt="f %d %d %d")
