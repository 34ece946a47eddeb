"""The pure-torch Gaussian rasterizer against closed-form images and finite differences (CPU)."""

from __future__ import annotations

import math

import pytest
import torch

from gafkit.errors import GafkitError
from gafkit.recon.backends import torch_ref
from gafkit.recon.render import Gaussians, gaussian_backends_available, render_gaussians
from gafkit.render.camera import Cameras

SH_C0 = 0.28209479177387814


def pinhole(size: int, focal: float, count: int = 1, dtype=torch.float32) -> Cameras:
    """Cameras at the origin looking down +z (identity extrinsics), principal point at the centre."""
    w2c = torch.eye(4, dtype=dtype).repeat(count, 1, 1)
    return Cameras.from_intrinsics(focal, focal, size / 2, size / 2, w2c, size, size)


def one_gaussian(mean, scale: float, opacity: float, color=(1.0, 1.0, 1.0), dtype=torch.float32) -> Gaussians:
    return Gaussians(
        means=torch.tensor([mean], dtype=dtype),
        quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=dtype),
        scales=torch.full((1, 3), scale, dtype=dtype),
        opacities=torch.tensor([opacity], dtype=dtype),
        colors=torch.tensor([color], dtype=dtype),
    )


def random_gaussians(n: int, seed: int, dtype=torch.float32, sh_degree: int | None = None) -> Gaussians:
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=gen, dtype=dtype) * 0.25
    means[:, 2] += 2.0
    extra = {}
    if sh_degree is None:
        extra["colors"] = torch.rand(n, 3, generator=gen, dtype=dtype)
    else:
        extra["sh"] = torch.randn(n, (sh_degree + 1) ** 2, 3, generator=gen, dtype=dtype) * 0.3
    return Gaussians(
        means=means,
        quats=torch.randn(n, 4, generator=gen, dtype=dtype),
        scales=torch.rand(n, 3, generator=gen, dtype=dtype) * 0.06 + 0.01,
        opacities=torch.rand(n, generator=gen, dtype=dtype) * 0.8 + 0.1,
        **extra,
    )


def analytic(size: int, center, cov, opacity: float) -> torch.Tensor:
    """gsplat's per-pixel alpha of one Gaussian: opacity * exp(-0.5 d^T cov^-1 d), zero below 1/255."""
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    d = torch.stack([xs - center[0], ys - center[1]], -1).double()
    inv = torch.linalg.inv(torch.tensor(cov, dtype=torch.float64))
    alpha = opacity * torch.exp(-0.5 * torch.einsum("hwi,ij,hwj->hw", d, inv, d))
    return torch.where(alpha >= 1 / 255, alpha, torch.zeros_like(alpha))


