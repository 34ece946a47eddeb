"""Gaussians bound to mesh triangles: local triangle frames and the local-to-world map.

Each Gaussian belongs to one triangle. Its centre, rotation and scale are stored in that triangle's
frame, which follows the mesh as it deforms, so expression and pose move the Gaussians with the skin.
A triangle's frame (our construction; the idea is GaussianAvatars'):

- origin: the centroid;
- axes (columns of ``R``): the first edge direction, the in-plane direction perpendicular to it, and
  the unit normal (right-handed, so ``det R = +1``);
- size ``k``: the mean edge length. Local positions and scales are in units of ``k``, so a Gaussian
  keeps its place *relative to the triangle* when the triangle stretches.

World centre ``= origin + k R mu``, world rotation ``= R R(q)``, world scale ``= k s``.

>>> import torch
>>> verts = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0]]])
>>> frames = triangle_frames(verts, torch.tensor([[0, 1, 2]]))
>>> frames.rotation[0, 0].diagonal().tolist(), round(frames.size[0, 0].item(), 4)
([1.0, 1.0, 1.0], 1.1381)
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor


@dataclasses.dataclass
class TriangleFrames:
    """Local frames of F triangles for B meshes.

    Shapes:
        origin:   [B, F, 3]     triangle centroids
        rotation: [B, F, 3, 3]  columns = edge direction, in-plane perpendicular, normal
        size:     [B, F]        mean edge length
    """

    origin: Float[Tensor, "B F 3"]
    rotation: Float[Tensor, "B F 3 3"]
    size: Float[Tensor, "B F"]


def triangle_frames(vertices: Float[Tensor, "B V 3"], faces: Int[Tensor, "F 3"], eps: float = 1e-12) -> TriangleFrames:
    """Frames of every triangle of ``faces`` on the meshes ``vertices``."""
    v0, v1, v2 = (vertices[:, faces[:, i]] for i in range(3))
    e01, e02, e12 = v1 - v0, v2 - v0, v2 - v1
    x = F.normalize(e01, dim=-1, eps=eps)
    n = F.normalize(torch.cross(e01, e02, dim=-1), dim=-1, eps=eps)
    y = torch.cross(n, x, dim=-1)
    size = (e01.norm(dim=-1) + e02.norm(dim=-1) + e12.norm(dim=-1)) / 3
    return TriangleFrames(origin=(v0 + v1 + v2) / 3, rotation=torch.stack([x, y, n], dim=-1), size=size)


def matrix_to_quaternion(m: Float[Tensor, "*B 3 3"]) -> Float[Tensor, "*B 4"]:
    """Unit quaternions (w, x, y, z) with w >= 0 of rotation matrices; stable for every angle (the
    largest of the four candidate components picks the formula).

    >>> matrix_to_quaternion(torch.eye(3)).tolist()
    [1.0, 0.0, 0.0, 0.0]
    """
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    # 4 w^2, 4 x^2, 4 y^2, 4 z^2 from the diagonal; each candidate row below is 4 * (that component) * q.
    sq = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], dim=-1)
    candidates = torch.stack([
        torch.stack([sq[..., 0], m21 - m12, m02 - m20, m10 - m01], dim=-1),
        torch.stack([m21 - m12, sq[..., 1], m10 + m01, m02 + m20], dim=-1),
        torch.stack([m02 - m20, m10 + m01, sq[..., 2], m12 + m21], dim=-1),
        torch.stack([m10 - m01, m20 + m02, m21 + m12, sq[..., 3]], dim=-1),
    ], dim=-2)  # [*B, 4, 4]
    best = sq.argmax(dim=-1, keepdim=True)
    q = torch.gather(candidates, -2, best[..., None].expand(*best.shape, 4)).squeeze(-2)
    q = F.normalize(q, dim=-1)
    return torch.where(q[..., :1] < 0, -q, q)


def quaternion_multiply(a: Float[Tensor, "*B 4"], b: Float[Tensor, "*B 4"]) -> Float[Tensor, "*B 4"]:
    """Hamilton product ``a b`` (rotation by ``b`` first, then ``a``), (w, x, y, z) order."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    ], dim=-1)


def bind_to_world(
    frames: TriangleFrames,
    face_ids: Int[Tensor, " N"],
    local_means: Float[Tensor, "N 3"],
    local_quats: Float[Tensor, "N 4"],
    local_scales: Float[Tensor, "N 3"],
    batch_index: int = 0,
) -> tuple[Float[Tensor, "N 3"], Float[Tensor, "N 4"], Float[Tensor, "N 3"]]:
    """World centres, rotations (unit quaternions) and scales of N bound Gaussians on mesh ``batch_index``.

    ``local_scales`` are linear (not log), in units of the triangle size.
    """
    origin = frames.origin[batch_index, face_ids]
    rot = frames.rotation[batch_index, face_ids]
    size = frames.size[batch_index, face_ids][:, None]
    means = origin + size * torch.einsum("nij,nj->ni", rot, local_means)
    face_quats = matrix_to_quaternion(rot)
    quats = quaternion_multiply(face_quats, F.normalize(local_quats, dim=-1))
    return means, quats, local_scales * size
