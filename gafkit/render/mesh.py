"""Differentiable triangle-mesh rendering: coverage, barycentrics, depth, normal maps, Lambert shading.

One public API over two backends with the same function names:

- ``"nvdiffrast"`` (:mod:`gafkit.render.mesh_nvdiffrast`): CUDA only, optional dependency (NVIDIA
  Source Code License, non-commercial); gradients reach the vertices through ``bary`` and, with
  ``antialias=True``, through silhouette edges;
- ``"torch"`` (:mod:`gafkit.render.mesh_torch`): pure PyTorch on any device; gradients reach the
  vertices through ``bary`` and through per-vertex attributes (e.g. normals);
- ``"auto"``: nvdiffrast for CUDA tensors when it imports, torch otherwise.

Both sample at pixel centres (``j + 0.5``, see :mod:`gafkit.render.camera`), render both sides of
every triangle (no culling) and keep the nearest surface. Vertices are world space, one mesh per
camera (``vertices[c]`` is seen by ``cameras[c]``), faces are shared.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from gafkit.errors import GafkitError
from gafkit.render.camera import Cameras

Backend = Literal["auto", "torch", "nvdiffrast"]
NVDIFFRAST_HINT = "pip install git+https://github.com/NVlabs/nvdiffrast --no-build-isolation"


@dataclasses.dataclass
class MeshRaster:
    """What the rasterizer saw at each pixel centre.

    Shapes:
        tri_id: [C, H, W] long, face index, -1 where no triangle
        bary:   [C, H, W, 3] perspective-correct weights of the face's 3 vertices (0 where empty)
        depth:  [C, H, W] camera-space z (0 where empty)
        mask:   [C, H, W] bool coverage
    """

    tri_id: Int[Tensor, "C H W"]
    bary: Float[Tensor, "C H W 3"]
    depth: Float[Tensor, "C H W"]
    mask: Bool[Tensor, "C H W"]
    # Backend-private data that antialiasing needs (nvdiffrast: rast output, clip positions, faces).
    native: Any = dataclasses.field(default=None, repr=False, compare=False)


@functools.cache
def nvdiffrast_importable() -> bool:
    """Whether ``nvdiffrast.torch`` and its compiled extension import here."""
    if importlib.util.find_spec("nvdiffrast") is None:
        return False
    try:
        import nvdiffrast.torch  # noqa: F401
    except Exception:  # a broken or CPU-only build fails in many ways; all mean "not usable"
        return False
    return True


def resolve_backend(backend: str, device: torch.device) -> str:
    """The concrete backend (``"torch"`` or ``"nvdiffrast"``) for tensors on ``device``."""
    if backend == "auto":
        return "nvdiffrast" if device.type == "cuda" and nvdiffrast_importable() else "torch"
    if backend == "torch":
        return backend
    if backend == "nvdiffrast":
        if device.type != "cuda":
            raise GafkitError(f"mesh backend nvdiffrast needs CUDA tensors, got {device}")
        if not nvdiffrast_importable():
            raise GafkitError(
                f"mesh backend nvdiffrast is not installed or does not load ({NVDIFFRAST_HINT})"
            )
        return backend
    raise GafkitError(f"mesh backend {backend!r}: expected auto, torch or nvdiffrast")


def _check(vertices: Tensor, faces: Tensor, cameras: Cameras) -> None:
    if vertices.ndim != 3 or vertices.shape[-1] != 3 or vertices.shape[0] != len(cameras):
        raise GafkitError(f"mesh vertices must be [C={len(cameras)}, V, 3], got {list(vertices.shape)}")
    if faces.ndim != 2 or faces.shape[-1] != 3 or faces.dtype not in (torch.int32, torch.int64):
        raise GafkitError(
            f"mesh faces must be an integer [F, 3] tensor, got {faces.dtype} {list(faces.shape)}"
        )


def rasterize_mesh(
    vertices: Float[Tensor, "C V 3"],
    faces: Int[Tensor, "F 3"],
    cameras: Cameras,
    *,
    backend: Backend = "auto",
    near: float = 0.01,
    far: float = 100.0,
) -> MeshRaster:
    """Rasterize mesh ``c`` into camera ``c`` for every camera of the batch.

    Args:
        vertices: [C, V, 3] world-space positions.
        faces: [F, 3] vertex indices (int64 or int32).
        cameras: ``C`` cameras (:class:`~gafkit.render.camera.Cameras`).
        backend: ``"auto"``, ``"torch"`` or ``"nvdiffrast"``.
        near, far: camera-space depth range; the torch backend drops triangles with a vertex nearer
            than ``near`` (nvdiffrast clips them).

    Returns:
        :class:`MeshRaster` with [C, H, W] maps.

    >>> cams = Cameras.look_at(torch.tensor([[0.0, 0.0, 2.0]]), torch.zeros(1, 3), focal=64.0,
    ...                        width=32, height=32)
    >>> tri = torch.tensor([[[-1.0, -1.0, 0.0], [1.0, -1.0, 0.0], [0.0, 1.0, 0.0]]])
    >>> raster = rasterize_mesh(tri, torch.tensor([[0, 1, 2]]), cams)
    >>> raster.bary.shape, round(raster.depth[0, 16, 16].item(), 3)
    (torch.Size([1, 32, 32, 3]), 2.0)
    """
    _check(vertices, faces, cameras)
    faces = faces.long()
    if resolve_backend(backend, vertices.device) == "nvdiffrast":
        from gafkit.render import mesh_nvdiffrast as impl
    else:
        from gafkit.render import mesh_torch as impl
    return impl.rasterize_mesh(vertices, faces, cameras.to(vertices.device), near=near, far=far)


def interpolate(
    attrs: Float[Tensor, "C V D"], faces: Int[Tensor, "F 3"], raster: MeshRaster
) -> Float[Tensor, "C H W D"]:
    """Per-pixel barycentric interpolation of vertex attributes (0 where empty).

    ``attrs`` may have a batch of 1 to share attributes across cameras. ``faces`` may index another
    vertex set than the rasterized one (e.g. UV faces into UV coordinates), as long as face ``f``
    corresponds. Differentiable w.r.t. ``attrs`` and ``raster.bary``.

    >>> cams = Cameras.look_at(torch.tensor([[0.0, 0.0, 2.0]]), torch.zeros(1, 3), focal=64.0,
    ...                        width=8, height=8)
    >>> tri = torch.tensor([[[-1.0, -1.0, 0.0], [1.0, -1.0, 0.0], [0.0, 1.0, 0.0]]])
    >>> faces = torch.tensor([[0, 1, 2]])
    >>> out = interpolate(torch.eye(3)[None], faces, rasterize_mesh(tri, faces, cams))
    >>> out.shape, bool(torch.allclose(out.sum(-1)[0, 4, 4], torch.tensor(1.0)))
    (torch.Size([1, 8, 8, 3]), True)
    """
    n_cam = raster.tri_id.shape[0]
    corners = faces.long()[raster.tri_id.clamp(min=0)]  # [C, H, W, 3]
    batch = torch.arange(n_cam, device=corners.device) * (attrs.shape[0] > 1)
    vals = attrs[batch[:, None, None, None], corners]  # [C, H, W, 3, D]
    out = (vals * raster.bary[..., None].to(vals.dtype)).sum(-2)
    return torch.where(raster.mask[..., None], out, torch.zeros_like(out))


def face_normals(vertices: Float[Tensor, "C V 3"], faces: Int[Tensor, "F 3"]) -> Float[Tensor, "C F 3"]:
    """Unit face normals, outward for counter-clockwise faces seen from outside.

    >>> face_normals(torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0]]]), torch.tensor([[0, 1, 2]])).tolist()
    [[[0.0, 0.0, 1.0]]]
    """
    v = vertices[:, faces.long()]  # [C, F, 3, 3]
    return F.normalize(torch.cross(v[:, :, 1] - v[:, :, 0], v[:, :, 2] - v[:, :, 0], dim=-1), dim=-1)


def vertex_normals(vertices: Float[Tensor, "C V 3"], faces: Int[Tensor, "F 3"]) -> Float[Tensor, "C V 3"]:
    """Unit vertex normals: the area-weighted mean of adjacent face normals.

    >>> vertex_normals(torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0]]]), torch.tensor([[0, 1, 2]]))[0, 0].tolist()
    [0.0, 0.0, 1.0]
    """
    faces = faces.long()
    v = vertices[:, faces]
    scaled = torch.cross(v[:, :, 1] - v[:, :, 0], v[:, :, 2] - v[:, :, 0], dim=-1)  # length = 2 * area
    acc = torch.zeros_like(vertices)
    for k in range(3):
        acc = acc.index_add(1, faces[:, k], scaled)
    return F.normalize(acc, dim=-1)


def _rotate(vectors: Tensor, cameras: Cameras) -> Tensor:
    return vectors @ cameras.w2c[:, :3, :3].transpose(1, 2).to(vectors.dtype)


def _render(
    shade: Callable[[MeshRaster, Cameras], Tensor],
    vertices: Tensor,
    faces: Tensor,
    cameras: Cameras,
    antialias: bool,
    backend: str,
) -> tuple[Tensor, Tensor]:
    """Rasterize, shade with ``shade(raster, cameras) -> [C, H, W, D]`` and optionally antialias.

    nvdiffrast antialiases analytically at silhouette edges (``nvdiffrast.torch.antialias``); the torch
    backend renders at twice the resolution and box-filters 2x2, with mask = at least half covered.
    Either way edge pixels blend with a zero background.
    """
    _check(vertices, faces, cameras)
    cameras = cameras.to(vertices.device)
    impl = resolve_backend(backend, vertices.device)
    if antialias and impl == "torch":
        big = cameras.scaled(2)
        raster = rasterize_mesh(vertices, faces, big, backend=impl)
        image = shade(raster, big).permute(0, 3, 1, 2)
        image = F.avg_pool2d(image, 2).permute(0, 2, 3, 1)
        cover = F.avg_pool2d(raster.mask[:, None].float(), 2)[:, 0]
        return image, cover >= 0.5
    raster = rasterize_mesh(vertices, faces, cameras, backend=impl)
    image = shade(raster, cameras)
    if antialias:
        from gafkit.render.mesh_nvdiffrast import antialias as nv_antialias

        image = nv_antialias(image, raster)
    return image, raster.mask


def render_normals(
    vertices: Float[Tensor, "C V 3"],
    faces: Int[Tensor, "F 3"],
    cameras: Cameras,
    *,
    space: Literal["camera", "world"] = "camera",
    smooth: bool = True,
    antialias: bool = False,
    cull_back: bool = False,
    backend: Backend = "auto",
) -> tuple[Float[Tensor, "C H W 3"], Bool[Tensor, "C H W"]]:
    """Normal maps: unit normals where covered, 0 elsewhere.

    Args:
        space: ``"camera"`` (OpenCV axes: a surface facing the camera has normal ``(0, 0, -1)``) or
            ``"world"``.
        smooth: interpolate area-weighted vertex normals (renormalized per pixel); ``False`` gives the
            flat face normal of each pixel's triangle.
        antialias: blend silhouette edges with the background (edge normals get shorter than 1).
        cull_back: pixels whose triangle faces away from the camera (the inside of an open mesh, seen
            through a cut) are background. Triangles must wind counter-clockwise seen from outside.

    Returns:
        normals [C, H, W, 3], mask [C, H, W].

    >>> cams = Cameras.look_at(torch.tensor([[0.0, 0.0, 2.0]]), torch.zeros(1, 3), focal=64.0,
    ...                        width=16, height=16)
    >>> tri = torch.tensor([[[-1.0, -1.0, 0.0], [1.0, -1.0, 0.0], [0.0, 1.0, 0.0]]])
    >>> n, mask = render_normals(tri, torch.tensor([[0, 1, 2]]), cams)
    >>> n[0, 8, 8].tolist()  # the triangle faces +Z, toward the camera
    [0.0, 0.0, -1.0]
    """
    if space not in ("camera", "world"):
        raise GafkitError(f"render_normals: space {space!r}: expected camera or world")

    def shade(raster: MeshRaster, cams: Cameras) -> Tensor:
        if smooth:
            normals = vertex_normals(vertices, faces)
            if space == "camera":
                normals = _rotate(normals, cams)
            n = F.normalize(interpolate(normals, faces, raster), dim=-1)
        else:
            normals = face_normals(vertices, faces)
            if space == "camera":
                normals = _rotate(normals, cams)
            batch = torch.arange(normals.shape[0], device=normals.device)[:, None, None]
            n = normals[batch, raster.tri_id.clamp(min=0)]
        covered = raster.mask & _front_facing(vertices, faces, raster, cams) if cull_back else raster.mask
        return torch.where(covered[..., None], n, torch.zeros_like(n))

    image, mask = _render(shade, vertices, faces, cameras, antialias, backend)
    if cull_back:
        mask = mask & (image.abs().sum(-1) > 0)
    return image, mask


def _front_facing(vertices: Tensor, faces: Tensor, raster: MeshRaster, cameras: Cameras) -> Bool[Tensor, "C H W"]:
    """Whether each pixel's triangle faces the camera: its normal against the ray through the pixel centre."""
    normals = _rotate(face_normals(vertices, faces), cameras)  # [C, F, 3], camera space
    batch = torch.arange(normals.shape[0], device=normals.device)[:, None, None]
    n = normals[batch, raster.tri_id.clamp(min=0)]  # [C, H, W, 3]
    h, w = raster.tri_id.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(h, device=n.device) + 0.5, torch.arange(w, device=n.device) + 0.5,
                            indexing="ij")
    pix = torch.stack([xs, ys, torch.ones_like(xs)], -1).to(n.dtype)  # [H, W, 3]
    rays = torch.einsum("cij,hwj->chwi", torch.linalg.inv(cameras.K.to(n.dtype)), pix)
    return (n * rays).sum(-1) < 0