@pytest.mark.parametrize("mean", [(0.002, 0.001, 2.0), (0.031, -0.017, 2.5)])
def test_isotropic_gaussian_matches_closed_form(mean):
    size, focal, scale, opacity = 64, 80.0, 0.1, 0.7
    out = render_gaussians(one_gaussian(mean, scale, opacity), pinhole(size, focal))
    x, y, z = mean
    u, v = focal * x / z + size / 2, focal * y / z + size / 2
    # EWA with the projection's Jacobian: an isotropic 3D Gaussian off the axis stretches sideways.
    sx2 = (focal * scale / z) ** 2 * (1 + (x / z) ** 2) + 0.3
    sy2 = (focal * scale / z) ** 2 * (1 + (y / z) ** 2) + 0.3
    sxy = (focal * scale / z) ** 2 * x * y / z**2
    expected = analytic(size, (u, v), [[sx2, sxy], [sxy, sy2]], opacity)
    image = out.alpha[0, ..., 0].double()
    torch.testing.assert_close(image, expected, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(out.rgb[0].double(), expected[..., None].expand(-1, -1, 3), atol=2e-6, rtol=1e-5)
    # Peak: the pixel whose centre (j + 0.5) is nearest to the projected mean, with the closed-form value.
    peak = int(torch.argmax(image))
    assert (peak % size, peak // size) == (math.floor(u), math.floor(v))
    du, dv = math.floor(u) + 0.5 - u, math.floor(v) + 0.5 - v
    det = sx2 * sy2 - sxy**2
    value = opacity * math.exp(-0.5 * (sy2 * du * du - 2 * sxy * du * dv + sx2 * dv * dv) / det)
    assert image.max().item() == pytest.approx(value, rel=1e-5)
    # Width: the image's second moments are the 2D covariance, shrunk by the cut at alpha = 1/255, i.e.
    # at Mahalanobis radius r with r^2 = 2 ln(255 opacity): E[x^2 | inside] = s^2 (1 - (1 + r^2/2) e) / (1 - e).
    r2 = 2 * math.log(255 * opacity)
    shrink = (1 - (1 + r2 / 2) * math.exp(-r2 / 2)) / (1 - math.exp(-r2 / 2))
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    mass = image.sum()
    assert ((image * (xs - u) ** 2).sum() / mass).item() == pytest.approx(sx2 * shrink, rel=0.01)
    assert ((image * (ys - v) ** 2).sum() / mass).item() == pytest.approx(sy2 * shrink, rel=0.01)
    assert out.depth[0, math.floor(v), math.floor(u), 0].item() == pytest.approx(z, rel=1e-6)
    assert out.means2d[0, 0].tolist() == pytest.approx([u, v], rel=1e-6)


def test_colors_and_sh_degree0_render_the_same_image():
    g = random_gaussians(60, seed=1)
    sh = torch.zeros(len(g), 16, 3)
    sh[:, 0] = (g.colors - 0.5) / SH_C0
    sh[:, 1:] = torch.randn(len(g), 15, 3)  # ignored at sh_degree=0
    g_sh = Gaussians(g.means, g.quats, g.scales, g.opacities, sh=sh)
    cams = Cameras.look_at(torch.tensor([[0.3, 0.2, -0.5], [-0.4, 0.0, -0.2]]), torch.tensor([[0.0, 0, 2]] * 2),
                           focal=60.0, width=48, height=40)
    a = render_gaussians(g, cams, bg=torch.tensor([0.2, 0.3, 0.4]))
    b = render_gaussians(g_sh, cams, bg=torch.tensor([0.2, 0.3, 0.4]), sh_degree=0)
    torch.testing.assert_close(a.rgb, b.rgb, atol=1e-6, rtol=1e-5)
    full = render_gaussians(g_sh, cams)  # all of degree 3: the extra coefficients change the image
    assert (full.rgb - a.rgb).abs().max() > 0.05


def test_sh_basis_is_orthonormal_and_view_dependent():
    # Fibonacci sphere quadrature: the 16 real SH functions must be orthonormal over the sphere.
    n = 20000
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1 - 2 * i / n
    phi = math.pi * (3 - math.sqrt(5)) * i
    dirs = torch.stack([torch.sqrt(1 - z * z) * torch.cos(phi), torch.sqrt(1 - z * z) * torch.sin(phi), z], -1)
    columns = []
    for k in range(16):
        coeffs = torch.zeros(n, 16, 3, dtype=torch.float64)
        coeffs[:, k] = 1.0
        columns.append(torch_ref.spherical_harmonics(3, dirs, coeffs)[:, 0])
    basis = torch.stack(columns, -1)
    gram = basis.T @ basis * (4 * math.pi / n)
    torch.testing.assert_close(gram, torch.eye(16, dtype=torch.float64), atol=2e-3, rtol=0)
    # Degree-1 term 2 is +C1 * z: the colour depends on where the camera looks from.
    coeffs = torch.zeros(1, 4, 3, dtype=torch.float64)
    coeffs[0, 2] = 1.0
    up = torch_ref.spherical_harmonics(1, torch.tensor([[0.0, 0.0, 2.0]], dtype=torch.float64), coeffs)
    assert up[0, 0].item() == pytest.approx(0.4886025119029199)


def test_compositing_order_background_and_transmittance_cutoff():
    # Three Gaussians centred on pixel (8, 8), front to back; colours tell which ones were drawn.
    cams = Cameras.from_intrinsics(50.0, 50.0, 8.5, 8.5, torch.eye(4)[None], 17, 17)
    g = Gaussians(
        means=torch.tensor([[0.0, 0.0, 3.0], [0.0, 0.0, 2.0], [0.0, 0.0, 1.0]]),
        quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(3, 1),
        scales=torch.full((3, 3), 0.05),
        opacities=torch.tensor([0.9, 0.5, 0.5]),
        colors=torch.eye(3),
    )
    bg = torch.tensor([0.1, 0.2, 0.3])
    out = render_gaussians(g, cams, bg=bg)
    # Front (blue, z=1) first, then green, then red; the rest of the light is the background.
    a3, a2, a1 = 0.5, 0.5, 0.9
    expected = torch.tensor([(1 - a3) * (1 - a2) * a1, (1 - a3) * a2, a3]) + (1 - a3) * (1 - a2) * (1 - a1) * bg
    torch.testing.assert_close(out.rgb[0, 8, 8], expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(out.rgb[0, 0, 0], bg)  # every alpha < 1/255 here: bare background
    # Input order does not matter: sorting is by depth.
    perm = torch.tensor([2, 0, 1])
    shuffled = Gaussians(g.means[perm], g.quats[perm], g.scales[perm], g.opacities[perm], colors=g.colors[perm])
    torch.testing.assert_close(render_gaussians(shuffled, cams, bg=bg).rgb, out.rgb)
    # gsplat's stop rule: the Gaussian that would take transmittance to <= 1e-4 is left out.
    g.opacities = torch.tensor([0.995, 0.995, 0.995])
    out = render_gaussians(g, cams)
    torch.testing.assert_close(out.rgb[0, 8, 8], torch.tensor([0.0, 0.0, 0.995]), atol=1e-6, rtol=1e-5)
    assert out.alpha[0, 8, 8, 0].item() == pytest.approx(0.995, rel=1e-6)


def test_background_per_camera():
    g = random_gaussians(40, seed=2)
    cams = pinhole(32, 40.0, count=2)
    bg = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 1.0]])
    plain = render_gaussians(g, cams)
    with_bg = render_gaussians(g, cams, bg=bg)
    torch.testing.assert_close(with_bg.rgb, plain.rgb + (1 - plain.alpha) * bg[:, None, None, :])
    assert (plain.alpha < 1).any() and (plain.alpha > 0.5).any()
    with pytest.raises(ValueError, match="bg must be"):
        render_gaussians(g, cams, bg=torch.ones(3, 3))


