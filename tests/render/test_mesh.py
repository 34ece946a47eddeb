"""The pure-torch mesh rasterizer against analytic coverage, barycentrics, depth and sphere normals."""

from __future__ import annotations

import pytest
import torch

from gafkit.errors import GafkitError
from gafkit.render import mesh_backends_available
from gafkit.render.camera import Cameras
from gafkit.render.mesh import (
    interpolate,
    normals_to_rgb,
    rasterize_mesh,
    render_normals,
    render_shaded,
    vertex_normals,
)
from gafkit.render.primitives import bumpy_sphere, icosphere

FOCAL, W, H = 40.0, 48, 40


def camera_at_origin(n: int = 1, dtype=torch.float32) -> Cameras:
    """Identity extrinsics: world = OpenCV camera space."""
    k = torch.tensor([[FOCAL, 0, W / 2], [0, FOCAL, H / 2], [0, 0, 1]], dtype=dtype)
    return Cameras(
        K=k.expand(n, 3, 3).clone(), w2c=torch.eye(4, dtype=dtype).expand(n, 4, 4).clone(), width=W, height=H
    )


def pixel_rays(cams: Cameras) -> torch.Tensor:
    """[H, W, 3] camera-space directions through the pixel centres (z = 1)."""
    ys, xs = torch.meshgrid(torch.arange(H).double() + 0.5, torch.arange(W).double() + 0.5, indexing="ij")
    k = cams.K[0].double()
    return torch.stack([(xs - k[0, 2]) / k[0, 0], (ys - k[1, 2]) / k[1, 1], torch.ones_like(xs)], -1)


# A tilted triangle (depth varies across it) so perspective correction matters.
TRI = torch.tensor([[-0.5, -0.4, 2.0], [0.6, -0.3, 3.0], [0.0, 0.5, 2.5]], dtype=torch.float64)


def analytic_triangle(tri: torch.Tensor, rays: torch.Tensor):
    """Ray/plane intersection and 3D barycentrics for each pixel ray."""
    a, b, c = tri
    n = torch.cross(b - a, c - a, dim=0)
    t = (a @ n) / (rays @ n)  # ray(t) = t * dir
    p = rays * t[..., None]
    area = torch.cross(b - a, c - a, dim=0) @ n
    w0 = (torch.cross((c - b).expand_as(p), p - b, dim=-1) @ n) / area
    w1 = (torch.cross((a - c).expand_as(p), p - c, dim=-1) @ n) / area
    bary = torch.stack([w0, w1, 1 - w0 - w1], -1)
    return bary, p[..., 2]


def test_single_triangle_coverage_bary_depth():
    cams = camera_at_origin(dtype=torch.float64)
    raster = rasterize_mesh(TRI[None], torch.tensor([[0, 1, 2]]), cams, backend="torch")
    bary, depth = analytic_triangle(TRI, pixel_rays(cams))
    inside = (bary > 0).all(-1)
    clear = (bary.abs() > 1e-6).all(-1)  # centres on an edge may go either way
    assert inside.sum() > 100
    assert torch.equal(raster.mask[0][clear], inside[clear])
    assert torch.equal(raster.tri_id[0][clear], torch.where(inside, 0, -1)[clear])
    m = raster.mask[0]
    assert torch.allclose(raster.bary[0][m], bary[m], atol=1e-9)
    assert torch.allclose(raster.depth[0][m], depth[m], atol=1e-9)
    assert (raster.bary[0][~m] == 0).all() and (raster.depth[0][~m] == 0).all()


def test_nearest_surface_wins_in_any_order():
    near = TRI.float().clone()
    far = near.clone()
    far[:, 2] += 1.0
    verts = torch.cat([far, near])[None]
    for faces in (torch.tensor([[0, 1, 2], [3, 4, 5]]), torch.tensor([[3, 4, 5], [0, 1, 2]])):
        raster = rasterize_mesh(verts, faces, camera_at_origin(), backend="torch")
        winner = faces[raster.tri_id[raster.mask]]
        assert (winner >= 3).all()  # every covered pixel shows the near copy


