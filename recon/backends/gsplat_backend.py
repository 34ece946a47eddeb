"""gsplat (CUDA) Gaussian rasterizer behind the same call as :mod:`gafkit.recon.backends.torch_ref`.

gsplat 1.5.3 JIT-compiles its CUDA extension on first use (one to two minutes, then cached under
``$TORCH_EXTENSIONS_DIR``). It is imported only inside these functions so that importing gafkit stays
cheap and works on machines without CUDA.
"""

from __future__ import annotations

import functools

import torch
from jaxtyping import Float, Int
from torch import Tensor

from gafkit.errors import GafkitError


@functools.cache
def load_error() -> str | None:
    """Why the gsplat backend cannot run here (``None`` when it can); the extension is built if needed.

    >>> load_error() is None or isinstance(load_error(), str)
    True
    """
    if not torch.cuda.is_available():
        return "no CUDA device (gsplat renders on CUDA only)"
    try:
        from gsplat.cuda._backend import _C
    except Exception as err:  # build and import failures both mean "unavailable", with the reason
        return f"gsplat's CUDA extension failed to load: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    if _C is None:
        return "gsplat's CUDA extension did not build (see gsplat's messages above)"
    return None


def rasterize(
    means: Float[Tensor, "N 3"],
    quats: Float[Tensor, "N 4"],
    scales: Float[Tensor, "N 3"],
    opacities: Float[Tensor, " N"],
    colors_or_sh: Float[Tensor, "N 3"] | Float[Tensor, "N K 3"],
    viewmats: Float[Tensor, "C 4 4"],
    Ks: Float[Tensor, "C 3 3"],
    width: int,
    height: int,
    *,
    sh_degree: int | None = None,
    backgrounds: Float[Tensor, "C 3"] | None = None,
    near: float = 0.01,
    far: float = 100.0,
    eps2d: float = 0.3,
) -> tuple[
    Float[Tensor, "C H W 3"], Float[Tensor, "C H W 1"], Float[Tensor, "C H W 1"], Float[Tensor, "C N 2"], Int[Tensor, "C N"]
]:
    """Render Gaussians into C cameras with gsplat; see :func:`gafkit.recon.backends.torch_ref.rasterize`.

    Float32 CUDA tensors only. ``means2d`` is gsplat's own projected-centre tensor with ``retain_grad``
    set, so its ``.grad`` after ``backward`` is the screen-space gradient densification reads. Usually
    reached through :func:`gafkit.recon.render.render_gaussians` (``backend="gsplat"``), whose example
    applies unchanged on a CUDA machine.
    """
    reason = load_error()
    if reason is not None:
        raise GafkitError(f"gsplat backend unavailable: {reason}")
    if not means.is_cuda or means.dtype != torch.float32:
        raise GafkitError(f"gsplat backend needs float32 CUDA tensors, got {means.dtype} on {means.device}")
    from gsplat import rasterization

    image, alpha, meta = rasterization(
        means,
        quats,
        scales,
        opacities,
        colors_or_sh,
        viewmats,
        Ks,
        width,
        height,
        near_plane=near,
        far_plane=far,
        eps2d=eps2d,
        sh_degree=sh_degree,
        packed=False,  # keeps means2d/radii dense [C, N, ...] like the torch reference
        backgrounds=backgrounds,
        render_mode="RGB+ED",
    )
    means2d = meta["means2d"]
    if means2d.requires_grad:
        means2d.retain_grad()
    return image[..., :3], alpha, image[..., 3:], means2d, meta["radii"].amax(-1)