def normals_to_rgb(
    normals: Float[Tensor, "C H W 3"], *, space: Literal["camera", "world"] = "camera"
) -> Float[Tensor, "C H W 3"]:
    """Encode normals as colours in [0, 1].

    - ``"camera"`` (OpenCV camera-space normals): ``rgb = (n * (1, -1, -1) + 1) / 2``, i.e. red =
      right, green = up, blue = toward the viewer, like common tangent-space normal maps: a surface
      facing the camera is ``(0.5, 0.5, 1)`` (light blue).
    - ``"world"``: ``rgb = (n + 1) / 2``.

    Computed as ``(n' + |n|) / 2`` so that a zero vector (background) is black and a shortened one (an
    antialiased edge) fades toward black instead of grey.

    >>> normals_to_rgb(torch.tensor([0.0, 0.0, -1.0]).view(1, 1, 1, 3)).flatten().tolist()
    [0.5, 0.5, 1.0]
    """
    if space not in ("camera", "world"):
        raise GafkitError(f"normals_to_rgb: space {space!r}: expected camera or world")
    flipped = normals * normals.new_tensor((1.0, -1.0, -1.0)) if space == "camera" else normals
    return ((flipped + normals.norm(dim=-1, keepdim=True)) / 2).clamp(0.0, 1.0)


