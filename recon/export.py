"""``gafkit export``: an avatar at one pose as files other tools open.

Formats (all world space, metres, the avatar's world: head-model space for ``--neutral``, the tracked
camera's world for ``--frame K``):

- ``ply``: the PLY layout of the original 3D Gaussian Splatting code, which generic 3DGS viewers and
  editors read. One ``vertex`` element, binary little-endian float32 properties in this order:
  ``x y z`` (centre), ``nx ny nz`` (the normal of the triangle the Gaussian is bound to; 3DGS itself
  writes zeros, readers ignore it), ``f_dc_0..2`` (degree-0 SH coefficient per colour channel),
  ``f_rest_0..f_rest_{3(K-1)-1}`` (higher SH coefficients, channel-major: all of red's K-1 coefficients,
  then green's, then blue's), ``opacity`` (logit), ``scale_0..2`` (log of the standard deviations),
  ``rot_0..3`` (quaternion w, x, y, z). Rendered colour = SH(view direction) + 0.5, the same in
  3DGS and in gafkit, so ``f_dc`` is gafkit's ``sh[:, 0]`` unchanged.
- ``splat``: the 32-bytes-per-Gaussian format of the antimatter15 WebGL viewer and its descendants:
  centre float32x3, scale float32x3 (linear), colour RGBA uint8 (degree-0 colour and opacity),
  rotation uint8x4 (w, x, y, z, mapped from [-1, 1] to [0, 255] as ``q * 128 + 128``); Gaussians sorted
  by decreasing ``scale_x * scale_y * scale_z * opacity`` so that viewers streaming the file draw the
  big opaque ones first. View-dependent colour is dropped (the format has none).
- ``mesh``: the posed head-model mesh, PLY (``vertex`` x y z float32, ``face`` vertex_indices) or OBJ
  (``v`` and 1-based ``f`` lines), chosen by the file's extension.

Expression-dependent colour (``expr_color``) is evaluated at the exported pose.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import BinaryIO, Literal, Optional

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from gafkit.errors import GafkitError, InputError
from gafkit.heads.base import HeadParams
from gafkit.recon.avatar import SH_C0, expression_condition
from gafkit.recon.outfile import atomic_file
from gafkit.recon.render import Gaussians

FORMATS = ("ply", "splat", "mesh")
_EXTENSIONS = {"ply": (".ply",), "splat": (".splat",), "mesh": (".ply", ".obj")}
SPLAT_DTYPE = np.dtype([("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rotation", "u1", 4)])
_OPACITY_EPS = 1e-6  # keeps the logit finite for opacities that round to 0 or 1 in float32


@dataclasses.dataclass
class ExportConfig:
    """What ``gafkit export`` writes."""

    format: Optional[Literal["ply", "splat", "mesh"]] = None
    """None = from the output's extension (``.ply`` Gaussians, ``.splat``, ``.obj`` mesh)."""
    frame: Optional[int] = None
    """Pose of this source frame (0-based, tracking refinement applied); None = neutral (the identity
    with zero expression and pose, at the model origin)."""


# ---- poses ------------------------------------------------------------------------------------------

def export_params(bundle, frame: int | None) -> HeadParams:
    """Parameters (B = 1) of source frame ``frame`` of an :class:`~gafkit.recon.evaluate.AvatarBundle`,
    or its neutral pose (``canonical_params.npz``) when ``frame`` is None."""
    if frame is None:
        path = bundle.root / "canonical_params.npz"
        if not path.is_file():
            raise InputError(bundle.root, "incomplete avatar (canonical_params.npz is missing)")
        return HeadParams.load_npz(path, bundle.params.expr.device)[0]
    n = bundle.params.batch_size
    if not 0 <= frame < n:
        raise GafkitError(f"--frame {frame}: the avatar has frames 0..{n - 1}")
    return bundle.params[frame]


@torch.no_grad()
def posed_gaussians(avatar, model, params: HeadParams) -> tuple[Gaussians, Float[Tensor, "N 3"]]:
    """World-space Gaussians of ``avatar`` on the head posed by ``params`` (B = 1), and the unit normal
    of each Gaussian's triangle."""
    frames = avatar.frames(model(params))
    g = avatar.gaussians(frames, cond=expression_condition(params)[0])
    return g, frames.rotation[0, :, :, 2]


# ---- 3DGS PLY ---------------------------------------------------------------------------------------