def test_sphere_normals_match_analytic():
    verts, faces = icosphere(24)
    centre = torch.tensor([0.0, 0.0, 0.0])
    eye = torch.tensor([[0.3, 0.4, 3.0], [-2.5, 0.5, -1.0]])
    cams = Cameras.look_at(eye, centre.expand(2, 3), fov_deg=45, width=64, height=64)
    normals, mask = render_normals(verts.expand(2, -1, -1), faces, cams, space="world", backend="torch")
    raster = rasterize_mesh(verts.expand(2, -1, -1), faces, cams, backend="torch")
    assert torch.equal(mask, raster.mask) and mask.float().mean() > 0.2
    # The surface point seen at each pixel, back-projected from depth; on a sphere its normal is radial.
    ys, xs = torch.meshgrid(torch.arange(64) + 0.5, torch.arange(64) + 0.5, indexing="ij")
    k = cams.K[0]
    rays = torch.stack([(xs - k[0, 2]) / k[0, 0], (ys - k[1, 2]) / k[1, 1], torch.ones_like(xs)], -1)
    cam_pts = rays * raster.depth[..., None]
    world = (cam_pts - cams.w2c[:, None, None, :3, 3]) @ cams.w2c[:, None, :3, :3]
    expected = torch.nn.functional.normalize(world - centre, dim=-1)
    err = (normals - expected).abs()[mask]
    assert err.mean() < 0.005 and err.max() < 0.05
    assert torch.allclose(normals[mask].norm(dim=-1), torch.ones(int(mask.sum())), atol=1e-5)
    # Camera space: the silhouette centre faces the camera.
    cam_n, _ = render_normals(verts[None], faces, cams[0], backend="torch")
    assert torch.allclose(cam_n[0, 32, 32], torch.tensor([0.0, 0.0, -1.0]), atol=0.02)
    flat, _ = render_normals(verts[None], faces, cams[0], smooth=False, backend="torch")
    assert (flat[0][mask[0]] - cam_n[0][mask[0]]).norm(dim=-1).max() < 0.15


def test_interpolate_and_vertex_gradients():
    verts = TRI[None].clone().requires_grad_(True)
    faces = torch.tensor([[0, 1, 2]])
    cams = camera_at_origin(dtype=torch.float64)
    raster = rasterize_mesh(verts, faces, cams, backend="torch")
    colours = torch.eye(3, dtype=torch.float64)[None].requires_grad_(True)
    out = interpolate(colours, faces, raster)
    assert torch.allclose(out, raster.bary)
    out.sum().backward()
    # d(sum of outputs)/d(colour i, channel c) = sum over pixels of bary_i, for every channel.
    assert torch.allclose(colours.grad[0], raster.bary[0].sum((0, 1))[:, None].expand(3, 3))
    assert torch.isclose(colours.grad[0, :, 0].sum(), raster.mask.sum().double())

    # Gradients through bary w.r.t. vertices agree with finite differences where coverage is fixed.
    interior = raster.mask[0] & (raster.bary[0] > 0.05).all(-1)
    attr = torch.tensor([[[1.0], [-2.0], [0.5]]], dtype=torch.float64)

    def f(v):
        return interpolate(attr, faces, rasterize_mesh(v, faces, cams, backend="torch"))[0, ..., 0][
            interior
        ].sum()

    assert torch.autograd.gradcheck(f, (TRI[None].clone().requires_grad_(True),), eps=1e-6, atol=1e-5)


def test_normals_to_rgb_encoding():
    n = torch.tensor([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, -0.5]])
    rgb = normals_to_rgb(n.view(1, 1, 5, 3))[0, 0]
    assert rgb.tolist() == [
        [0.5, 0.5, 1.0],
        [1.0, 0.5, 0.5],
        [0.5, 1.0, 0.5],
        [0.0, 0.0, 0.0],
        [0.25, 0.25, 0.5],
    ]
    assert normals_to_rgb(n.view(1, 1, 5, 3), space="world")[0, 0, 1].tolist() == [1.0, 0.5, 0.5]
    with pytest.raises(GafkitError):
        normals_to_rgb(n, space="screen")