def _sample_texture(texture: Tensor, uv: Tensor) -> Tensor:
    """Bilinear lookup; ``uv`` in [0, 1] with v = 0 at the bottom row (OBJ convention)."""
    tex = texture if texture.ndim == 4 else texture[None]
    tex = tex.expand(uv.shape[0], *tex.shape[1:]).permute(0, 3, 1, 2).to(uv.dtype)
    grid = torch.stack([uv[..., 0] * 2 - 1, 1 - uv[..., 1] * 2], -1)
    out = F.grid_sample(tex, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.permute(0, 2, 3, 1)


def render_shaded(
    vertices: Float[Tensor, "C V 3"],
    faces: Int[Tensor, "F 3"],
    cameras: Cameras,
    *,
    colors: Float[Tensor, "C V 3"] | None = None,
    uv: Float[Tensor, "C T 2"] | None = None,
    uv_faces: Int[Tensor, "F 3"] | None = None,
    texture: Float[Tensor, "C Ht Wt 3"] | None = None,
    light_dir: Sequence[float] | Tensor = (0.0, 0.0, -1.0),
    ambient: float = 0.2,
    antialias: bool = False,
    backend: Backend = "auto",
) -> tuple[Float[Tensor, "C H W 3"], Bool[Tensor, "C H W"]]:
    """Lambert-shaded images: ``albedo * (ambient + (1 - ambient) * max(0, n . l))``, black background.

    Args:
        colors: [C or 1, V, 3] per-vertex albedo in [0, 1].
        uv, texture: texture coordinates [C or 1, T, 2] (v = 0 at the texture's bottom row) and a
            texture [C or 1, Ht, Wt, 3] (or [Ht, Wt, 3]); ``uv_faces`` [F, 3] indexes ``uv`` per face
            (default: ``faces``, i.e. one uv per vertex).
            Without colours or texture the albedo is a uniform 0.8 grey.
        light_dir: camera-space direction toward the light (OpenCV axes); the default lights from the
            camera.
        ambient: fraction of the albedo seen without direct light.

    >>> cams = Cameras.look_at(torch.tensor([[0.0, 0.0, 2.0]]), torch.zeros(1, 3), focal=64.0,
    ...                        width=16, height=16)
    >>> tri = torch.tensor([[[-1.0, -1.0, 0.0], [1.0, -1.0, 0.0], [0.0, 1.0, 0.0]]])
    >>> rgb, mask = render_shaded(tri, torch.tensor([[0, 1, 2]]), cams)
    >>> [round(x, 3) for x in rgb[0, 8, 8].tolist()]
    [0.8, 0.8, 0.8]
    """
    if colors is not None and texture is not None:
        raise GafkitError("render_shaded: give vertex colors or a texture, not both")
    if (uv is None) != (texture is None):
        raise GafkitError("render_shaded: a texture needs uv coordinates and uv needs a texture")
    light = F.normalize(torch.as_tensor(light_dir, dtype=vertices.dtype, device=vertices.device), dim=0)

    def shade(raster: MeshRaster, cams: Cameras) -> Tensor:
        normals = _rotate(vertex_normals(vertices, faces), cams)
        n = F.normalize(interpolate(normals, faces, raster), dim=-1)
        if colors is not None:
            albedo = interpolate(colors.to(vertices.dtype), faces, raster)
        elif texture is not None:
            coords = interpolate(uv.to(vertices.dtype), faces if uv_faces is None else uv_faces, raster)
            albedo = _sample_texture(texture, coords)
        else:
            albedo = torch.full_like(n, 0.8)
        lambert = ambient + (1.0 - ambient) * (n @ light).clamp(min=0.0)[..., None]
        rgb = albedo * lambert
        return torch.where(raster.mask[..., None], rgb, torch.zeros_like(rgb))

    return _render(shade, vertices, faces, cameras, antialias, backend)