def _ply_names(k: int) -> list[str]:
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
            + [f"f_rest_{i}" for i in range(3 * (k - 1))]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def gaussians_to_ply_bytes(g: Gaussians, normals: Float[Tensor, "N 3"] | None = None) -> bytes:
    """The 3DGS PLY (module docstring) of ``g`` (which must carry ``sh``)."""
    from plyfile import PlyData, PlyElement

    if g.sh is None:
        raise ValueError("gaussians_to_ply_bytes: the 3DGS layout stores SH coefficients; got plain colours")
    n, k = g.sh.shape[0], g.sh.shape[1]
    sh = g.sh.detach().double().cpu()
    opacity = g.opacities.detach().double().cpu().clamp(_OPACITY_EPS, 1 - _OPACITY_EPS)
    columns = [
        g.means.detach().cpu().double(),
        torch.zeros(n, 3, dtype=torch.float64) if normals is None else normals.detach().cpu().double(),
        sh[:, 0, :],
        sh[:, 1:, :].transpose(1, 2).reshape(n, 3 * (k - 1)),  # channel-major, as 3DGS stores it
        torch.logit(opacity)[:, None],
        g.scales.detach().double().cpu().log(),
        torch.nn.functional.normalize(g.quats.detach().double().cpu(), dim=-1),
    ]
    values = torch.cat(columns, dim=1).float().numpy()
    names = _ply_names(k)
    table = np.empty(n, dtype=[(name, "<f4") for name in names])
    for i, name in enumerate(names):
        table[name] = values[:, i]
    buffer = io.BytesIO()
    PlyData([PlyElement.describe(table, "vertex")], text=False, byte_order="<").write(buffer)
    return buffer.getvalue()


def read_gaussian_ply(path: str | Path | BinaryIO, device: torch.device | str = "cpu") -> Gaussians:
    """Read a 3DGS PLY (ours or another tool's; a path or a binary stream) back into :class:`Gaussians`
    (activated values: linear scales, opacities in 0..1)."""
    from plyfile import PlyData

    try:
        vertex = PlyData.read(path if hasattr(path, "read") else str(path))["vertex"]
    except (OSError, ValueError, KeyError, EOFError) as err:
        raise InputError(path, f"not a readable 3DGS PLY ({err})") from None
    present = set(vertex.data.dtype.names)
    k = 1 + sum(1 for name in present if name.startswith("f_rest_")) // 3
    if k not in (1, 4, 9, 16):
        raise InputError(path, f"{3 * (k - 1)} f_rest properties: not a whole SH degree")
    missing = [name for name in _ply_names(k) if name not in present and name not in ("nx", "ny", "nz")]
    if missing:
        raise InputError(path, f"not a 3DGS PLY (missing {', '.join(missing[:4])})")

    def cols(names: list[str]) -> Tensor:
        return torch.from_numpy(np.stack([np.asarray(vertex[name], dtype=np.float32) for name in names], axis=1))

    n = len(vertex.data)
    rest = cols([f"f_rest_{i}" for i in range(3 * (k - 1))]).reshape(n, 3, k - 1).transpose(1, 2)
    sh = torch.cat([cols(["f_dc_0", "f_dc_1", "f_dc_2"])[:, None, :], rest], dim=1)
    g = Gaussians(means=cols(["x", "y", "z"]), quats=cols(["rot_0", "rot_1", "rot_2", "rot_3"]),
                  scales=cols(["scale_0", "scale_1", "scale_2"]).exp(),
                  opacities=torch.sigmoid(cols(["opacity"])[:, 0]), sh=sh.contiguous())
    return g.to(device)


# ---- .splat -----------------------------------------------------------------------------------------

def gaussians_to_splat_bytes(g: Gaussians) -> bytes:
    """The antimatter15 ``.splat`` records (module docstring) of ``g``."""
    means = g.means.detach().float().cpu().numpy()
    scales = g.scales.detach().float().cpu().numpy()
    opacity = g.opacities.detach().float().cpu().numpy()
    rgb = (g.colors if g.sh is None else g.sh[:, 0, :] * SH_C0 + 0.5).detach().float().cpu().numpy()
    quats = torch.nn.functional.normalize(g.quats.detach().float().cpu(), dim=-1).numpy()
    order = np.argsort(-(scales.prod(axis=1) * opacity), kind="stable")
    records = np.empty(len(order), dtype=SPLAT_DTYPE)
    records["position"] = means[order]
    records["scale"] = scales[order]
    rgba = np.concatenate([rgb, opacity[:, None]], axis=1)[order]
    records["rgba"] = np.clip(np.round(rgba * 255), 0, 255).astype(np.uint8)
    records["rotation"] = np.clip(np.round(quats[order] * 128 + 128), 0, 255).astype(np.uint8)
    return records.tobytes()


