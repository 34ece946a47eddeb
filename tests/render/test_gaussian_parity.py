"""gsplat (CUDA) against the torch reference: images and gradients on random scenes (GPU only)."""

from __future__ import annotations

import math

import pytest
import torch

from gafkit.recon.render import Gaussians, gaussian_backends_available, render_gaussians
from gafkit.render.camera import Cameras

pytestmark = pytest.mark.gpu

FIELDS = ("means", "quats", "scales", "opacities", "colors_or_sh")


def scene(n: int, sh_degree: int | None, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=gen) * torch.tensor([0.35, 0.35, 0.2])
    log_scale = torch.empty(n, 3).uniform_(math.log(0.004), math.log(0.05), generator=gen)
    params = {
        "means": means,
        "quats": torch.randn(n, 4, generator=gen),
        "scales": log_scale.exp(),
        "opacities": torch.rand(n, generator=gen) * 0.9 + 0.05,
        "colors_or_sh": torch.rand(n, 3, generator=gen)
        if sh_degree is None
        else torch.randn(n, (sh_degree + 1) ** 2, 3, generator=gen) * 0.25,
    }
    return {k: v.cuda().requires_grad_() for k, v in params.items()}


def gaussians(params: dict[str, torch.Tensor], sh: bool) -> Gaussians:
    colors = {"sh": params["colors_or_sh"]} if sh else {"colors": params["colors_or_sh"]}
    return Gaussians(params["means"], params["quats"], params["scales"], params["opacities"], **colors)


def cameras(width: int, height: int) -> Cameras:
    eye = torch.tensor([[0.0, 0.0, -2.0], [0.9, -0.4, -1.7]])
    return Cameras.look_at(eye, torch.zeros(2, 3), fov_deg=35.0, width=width, height=height).to("cuda")


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1.0 / torch.mean((a.detach() - b.detach()) ** 2)))


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.detach().flatten().double(), b.detach().flatten().double(), dim=0))


def test_gsplat_backend_loads():
    assert gaussian_backends_available() == ["torch", "gsplat"]


@pytest.mark.parametrize(
    ("n", "sh_degree", "width", "height"),
    [(500, None, 128, 128), (3000, None, 256, 192), (2000, 3, 200, 168), (800, 3, 128, 128)],
)
def test_gsplat_matches_torch_reference(n, sh_degree, width, height):
    cams = cameras(width, height)
    bg = torch.tensor([[0.1, 0.2, 0.3], [1.0, 1.0, 1.0]], device="cuda")
    weights = torch.rand(2, height, width, 4, generator=torch.Generator().manual_seed(7)).cuda()
    results = {}
    for backend in ("gsplat", "torch"):
        params = scene(n, sh_degree, seed=n)
        out = render_gaussians(gaussians(params, sh_degree is not None), cams, bg=bg, backend=backend)
        (torch.cat([out.rgb, out.alpha], -1) * weights).sum().backward()
        grads = {k: params[k].grad for k in FIELDS}
        grads["means2d"] = out.means2d.grad
        results[backend] = (out, grads)
    (g_out, g_grad), (t_out, t_grad) = results["gsplat"], results["torch"]

    cosines = {name: round(cosine(g_grad[name], t_grad[name]), 5) for name in (*FIELDS, "means2d")}
    print(f"\nparity n={n} sh={sh_degree} {width}x{height}: PSNR rgb {psnr(g_out.rgb, t_out.rgb):.1f} dB, "
          f"alpha {psnr(g_out.alpha, t_out.alpha):.1f} dB, gradient cosines {cosines}")
    assert 0.2 < float(t_out.alpha.detach().mean()) < 0.95  # a scene with coverage and holes
    assert (g_out.radii == t_out.radii).float().mean() > 0.99
    assert psnr(g_out.rgb, t_out.rgb) > 40
    assert psnr(g_out.alpha, t_out.alpha) > 40
    solid = (t_out.alpha > 0.5) & (g_out.alpha > 0.5)
    depth_err = ((g_out.depth - t_out.depth).abs() / t_out.depth)[solid]
    assert float(depth_err.median()) < 1e-4 and float(depth_err.quantile(0.99)) < 1e-2
    for name, value in cosines.items():
        assert value > 0.99, name
