"""Batched, differentiable linear blend skinning for SMPL-family models (FLAME uses 5 joints).

The pipeline, for a batch of ``B`` parameter sets over a mesh of ``V`` vertices and ``J`` joints:

1. blendshapes: ``v_shaped = template + shapedirs @ coeffs (+ offsets)``;
2. joints regressed from the shaped mesh: ``joints = J_regressor @ v_shaped``;
3. pose correctives: ``v_posed = v_shaped + posedirs @ flatten(R_j - I for j = 1..J-1)``; the root is
   left out because a rigid rotation of the whole mesh must not deform it;
4. forward kinematics along ``parents`` gives each joint's world transform ``G_j``; ``G_j`` composed
   with a shift by ``-joints_j`` maps rest-pose points to posed points;
5. each vertex is moved by the skinning-weight blend of those transforms.

Everything is plain torch, so it runs on CPU and GPU, in float32 or float64, and autograd reaches
every input.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from gafkit.heads.base import axis_angle_to_matrix

__all__ = ["blend_shapes", "pose_feature", "forward_kinematics", "skin", "lbs", "parents_from_kintree"]


def blend_shapes(coeffs: Float[Tensor, "B K"], dirs: Float[Tensor, "V 3 K"]) -> Float[Tensor, "B V 3"]:
    """Per-vertex displacement of a linear basis.

    >>> blend_shapes(torch.ones(2, 4), torch.ones(10, 3, 4)).shape
    torch.Size([2, 10, 3])
    """
    return torch.einsum("bk,vck->bvc", coeffs, dirs)


def pose_feature(rotmats: Float[Tensor, "B J 3 3"]) -> Float[Tensor, "B P"]:
    """The pose-corrective input ``(R_j - I)`` of every non-root joint, flattened row-major: ``P = 9 (J - 1)``.

    >>> pose_feature(torch.eye(3).expand(2, 5, 3, 3)).abs().sum().item()
    0.0
    """
    eye = torch.eye(3, dtype=rotmats.dtype, device=rotmats.device)
    return (rotmats[:, 1:] - eye).flatten(1)


def forward_kinematics(
    rotmats: Float[Tensor, "B J 3 3"], joints: Float[Tensor, "B J 3"], parents: list[int]
) -> tuple[Float[Tensor, "B J 3"], Float[Tensor, "B J 4 4"]]:
    """Posed joint positions and the rest-to-posed transform of each joint.

    Args:
        rotmats: local rotation of each joint relative to its parent.
        joints: rest-pose joint positions.
        parents: parent index per joint, ``-1`` for the root; parents must come before children.

    Returns:
        posed joint positions ``[B, J, 3]`` and ``[B, J, 4, 4]`` transforms that take a rest-pose
        point rigidly attached to joint ``j`` to its posed position.

    >>> p, a = forward_kinematics(torch.eye(3).expand(1, 2, 3, 3), torch.zeros(1, 2, 3), [-1, 0])
    >>> a.shape
    torch.Size([1, 2, 4, 4])
    """
    rots: list[Tensor] = []
    locs: list[Tensor] = []
    for j, parent in enumerate(parents):
        if parent < 0:
            rots.append(rotmats[:, j])
            locs.append(joints[:, j])
        else:
            # A child turns with its parent and sits at its rest offset from it, carried along.
            offset = joints[:, j] - joints[:, parent]
            rots.append(rots[parent] @ rotmats[:, j])
            locs.append(locs[parent] + torch.einsum("bij,bj->bi", rots[parent], offset))
    rot = torch.stack(rots, dim=1)  # [B, J, 3, 3]
    posed = torch.stack(locs, dim=1)  # [B, J, 3]
    # x_posed = R_j (x - joint_j) + posed_j, written as one affine map.
    trans = posed - torch.einsum("bjik,bjk->bji", rot, joints)
    top = torch.cat([rot, trans[..., None]], dim=-1)  # [B, J, 3, 4]
    bottom = torch.zeros_like(top[..., :1, :])
    bottom[..., 0, 3] = 1.0
    return posed, torch.cat([top, bottom], dim=-2)


def skin(
    vertices: Float[Tensor, "B V 3"], transforms: Float[Tensor, "B J 4 4"], weights: Float[Tensor, "V J"]
) -> Float[Tensor, "B V 3"]:
    """Blend the joint transforms per vertex with ``weights`` and apply them.

    >>> skin(torch.ones(1, 4, 3), torch.eye(4).expand(1, 2, 4, 4), torch.full((4, 2), 0.5)).shape
    torch.Size([1, 4, 3])
    """
    blended = torch.einsum("vj,bjik->bvik", weights, transforms[..., :3, :])  # [B, V, 3, 4]
    return torch.einsum("bvik,bvk->bvi", blended[..., :3], vertices) + blended[..., 3]


def lbs(
    coeffs: Float[Tensor, "B K"],
    pose: Float[Tensor, "B J 3"],
    template: Float[Tensor, "V 3"],
    shapedirs: Float[Tensor, "V 3 K"],
    posedirs: Float[Tensor, "V 3 P"],
    j_regressor: Float[Tensor, "J V"],
    parents: list[int],
    weights: Float[Tensor, "V J"],
    offsets: Float[Tensor, "B V 3"] | None = None,
) -> tuple[Float[Tensor, "B V 3"], Float[Tensor, "B J 3"]]:
    """Linear blend skinning: posed vertices and posed joints.

    Args:
        coeffs: blendshape coefficients (FLAME: shape then expression), matching ``shapedirs``' last axis.
        pose: axis-angle rotation of each joint relative to its parent (joint 0 = root).
        template: rest mesh.
        shapedirs: blendshape basis.
        posedirs: pose-corrective basis, ``P = 9 (J - 1)`` (see :func:`pose_feature`).
        j_regressor: joint positions as linear combinations of the shaped vertices.
        parents: parent of each joint, ``-1`` for the root, parents before children.
        weights: skinning weights, rows summing to 1.
        offsets: optional per-vertex displacement added with the blendshapes, before the joints are
            regressed, so the skeleton follows it (how GaussianAvatars-style static offsets behave).

    Returns:
        ``vertices [B, V, 3]`` and ``joints [B, J, 3]`` (posed).

    >>> V, J = 6, 2
    >>> v, j = lbs(torch.zeros(1, 4), torch.zeros(1, J, 3), torch.rand(V, 3), torch.rand(V, 3, 4),
    ...            torch.rand(V, 3, 9), torch.full((J, V), 1 / V), [-1, 0], torch.full((V, J), 0.5))
    >>> v.shape, j.shape
    (torch.Size([1, 6, 3]), torch.Size([1, 2, 3]))
    """
    v_shaped = template + blend_shapes(coeffs, shapedirs)
    if offsets is not None:
        v_shaped = v_shaped + offsets
    joints = torch.einsum("jv,bvc->bjc", j_regressor, v_shaped)
    rotmats = axis_angle_to_matrix(pose)  # [B, J, 3, 3]
    v_posed = v_shaped + torch.einsum("vcp,bp->bvc", posedirs, pose_feature(rotmats))
    posed_joints, transforms = forward_kinematics(rotmats, joints, parents)
    return skin(v_posed, transforms, weights), posed_joints


def parents_from_kintree(kintree: Int[Tensor, "2 J"] | list[list[int]]) -> list[int]:
    """Parent list from an SMPL/FLAME ``kintree_table`` (row 0 parents, row 1 joint ids; the root's
    parent is stored as ``-1`` or ``2**32 - 1``). Raises ``ValueError`` when a parent follows its child.

    >>> parents_from_kintree([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]])
    [-1, 0, 1, 1, 1]
    """
    rows = [[int(x) for x in row] for row in kintree]
    if len(rows) != 2 or len(rows[0]) != len(rows[1]):
        raise ValueError("kintree_table must have two rows of equal length")
    ids = rows[1]
    n = len(ids)
    position = {joint: i for i, joint in enumerate(ids)}
    if sorted(ids) != list(range(n)):
        raise ValueError(f"kintree_table joint ids must be 0..{n - 1}, got {ids}")
    parents = [-1] * n
    for parent, joint in zip(rows[0], ids):
        parents[joint] = parent if parent in position else -1
    roots = [j for j, p in enumerate(parents) if p < 0]
    if roots != [0] or any(p >= j for j, p in enumerate(parents) if p >= 0):
        raise ValueError(f"kintree_table must have root 0 and parents before children, got {parents}")
    return parents