def test_gaussians_behind_camera_or_outside_near_far_are_dropped():
    depths = [-1.0, 0.005, 150.0, 2.0, 5.0]
    g = Gaussians(
        means=torch.tensor([[0.0, 0.0, d] for d in depths]),
        quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(5, 1),
        scales=torch.full((5, 3), 0.2),
        opacities=torch.full((5,), 0.9),
        colors=torch.eye(3)[[0, 0, 0, 1, 2]],
    )
    out = render_gaussians(g, pinhole(32, 30.0))
    assert out.visible[0].tolist() == [False, False, False, True, True]
    assert out.radii[0, :3].tolist() == [0, 0, 0]
    assert out.rgb[..., 0].max().item() == 0.0  # the red ones (behind, too near, too far) left no trace
    out = render_gaussians(g, pinhole(32, 30.0), near=1.0, far=4.0)
    assert out.visible[0].tolist() == [False, False, False, True, False]
    assert out.rgb[..., 2].max().item() == 0.0
    off_screen = Gaussians(torch.tensor([[5.0, 0.0, 2.0]]), g.quats[:1], g.scales[:1], g.opacities[:1], colors=g.colors[:1])
    assert not render_gaussians(off_screen, pinhole(32, 30.0)).visible.any()


def test_finite_difference_gradients():
    torch.manual_seed(0)
    g = random_gaussians(4, seed=3, dtype=torch.float64)
    g.scales = g.scales + 0.05  # big enough to overlap in a 12x12 image
    cams = Cameras.look_at(torch.tensor([[0.1, -0.1, 0.0]], dtype=torch.float64),
                           torch.tensor([[0.0, 0.0, 2.0]], dtype=torch.float64), focal=20.0, width=12, height=12)
    weights = torch.rand(1, 12, 12, 5, dtype=torch.float64)

    def loss(means, scales, quats, opacities, colors):
        out = render_gaussians(Gaussians(means, quats, scales, opacities, colors=colors), cams,
                               bg=torch.tensor([0.3, 0.6, 0.9], dtype=torch.float64))
        return (torch.cat([out.rgb, out.alpha, out.depth], -1) * weights).sum(dim=(1, 2))

    inputs = [t.clone().requires_grad_() for t in (g.means, g.scales, g.quats, g.opacities, g.colors)]
    assert render_gaussians(g, cams).visible.all()
    assert torch.autograd.gradcheck(loss, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_means2d_gradient_is_the_screen_space_gradient():
    # On the optical axis d(u)/d(x) = f / z and the footprint does not change to first order, so the
    # world gradient is the retained screen gradient times f / z.
    g = one_gaussian((0.0, 0.0, 2.0), 0.05, 0.8)
    g.means.requires_grad_()
    out = render_gaussians(g, pinhole(32, 40.0))
    target = torch.linspace(0, 1, 32)[None, None, :, None]  # brighter to the right
    (out.rgb * target).sum().backward()
    assert out.means2d.grad is not None and out.means2d.grad[0, 0, 0] > 0
    assert g.means.grad[0, 0].item() == pytest.approx(out.means2d.grad[0, 0, 0].item() * 40.0 / 2.0, rel=1e-5)


def test_backend_choice():
    g, cams = random_gaussians(10, seed=4), pinhole(16, 20.0)
    assert "torch" in gaussian_backends_available()
    torch.testing.assert_close(render_gaussians(g, cams).rgb, render_gaussians(g, cams, backend="torch").rgb)
    with pytest.raises(GafkitError, match="unknown Gaussian backend"):
        render_gaussians(g, cams, backend="vulkan")
    if not torch.cuda.is_available():
        assert gaussian_backends_available() == ["torch"]
        with pytest.raises(GafkitError, match="gsplat.*unavailable"):
            render_gaussians(g, cams, backend="gsplat")
    with pytest.raises(ValueError, match="exactly one of colors or sh"):
        Gaussians(g.means, g.quats, g.scales, g.opacities)
    with pytest.raises(ValueError, match="sh_degree 2 outside 0..1"):
        render_gaussians(random_gaussians(3, seed=5, sh_degree=1), cams, sh_degree=2)