def test_render_shaded_colours_texture_and_antialias():
    verts, faces = bumpy_sphere(8, amplitude=0.0)
    cams = Cameras.look_at(
        torch.tensor([[0.0, 0.0, 3.0]]), torch.zeros(1, 3), fov_deg=40, width=32, height=32
    )
    grey, mask = render_shaded(verts[None], faces, cams, backend="torch")
    assert abs(grey[0, 16, 16, 0].item() - 0.8) < 0.01 and (grey[0][~mask[0]] == 0).all()
    # Light from the side: the lit half is brighter than the other (which gets only ambient).
    side, _ = render_shaded(verts[None], faces, cams, light_dir=(1.0, 0.0, 0.0), ambient=0.1, backend="torch")
    assert side[0, 16, 28, 0] > 0.5 and abs(side[0, 16, 8, 0].item() - 0.08) < 1e-4
    red = torch.tensor([1.0, 0.0, 0.0]).expand(1, verts.shape[0], 3)
    rgb, _ = render_shaded(verts[None], faces, cams, colors=red, backend="torch")
    assert rgb[0][mask[0]][:, 1:].abs().max() == 0 and rgb[0, 16, 16, 0] > 0.95
    # Texture: u < 0.5 black, u >= 0.5 white; uv from the x coordinate.
    tex = torch.zeros(4, 8, 3)
    tex[:, 4:] = 1.0
    uv = torch.stack([(verts[:, 0] + 1) / 2, (verts[:, 1] + 1) / 2], -1)[None]
    textured, _ = render_shaded(verts[None], faces, cams, uv=uv, texture=tex, backend="torch")
    assert textured[0, 16, 26].min() > 0.5 and textured[0, 16, 6].max() < 0.05
    with pytest.raises(GafkitError):
        render_shaded(verts[None], faces, cams, colors=red, uv=uv, texture=tex, backend="torch")
    # Antialiasing blends silhouette pixels with the background and keeps interiors.
    aa, aa_mask = render_shaded(verts[None], faces, cams, antialias=True, backend="torch")
    assert aa.shape == grey.shape and (aa_mask ^ mask).float().mean() < 0.05
    edge = aa[0, ..., 0][(aa[0, ..., 0] > 0.02) & (aa[0, ..., 0] < 0.3)]
    assert edge.numel() > 10
    assert abs(aa[0, 16, 16, 0].item() - 0.8) < 0.01


def test_batch_is_independent_per_camera_and_vertex_normals_outward():
    verts, faces = bumpy_sphere(10)
    n = vertex_normals(verts[None], faces)[0]
    assert ((n * verts).sum(-1) > 0).all()
    eye = torch.tensor([[0.0, 0.0, 3.0], [3.0, 0.0, 0.0], [0.0, -3.0, 0.5]])
    cams = Cameras.look_at(eye, torch.zeros(3, 3), fov_deg=40, width=24, height=24)
    batched, _ = render_normals(verts.expand(3, -1, -1), faces, cams, backend="torch")
    for i in range(3):
        single, _ = render_normals(verts[None], faces, cams[i], backend="torch")
        assert torch.allclose(batched[i], single[0], atol=1e-6)


def test_backends_and_errors():
    assert "torch" in mesh_backends_available()
    if not torch.cuda.is_available():
        assert mesh_backends_available() == ["torch"]
    verts, faces = icosphere(2)
    cams = camera_at_origin()
    with pytest.raises(GafkitError, match="nvdiffrast needs CUDA"):
        rasterize_mesh(verts[None], faces, cams, backend="nvdiffrast")
    with pytest.raises(GafkitError, match="expected auto"):
        rasterize_mesh(verts[None], faces, cams, backend="opengl")
    with pytest.raises(GafkitError, match="vertices must be"):
        rasterize_mesh(verts, faces, cams)
    with pytest.raises(GafkitError, match="faces must be"):
        rasterize_mesh(verts[None], faces.float(), cams)
    # Geometry behind the near plane is dropped, not drawn mirrored.
    behind = verts[None] + torch.tensor([0.0, 0.0, -5.0])
    assert not rasterize_mesh(behind, faces, cams).mask.any()


def test_cull_back_shows_the_inside_of_a_cut_sphere_as_background():
    """A sphere with its lower cap cut away, seen from below: without culling the inside shows through
    the cut; with it those pixels are background, and a closed sphere loses nothing."""
    verts, faces = icosphere(24)
    cams = Cameras.look_at(torch.tensor([[0.0, -3.0, 0.5]]), torch.zeros(1, 3), fov_deg=45, width=64, height=64)
    closed, mask = render_normals(verts[None], faces, cams, backend="torch")
    culled, cmask = render_normals(verts[None], faces, cams, cull_back=True, backend="torch")
    assert torch.equal(mask, cmask) and torch.equal(closed, culled)
    cut = faces[verts[faces].mean(1)[:, 1] > -0.6]  # the cap facing the camera is gone
    inside, imask = render_normals(verts[None], cut, cams, backend="torch")
    outside, omask = render_normals(verts[None], cut, cams, cull_back=True, backend="torch")
    # Through the cut the nearest surface is the far wall's inside: its normal points away (camera +z).
    seen_inside = imask & (inside[..., 2] > 0)
    assert seen_inside.float().mean() > 0.05
    assert not (omask & seen_inside).any() and (outside[seen_inside] == 0).all()
    # Elsewhere the outside stays (the two tests of facing differ only along the cut's rim).
    assert (omask != (imask & ~seen_inside)).sum() <= 0.04 * imask.sum()  # measured: 58 of 2284
