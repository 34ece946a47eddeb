"""Render 3D Gaussians into a batch of cameras: one call, two backends.

``render_gaussians`` uses gsplat's CUDA rasterizer when the Gaussians live on a CUDA device and gsplat's
extension loads, and the pure-PyTorch reference (:mod:`gafkit.recon.backends.torch_ref`) everywhere
else. Both follow gsplat 1.5.3's classic pinhole rules (EWA splatting with a 0.3 px^2 low-pass,
front-to-back alpha compositing in 16x16 tiles), take the same arguments and return the same fields;
``tests/render/test_gaussian_parity.py`` checks images and gradients against each other.

>>> import torch
>>> from gafkit.render.camera import Cameras
>>> g = Gaussians(means=torch.zeros(1, 3), quats=torch.tensor([[1.0, 0, 0, 0]]), scales=torch.full((1, 3), 0.02),
...               opacities=torch.tensor([0.8]), colors=torch.tensor([[1.0, 0.5, 0.0]]))
>>> cams = Cameras.look_at(torch.tensor([[0.0, 0.0, 1.0]]), torch.zeros(1, 3), fov_deg=40, width=64, height=64)
>>> out = render_gaussians(g, cams, bg=torch.ones(3))
>>> out.rgb.shape, out.visible.tolist(), round(out.depth[0, 32, 32, 0].item(), 3)
(torch.Size([1, 64, 64, 3]), [[True]], 1.0)
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Literal

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from gafkit.errors import GafkitError

if TYPE_CHECKING:
    from gafkit.render.camera import Cameras

Backend = Literal["auto", "torch", "gsplat"]
BACKENDS = ("auto", "torch", "gsplat")


@dataclasses.dataclass
class Gaussians:
    """N 3D Gaussians with either plain colours or spherical-harmonics coefficients.

    Shapes:
        means:     [N, 3]     world-space centres
        quats:     [N, 4]     rotations (w, x, y, z); any length, normalized by the renderer
        scales:    [N, 3]     standard deviations along the rotated axes (linear, not log)
        opacities: [N]        in (0, 1) (not logits)
        colors:    [N, 3]     linear RGB, or
        sh:        [N, K, 3]  real SH coefficients, K = (degree + 1)^2 with degree 0..3; rendered colour
                              = max(0, SH(view direction) + 0.5), so degree 0 with
                              ``sh[:, 0] = (rgb - 0.5) / 0.28209479`` reproduces ``rgb``
    """

    means: Float[Tensor, "N 3"]
    quats: Float[Tensor, "N 4"]
    scales: Float[Tensor, "N 3"]
    opacities: Float[Tensor, " N"]
    colors: Float[Tensor, "N 3"] | None = None
    sh: Float[Tensor, "N K 3"] | None = None

    def __post_init__(self) -> None:
        n = self.means.shape[0]
        if (self.colors is None) == (self.sh is None):
            raise ValueError("Gaussians: give exactly one of colors or sh")
        expected = {"means": (n, 3), "quats": (n, 4), "scales": (n, 3), "opacities": (n,)}
        if self.colors is not None:
            expected["colors"] = (n, 3)
        for name, shape in expected.items():
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(f"Gaussians.{name}: expected {list(shape)}, got {list(getattr(self, name).shape)}")
        if self.sh is not None:
            k = self.sh.shape[1] if self.sh.ndim == 3 else -1
            if self.sh.ndim != 3 or self.sh.shape[0] != n or self.sh.shape[2] != 3 or k not in (1, 4, 9, 16):
                raise ValueError(f"Gaussians.sh: expected [{n}, K, 3] with K in 1, 4, 9, 16, got {list(self.sh.shape)}")

    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def sh_degree(self) -> int | None:
        """Highest SH degree stored (``None`` for plain colours)."""
        return None if self.sh is None else round(self.sh.shape[1] ** 0.5) - 1

    def to(self, device: torch.device | str) -> Gaussians:
        return dataclasses.replace(
            self, **{f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}
        )


@dataclasses.dataclass
class RenderOutput:
    """What :func:`render_gaussians` returns for C cameras of H x W pixels and N Gaussians.

    Shapes:
        rgb:     [C, H, W, 3]  colour, background composited behind the Gaussians
        alpha:   [C, H, W, 1]  accumulated opacity ``1 - T``
        depth:   [C, H, W, 1]  expected camera-space z, ``sum w z / alpha`` (0 where nothing is drawn)
        means2d: [C, N, 2]     projected centres in pixels; after ``backward`` its ``.grad`` holds the
                               screen-space gradient that densification reads
        radii:   [C, N]        footprint half-size in pixels (int), 0 = not visible
        visible: [C, N]        ``radii > 0``
    """

    rgb: Float[Tensor, "C H W 3"]
    alpha: Float[Tensor, "C H W 1"]
    depth: Float[Tensor, "C H W 1"]
    means2d: Float[Tensor, "C N 2"]
    radii: Int[Tensor, "C N"]
    visible: Bool[Tensor, "C N"]


def gaussian_backends_available() -> list[str]:
    """Backends that can render here, in order of preference for CUDA tensors (for ``gafkit doctor``).

    On a CUDA machine this builds gsplat's extension if it was never built (one to two minutes).

    >>> "torch" in gaussian_backends_available()
    True
    """
    from gafkit.recon.backends import gsplat_backend

    return ["torch"] + (["gsplat"] if gsplat_backend.load_error() is None else [])


def _pick_backend(backend: str, means: Tensor):
    from gafkit.recon.backends import gsplat_backend, torch_ref

    if backend not in BACKENDS:
        raise GafkitError(f"unknown Gaussian backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if backend == "torch":
        return torch_ref
    if backend == "gsplat":
        reason = gsplat_backend.load_error()
        if reason is not None:
            raise GafkitError(f"Gaussian backend 'gsplat' unavailable: {reason}; use backend='torch'")
        return gsplat_backend
    # gsplat's kernels are float32-only; float64 (e.g. gradient checks) stays on the reference.
    if means.is_cuda and means.dtype == torch.float32 and gsplat_backend.load_error() is None:
        return gsplat_backend
    return torch_ref


def render_gaussians(
    gaussians: Gaussians,
    cameras: Cameras,
    *,
    bg: Float[Tensor, " 3"] | Float[Tensor, "C 3"] | None = None,
    sh_degree: int | None = None,
    backend: Backend = "auto",
    near: float = 0.01,
    far: float = 100.0,
    eps2d: float = 0.3,
) -> RenderOutput:
    """Rasterize ``gaussians`` into every camera of ``cameras``; differentiable w.r.t. all inputs.

    Args:
        gaussians: the N Gaussians (see :class:`Gaussians`).
        cameras: C pinhole cameras (OpenCV axes); moved to the Gaussians' device and dtype.
        bg: background colour, one for all cameras ``[3]`` or one per camera ``[C, 3]``; ``None`` = black.
        sh_degree: SH degree to evaluate (``None`` = all stored); only with ``gaussians.sh``.
        backend: ``"auto"`` (gsplat for float32 CUDA tensors when its extension loads, else torch),
            ``"torch"`` or ``"gsplat"`` (a :class:`GafkitError` when it cannot run here).
        near, far: Gaussians whose camera-space depth lies outside ``[near, far]`` are dropped.
        eps2d: low-pass filter added to the 2D covariance diagonal, in px^2.

    Returns:
        :class:`RenderOutput` with ``rgb [C,H,W,3]``, ``alpha``/``depth [C,H,W,1]``,
        ``means2d [C,N,2]`` and ``radii``/``visible [C,N]``.
    """
    means = gaussians.means
    if gaussians.sh is None:
        if sh_degree is not None:
            raise ValueError("render_gaussians: sh_degree needs Gaussians with sh, these have colors")
        colors_or_sh = gaussians.colors
    else:
        stored = gaussians.sh_degree
        sh_degree = stored if sh_degree is None else sh_degree
        if not 0 <= sh_degree <= stored:
            raise ValueError(f"render_gaussians: sh_degree {sh_degree} outside 0..{stored} (the stored degree)")
        colors_or_sh = gaussians.sh
    n_cams = len(cameras)
    backgrounds = None
    if bg is not None:
        bg = bg.to(means)
        if bg.shape not in ((3,), (n_cams, 3)):
            raise ValueError(f"render_gaussians: bg must be [3] or [{n_cams}, 3], got {list(bg.shape)}")
        backgrounds = bg.expand(n_cams, 3).contiguous()
    impl = _pick_backend(backend, means)
    rgb, alpha, depth, means2d, radii = impl.rasterize(
        means,
        gaussians.quats,
        gaussians.scales,
        gaussians.opacities,
        colors_or_sh,
        cameras.w2c.to(means),
        cameras.K.to(means),
        cameras.width,
        cameras.height,
        sh_degree=sh_degree,
        backgrounds=backgrounds,
        near=near,
        far=far,
        eps2d=eps2d,
    )
    return RenderOutput(rgb=rgb, alpha=alpha, depth=depth, means2d=means2d, radii=radii, visible=radii > 0)
