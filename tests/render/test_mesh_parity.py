"""nvdiffrast against the pure-torch rasterizer on the same cameras (GPU only)."""

from __future__ import annotations

import math

import pytest
import torch

from gafkit.render import mesh_backends_available
from gafkit.render.camera import Cameras
from gafkit.render.mesh import interpolate, normals_to_rgb, rasterize_mesh, render_normals, render_shaded
from gafkit.render.primitives import bumpy_sphere

pytestmark = pytest.mark.gpu

nvdiffrast = pytest.importorskip("nvdiffrast.torch")


@pytest.fixture(scope="module")
def scene():
    verts, faces = bumpy_sphere(16, amplitude=0.08)  # 5,120 triangles, closed, non-convex
    angles = torch.tensor([0.0, 0.9, -1.7, 2.8])
    eye = torch.stack(
        [2.4 * torch.sin(angles), torch.tensor([0.2, -0.5, 0.8, 0.0]), 2.4 * torch.cos(angles)], -1
    )
    cams = Cameras.look_at(eye, torch.zeros(4, 3), fov_deg=45, width=256, height=192).to("cuda")
    # A slight per-camera wobble so every mesh of the batch differs.
    wobble = 1.0 + 0.02 * torch.sin(torch.arange(4.0))[:, None, None]
    return (verts[None] * wobble).cuda(), faces.cuda(), cams


def test_auto_picks_nvdiffrast_on_cuda(scene):
    assert mesh_backends_available()[0] == "nvdiffrast"
    verts, faces, cams = scene
    auto = rasterize_mesh(verts, faces, cams)
    assert auto.native is not None  # only the nvdiffrast backend keeps its rast output


def test_coverage_ids_bary_depth(scene):
    verts, faces, cams = scene
    nv = rasterize_mesh(verts, faces, cams, backend="nvdiffrast")
    ref = rasterize_mesh(verts, faces, cams, backend="torch")
    iou = (nv.mask & ref.mask).sum() / (nv.mask | ref.mask).sum()
    assert iou > 0.99 and nv.mask.float().mean() > 0.2
    both = nv.mask & ref.mask
    same = both & (nv.tri_id == ref.tri_id)
    assert same.sum() / both.sum() > 0.98
    assert (nv.bary[same] - ref.bary[same]).abs().max() < 2e-3
    assert (nv.depth[same] - ref.depth[same]).abs().max() < 1e-3
    assert (nv.depth[both] - ref.depth[both]).abs().mean() < 2e-3


@pytest.mark.parametrize("space", ["camera", "world"])
def test_normal_maps_agree(scene, space):
    verts, faces, cams = scene
    n_nv, m_nv = render_normals(verts, faces, cams, space=space, backend="nvdiffrast")
    n_ref, m_ref = render_normals(verts, faces, cams, space=space, backend="torch")
    both = m_nv & m_ref
    assert (n_nv - n_ref).abs()[both].mean() < 0.01
    rgb_nv, rgb_ref = normals_to_rgb(n_nv, space=space), normals_to_rgb(n_ref, space=space)
    assert (rgb_nv - rgb_ref).abs()[both].mean() < 0.005


def test_antialiased_images_agree(scene):
    verts, faces, cams = scene
    aa_nv, _ = render_shaded(verts, faces, cams, antialias=True, backend="nvdiffrast")
    aa_ref, _ = render_shaded(verts, faces, cams, antialias=True, backend="torch")
    hard, mask = render_shaded(verts, faces, cams, backend="nvdiffrast")
    assert (aa_nv - hard).abs().sum() > 0  # antialiasing changed silhouette pixels
    assert (aa_nv - aa_ref).abs().mean() < 0.01


def test_vertex_gradients_agree(scene):
    verts, faces, cams = scene
    nv = rasterize_mesh(verts, faces, cams, backend="nvdiffrast")
    ref = rasterize_mesh(verts, faces, cams, backend="torch")
    flat, _ = render_normals(verts, faces, cams, smooth=False, backend="torch")
    # Only pixels where both pick the same triangle and it faces the camera: at grazing silhouette
    # triangles d(bary)/d(vertex) explodes and the two backends' winners differ, which would swamp
    # the comparison (checked: the same winners give the same gradients).
    keep = ref.mask & (nv.tri_id == ref.tri_id) & (flat[..., 2] < -0.3)
    assert keep.float().mean() > 0.15
    target = torch.linspace(0, 1, verts.shape[1], device="cuda")[None, :, None]
    weight = (
        torch.sin(torch.arange(keep.numel(), device="cuda").view_as(keep) * 0.37)[..., None] * keep[..., None]
    )
    grads = {}
    for backend in ("nvdiffrast", "torch"):
        v = verts.clone().requires_grad_(True)
        raster = rasterize_mesh(v, faces, cams, backend=backend)
        # Attributes that depend on the vertices themselves plus fixed ones: both paths carry gradient.
        attrs = torch.cat([v * 0.5, target.expand(v.shape[0], -1, 3)], -1)
        (interpolate(attrs, faces, raster) * weight).sum().backward()
        grads[backend] = v.grad.flatten()
    cos = torch.nn.functional.cosine_similarity(grads["nvdiffrast"], grads["torch"], dim=0)
    assert cos > 0.99, float(cos)
    assert math.isclose(grads["nvdiffrast"].norm().item(), grads["torch"].norm().item(), rel_tol=0.05)


def test_antialias_gives_silhouette_gradients(scene):
    verts, faces, cams = scene
    grads = {}
    for aa in (False, True):
        v = verts.clone().requires_grad_(True)
        rgb, _ = render_shaded(v, faces, cams, colors=torch.ones_like(v), ambient=1.0, antialias=aa)
        # With ambient 1 and white albedo the image is a coverage mask: only antialiasing moves it.
        rgb.sum().backward()
        grads[aa] = v.grad.abs().sum().item()
    assert grads[True] > 1.0 and grads[True] > 100 * grads[False]