def read_splat(path: str | Path, device: torch.device | str = "cpu") -> Gaussians:
    """Decode a ``.splat`` file into :class:`Gaussians` with plain colours (file order kept)."""
    data = Path(path).read_bytes()
    if len(data) % SPLAT_DTYPE.itemsize:
        raise InputError(path, f"{len(data)} bytes is not a whole number of {SPLAT_DTYPE.itemsize}-byte records")
    records = np.frombuffer(data, dtype=SPLAT_DTYPE)
    rgba = torch.from_numpy(records["rgba"].astype(np.float32) / 255)
    quats = torch.from_numpy((records["rotation"].astype(np.float32) - 128) / 128)
    g = Gaussians(means=torch.from_numpy(records["position"].copy()), quats=quats,
                  scales=torch.from_numpy(records["scale"].copy()), opacities=rgba[:, 3].contiguous(),
                  colors=rgba[:, :3].contiguous())
    return g.to(device)


# ---- mesh -------------------------------------------------------------------------------------------

def mesh_bytes(vertices: Float[Tensor, "V 3"], faces: Int[Tensor, "F 3"], suffix: str) -> bytes:
    """A triangle mesh as binary PLY (``.ply``) or OBJ (``.obj``)."""
    verts = vertices.detach().float().cpu().numpy()
    tris = faces.detach().cpu().numpy().astype(np.int32)
    if suffix == ".obj":
        lines = ["# gafkit head mesh"]
        lines += [f"v {x:.7g} {y:.7g} {z:.7g}" for x, y, z in verts]
        lines += [f"f {a} {b} {c}" for a, b, c in tris + 1]
        return ("\n".join(lines) + "\n").encode()
    from plyfile import PlyData, PlyElement

    vtable = np.empty(len(verts), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4")])
    vtable["x"], vtable["y"], vtable["z"] = verts.T
    ftable = np.empty(len(tris), dtype=[("vertex_indices", "O")])
    ftable["vertex_indices"] = list(tris)
    buffer = io.BytesIO()
    PlyData([PlyElement.describe(vtable, "vertex"),
             PlyElement.describe(ftable, "face", val_types={"vertex_indices": "i4"}, len_types={"vertex_indices": "u1"})],
            text=False, byte_order="<").write(buffer)
    return buffer.getvalue()


# ---- the stage --------------------------------------------------------------------------------------

def resolve_format(out: Path, fmt: str | None) -> str:
    """The export format for ``out``: ``fmt`` checked against the extension, or read from it."""
    suffix = out.suffix.lower()
    if fmt is None:
        guessed = {".ply": "ply", ".splat": "splat", ".obj": "mesh"}.get(suffix)
        if guessed is None:
            raise GafkitError(f"{out}: cannot tell the format from the extension; use .ply, .splat or .obj, "
                              "or give --format")
        return guessed
    if fmt not in FORMATS:
        raise GafkitError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if suffix not in _EXTENSIONS[fmt]:
        raise GafkitError(f"{out}: a {fmt} export needs the extension {' or '.join(_EXTENSIONS[fmt])}")
    return fmt


def run_export(cfg: ExportConfig, avatar_path: str | Path, out: str | Path, *, device: str = "cpu",
               overwrite: bool = False) -> dict:
    """Write the avatar at ``cfg.frame`` (or neutral) to ``out``; returns a summary (format, counts)."""
    from gafkit.device import resolve_device
    from gafkit.recon.evaluate import load_avatar

    out = Path(out)
    fmt = resolve_format(out, cfg.format)
    bundle = load_avatar(avatar_path, resolve_device(device))
    params = export_params(bundle, cfg.frame)
    with atomic_file(out, overwrite) as tmp:
        if fmt == "mesh":
            with torch.no_grad():
                verts = bundle.model(params)[0]
            tmp.write_bytes(mesh_bytes(verts, bundle.model.faces, out.suffix.lower()))
            return {"format": fmt, "path": str(out), "vertices": int(verts.shape[0]),
                    "faces": int(bundle.model.faces.shape[0])}
        g, normals = posed_gaussians(bundle.avatar, bundle.model, params)
        tmp.write_bytes(gaussians_to_ply_bytes(g, normals) if fmt == "ply" else gaussians_to_splat_bytes(g))
    return {"format": fmt, "path": str(out), "gaussians": len(g), "sh_degree": g.sh_degree}
