"""nvdiffrast backend of :mod:`gafkit.render.mesh` (CUDA only; same function names as ``mesh_torch``).

nvdiffrast is an optional dependency under the NVIDIA Source Code License (non-commercial); install
it with ``pip install git+https://github.com/NVlabs/nvdiffrast --no-build-isolation``. Only its CUDA
rasterizer (``RasterizeCudaContext``) is used, so no OpenGL is needed.

Camera mapping: OpenCV pixels go to nvdiffrast's clip space with ``x_ndc = 2 u / W - 1`` and
``y_ndc = 2 v / H - 1``. nvdiffrast's row 0 is ``y_ndc = -1``, so output rows already run top to
bottom like OpenCV images, and both sample at pixel centres ``j + 0.5``.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from gafkit.render.camera import Cameras
from gafkit.render.mesh import MeshRaster

_CONTEXTS: dict[int, object] = {}


def _context(device: torch.device) -> object:
    import nvdiffrast.torch as dr

    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _CONTEXTS:
        # One context per GPU: creating one allocates internal buffers, so reuse it across calls.
        _CONTEXTS[index] = dr.RasterizeCudaContext(device=torch.device("cuda", index))
    return _CONTEXTS[index]


def clip_space(
    cam_points: Float[Tensor, "C V 3"], cameras: Cameras, near: float, far: float
) -> Float[Tensor, "C V 4"]:
    """OpenCV camera-space points to nvdiffrast clip space (OpenGL-style depth in [-1, 1]).

    >>> cams = Cameras.look_at(torch.tensor([[0.0, 0.0, 2.0]]), torch.zeros(1, 3), focal=8.0,
    ...                        width=16, height=16)
    >>> clip = clip_space(cams.world_to_camera(torch.zeros(1, 1, 3)), cams, 0.01, 100.0)
    >>> (clip[0, 0, :2] / clip[0, 0, 3]).tolist()  # the image centre is NDC (0, 0)
    [0.0, 0.0]
    """
    k = cameras.K.to(cam_points)
    x, y, z = cam_points.unbind(-1)
    sx, sy = 2.0 / cameras.width, 2.0 / cameras.height
    fx, skew, cx = k[:, 0, 0, None], k[:, 0, 1, None], k[:, 0, 2, None]
    fy, cy = k[:, 1, 1, None], k[:, 1, 2, None]
    clip_x = sx * (fx * x + skew * y) + (sx * cx - 1.0) * z
    clip_y = sy * fy * y + (sy * cy - 1.0) * z
    clip_z = (far + near) / (far - near) * z - 2.0 * far * near / (far - near)
    return torch.stack([clip_x, clip_y, clip_z, z], -1)


def rasterize_mesh(
    vertices: Float[Tensor, "C V 3"],
    faces: Int[Tensor, "F 3"],
    cameras: Cameras,
    *,
    near: float = 0.01,
    far: float = 100.0,
) -> MeshRaster:
    """Rasterize with nvdiffrast; see :func:`gafkit.render.mesh.rasterize_mesh`.

    Needs CUDA tensors and float32 precision (vertices are cast). Triangles crossing ``near`` are
    clipped by nvdiffrast.

    >>> raster = rasterize_mesh(verts.cuda(), faces.cuda(), cams.to("cuda"))  # doctest: +SKIP
    """
    import nvdiffrast.torch as dr

    cam_pts = cameras.world_to_camera(vertices.float())
    clip = clip_space(cam_pts, cameras, near, far).contiguous()
    tri = faces.int().contiguous()
    rast, _ = dr.rasterize(
        _context(vertices.device), clip, tri, (cameras.height, cameras.width), grad_db=False
    )
    tri_id = rast[..., 3].long() - 1
    mask = tri_id >= 0
    u, v = rast[..., 0], rast[..., 1]
    bary = torch.stack([u, v, 1.0 - u - v], -1)
    bary = torch.where(mask[..., None], bary, torch.zeros_like(bary))
    # Camera z is linear on the triangle, so perspective-correct weights interpolate it exactly.
    batch = torch.arange(len(cameras), device=mask.device)[:, None, None, None]
    depth = (bary * cam_pts[..., 2][batch, faces[tri_id.clamp(min=0)]]).sum(-1)
    depth = torch.where(mask, depth, torch.zeros_like(depth))
    return MeshRaster(tri_id=tri_id, bary=bary, depth=depth, mask=mask, native=(rast, clip, tri))


def antialias(image: Float[Tensor, "C H W D"], raster: MeshRaster) -> Float[Tensor, "C H W D"]:
    """nvdiffrast's analytic silhouette antialiasing (differentiable w.r.t. image and vertices).

    ``raster`` must come from this backend's :func:`rasterize_mesh` for the same image size.

    >>> smooth = antialias(colours, raster)  # doctest: +SKIP
    """
    import nvdiffrast.torch as dr

    rast, clip, tri = raster.native
    return dr.antialias(image.float().contiguous(), rast, clip, tri)
