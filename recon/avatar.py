"""The avatar: N Gaussians bound to head-mesh triangles, with optional expression-dependent colour.

:class:`GaussianAvatar` holds the per-Gaussian parameters in triangle-local coordinates
(:mod:`gafkit.recon.binding`) and turns a posed head mesh into world-space :class:`Gaussians` for the
renderer. It is saved as ``gaussians.safetensors`` plus ``avatar.json`` in the avatar artifact.

Per-Gaussian tensors (the ``PER_GAUSSIAN`` names), N Gaussians, K = (sh_degree + 1)^2, C = expression
code size:

    face_ids       [N]        long, the triangle each Gaussian is bound to
    xyz            [N, 3]     centre in the triangle frame, units of the triangle size
    rotation       [N, 4]     (w, x, y, z) rotation in the triangle frame (any length)
    log_scale      [N, 3]     log of the scale in units of the triangle size
    opacity_logit  [N]
    sh_dc          [N, 1, 3]  degree-0 SH coefficient
    sh_rest        [N, K-1, 3] higher SH degrees (K-1 may be 0)
    expr_color     [N, C, 3]  colour change per unit of each expression-code channel (C may be 0)

The expression code is ``tanh(W [expr, jaw])`` with a shared ``W`` [C, E+3], so C numbers per frame
drive every Gaussian's colour offset: wrinkles and the mouth interior can change with expression
without a network per Gaussian.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch
from jaxtyping import Float, Int
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from gafkit.errors import InputError
from gafkit.heads.base import HeadModel, HeadParams
from gafkit.recon.binding import TriangleFrames, bind_to_world, triangle_frames
from gafkit.recon.render import Gaussians, RenderOutput, render_gaussians
from gafkit.render.camera import Cameras

PER_GAUSSIAN = ("xyz", "rotation", "log_scale", "opacity_logit", "sh_dc", "sh_rest", "expr_color")
SH_C0 = 0.28209479177387814
FORMAT = "gafkit-avatar"


def rgb_to_sh_dc(rgb: Float[Tensor, "N 3"]) -> Float[Tensor, "N 1 3"]:
    """Degree-0 SH coefficient that renders ``rgb`` (the renderer adds 0.5)."""
    return ((rgb - 0.5) / SH_C0)[:, None, :]


def expression_condition(params: HeadParams) -> Float[Tensor, "B D"]:
    """What the expression-dependent colour sees: expression coefficients and jaw rotation."""
    return torch.cat([params.expr, params.jaw], dim=-1)


class GaussianAvatar(nn.Module):
    """Gaussians bound to the triangles ``faces`` of a head model (see the module docstring)."""

    def __init__(self, face_ids: Int[Tensor, " N"], faces: Int[Tensor, "F 3"], *, sh_degree: int, cond_dim: int,
                 code_dim: int = 0, tensors: dict[str, Tensor] | None = None):
        super().__init__()
        if not 0 <= sh_degree <= 3:
            raise ValueError(f"sh_degree must be 0..3, got {sh_degree}")
        n = face_ids.shape[0]
        self.sh_degree = sh_degree
        self.code_dim = code_dim
        self.cond_dim = cond_dim
        self.register_buffer("faces", faces.long())
        self.register_buffer("face_ids", face_ids.long())
        k = (sh_degree + 1) ** 2
        init = {
            "xyz": torch.zeros(n, 3), "rotation": torch.tensor([1.0, 0, 0, 0]).repeat(n, 1),
            "log_scale": torch.zeros(n, 3), "opacity_logit": torch.zeros(n), "sh_dc": torch.zeros(n, 1, 3),
            "sh_rest": torch.zeros(n, k - 1, 3), "expr_color": torch.zeros(n, code_dim, 3),
        }
        init.update(tensors or {})
        for name in PER_GAUSSIAN:
            self.register_parameter(name, nn.Parameter(init[name].float().contiguous()))
        # Small random projection so the code channels start distinct; trained with the rest.
        gen = torch.Generator().manual_seed(0)
        self.code_proj = nn.Parameter(torch.randn(code_dim, cond_dim, generator=gen) * 0.1)

    def __len__(self) -> int:
        return self.face_ids.shape[0]

    # ---- posing -------------------------------------------------------------------------------
    def frames(self, vertices: Float[Tensor, "B V 3"]) -> TriangleFrames:
        """Frames of each Gaussian's triangle, one row per Gaussian ([B, N, ...]): cheaper than all
        triangles' frames when there are fewer Gaussians than triangles, and equal work otherwise."""
        return triangle_frames(vertices, self.faces[self.face_ids])

    def colors_sh(self, cond: Float[Tensor, " D"] | None = None) -> Float[Tensor, "N K 3"]:
        """SH coefficients, with the expression-dependent offset on the DC term when enabled."""
        dc = self.sh_dc
        if self.code_dim > 0 and cond is not None:
            code = torch.tanh(self.code_proj @ cond)  # [C]
            dc = dc + torch.einsum("ncj,c->nj", self.expr_color, code)[:, None, :] / SH_C0
        return torch.cat([dc, self.sh_rest], dim=1)

    def gaussians(self, frames: TriangleFrames, cond: Float[Tensor, " D"] | None = None, batch_index: int = 0) -> Gaussians:
        """World-space Gaussians on mesh ``batch_index`` of ``frames`` (from :meth:`frames`)."""
        rows = torch.arange(len(self), device=self.face_ids.device)
        means, quats, scales = bind_to_world(frames, rows, self.xyz, self.rotation, self.log_scale.exp(), batch_index)
        return Gaussians(means=means, quats=quats, scales=scales, opacities=torch.sigmoid(self.opacity_logit),
                         sh=self.colors_sh(cond))

    # ---- editing (densification / pruning) ----------------------------------------------------
    def per_gaussian(self) -> dict[str, Tensor]:
        return {name: getattr(self, name) for name in PER_GAUSSIAN}

    def replace(self, face_ids: Int[Tensor, " N"], tensors: dict[str, Tensor]) -> None:
        """Swap in a new set of Gaussians (new ``nn.Parameter`` objects; optimizers must be told)."""
        self.face_ids = face_ids.to(self.face_ids)
        for name in PER_GAUSSIAN:
            setattr(self, name, nn.Parameter(tensors[name].detach().contiguous()))

    # ---- files --------------------------------------------------------------------------------
    def save(self, folder: str | Path, meta: dict | None = None) -> None:
        """Write ``gaussians.safetensors`` and ``avatar.json`` into ``folder``."""
        folder = Path(folder)
        tensors = {name: t.detach().cpu().contiguous() for name, t in self.per_gaussian().items()}
        tensors.update(face_ids=self.face_ids.cpu(), faces=self.faces.cpu(), code_proj=self.code_proj.detach().cpu())
        save_file(tensors, str(folder / "gaussians.safetensors"))
        info = {"format": FORMAT, "version": 1, "num_gaussians": len(self), "sh_degree": self.sh_degree,
                "code_dim": self.code_dim, "cond_dim": self.cond_dim, **(meta or {})}
        (folder / "avatar.json").write_text(json.dumps(info, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path) -> tuple[GaussianAvatar, dict]:
        """Read what :meth:`save` wrote; returns the avatar (on the CPU) and ``avatar.json``."""
        folder = Path(folder)
        try:
            info = json.loads((folder / "avatar.json").read_text(encoding="utf-8"))
            tensors = load_file(str(folder / "gaussians.safetensors"))
        except FileNotFoundError as err:
            raise InputError(folder, f"not an avatar ({Path(err.filename).name} is missing)") from None
        except ValueError as err:
            raise InputError(folder, f"unreadable avatar files ({err})") from None
        if info.get("format") != FORMAT:
            raise InputError(folder / "avatar.json", f"not a gafkit avatar (format {info.get('format')!r})")
        avatar = cls(tensors["face_ids"], tensors["faces"], sh_degree=int(info["sh_degree"]),
                     cond_dim=int(info["cond_dim"]), code_dim=int(info["code_dim"]),
                     tensors={k: tensors[k] for k in PER_GAUSSIAN})
        with torch.no_grad():
            avatar.code_proj.copy_(tensors["code_proj"])
        return avatar, info


def render_avatar(avatar: GaussianAvatar, model: HeadModel, params: HeadParams, camera: Cameras, *,
                  bg: Float[Tensor, " 3"] | None = None, sh_degree: int | None = None, backend: str = "auto") -> RenderOutput:
    """Pose the head with ``params`` (one frame, B = 1), bind the Gaussians and render them into
    ``camera`` (one camera, or several cameras seeing the same pose)."""
    verts = model(params)
    frames = avatar.frames(verts)
    g = avatar.gaussians(frames, cond=expression_condition(params)[0])
    return render_gaussians(g, camera, bg=bg, sh_degree=sh_degree, backend=backend)


def bind_batch(avatar: GaussianAvatar, tri: TriangleFrames
               ) -> tuple[Float[Tensor, "B N 3"], Float[Tensor, "B N 4"], Float[Tensor, "B N 3"]]:
    """World centres, rotations and scales of the avatar's Gaussians on B posed meshes at once
    (``tri`` from ``avatar.frames``, [B, N, ...]): the same as ``avatar.gaussians`` frame by frame, in one
    batch of kernels instead of B (per-frame binding costs more GPU launch time than rasterizing)."""
    b, n = tri.size.shape
    flat = TriangleFrames(origin=tri.origin.reshape(1, b * n, 3), rotation=tri.rotation.reshape(1, b * n, 3, 3),
                          size=tri.size.reshape(1, b * n))
    rows = torch.arange(b * n, device=tri.size.device)
    means, quats, scales = bind_to_world(flat, rows, avatar.xyz.repeat(b, 1), avatar.rotation.repeat(b, 1),
                                         avatar.log_scale.exp().repeat(b, 1))
    return means.reshape(b, n, 3), quats.reshape(b, n, 4), scales.reshape(b, n, 3)


@torch.no_grad()
def render_sequence(avatar: GaussianAvatar, model: HeadModel, params: HeadParams, cameras: Cameras, *,
                    bg: Float[Tensor, " 3"] | None = None, backend: str = "auto", chunk: int = 16
                    ) -> Iterator[tuple[Float[Tensor, "H W 3"], Float[Tensor, "H W 1"]]]:
    """Yield frame i's colour ``[H, W, 3]`` and alpha ``[H, W, 1]``: ``params[i]`` (B frames) seen by
    ``cameras[i]`` (B cameras). Posing and binding run ``chunk`` frames at a time, which is what makes
    playback fast (one frame at a time spends more time launching kernels than rasterizing)."""
    opacities = torch.sigmoid(avatar.opacity_logit)
    for start in range(0, params.batch_size, chunk):
        p = params[start:start + chunk]
        means, quats, scales = bind_batch(avatar, avatar.frames(model(p)))
        cond = expression_condition(p)
        for b in range(p.batch_size):
            g = Gaussians(means=means[b], quats=quats[b], scales=scales[b], opacities=opacities,
                          sh=avatar.colors_sh(cond[b]))
            out = render_gaussians(g, cameras[start + b], bg=bg, backend=backend)
            yield out.rgb[0], out.alpha[0]
