"""Triangle frames, quaternions, and Gaussians that follow their triangles."""

from __future__ import annotations

import math

import torch

from gafkit.heads.base import axis_angle_to_matrix
from gafkit.recon.avatar import GaussianAvatar
from gafkit.recon.backends.torch_ref import quat_to_rotation as _quat_to_matrix
from gafkit.recon.binding import bind_to_world, matrix_to_quaternion, quaternion_multiply, triangle_frames


def test_matrix_quaternion_round_trip_all_angles():
    gen = torch.Generator().manual_seed(0)
    aa = torch.randn(500, 3, generator=gen)
    aa = aa / aa.norm(dim=1, keepdim=True) * torch.linspace(0, math.pi * 0.999, 500)[:, None]
    mats = axis_angle_to_matrix(aa)
    q = matrix_to_quaternion(mats)
    assert torch.allclose(q.norm(dim=1), torch.ones(500), atol=1e-5)
    assert (q[:, 0] >= 0).all()
    assert torch.allclose(_quat_to_matrix(q), mats, atol=1e-5)
    # The product rotates by b, then a.
    a, b = q[:250], q[250:]
    assert torch.allclose(_quat_to_matrix(quaternion_multiply(a, b)), mats[:250] @ mats[250:], atol=1e-5)


def test_triangle_frames_are_right_handed_and_on_the_triangle():
    verts = torch.randn(2, 30, 3, generator=torch.Generator().manual_seed(1))
    faces = torch.randint(0, 30, (40, 3), generator=torch.Generator().manual_seed(2))
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
    fr = triangle_frames(verts, faces)
    r = fr.rotation
    eye = torch.eye(3).expand_as(r)
    assert torch.allclose(r.transpose(-1, -2) @ r, eye, atol=1e-4)
    assert torch.allclose(torch.linalg.det(r), torch.ones(r.shape[:2]), atol=1e-4)
    # The normal is perpendicular to both edges.
    v0, v1, v2 = (verts[:, faces[:, i]] for i in range(3))
    n = r[..., 2]
    assert (n * (v1 - v0)).sum(-1).abs().max() < 1e-4 and (n * (v2 - v0)).sum(-1).abs().max() < 1e-4


def test_bound_gaussians_follow_a_similarity_transform_of_the_mesh():
    """Rotate, scale and move the mesh: world centres, rotations and scales transform the same way."""
    gen = torch.Generator().manual_seed(3)
    verts = torch.randn(1, 20, 3, generator=gen)
    faces = torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]])
    ids = torch.tensor([0, 1, 1, 2, 3, 3, 3])
    local_means = torch.randn(7, 3, generator=gen) * 0.3
    local_quats = torch.randn(7, 4, generator=gen)
    local_scales = torch.rand(7, 3, generator=gen) + 0.1
    m0, q0, s0 = bind_to_world(triangle_frames(verts, faces), ids, local_means, local_quats, local_scales)
    rot = axis_angle_to_matrix(torch.tensor([0.3, -1.2, 0.5]))
    k, t = 1.7, torch.tensor([0.1, 2.0, -3.0])
    moved = k * verts @ rot.T + t
    m1, q1, s1 = bind_to_world(triangle_frames(moved, faces), ids, local_means, local_quats, local_scales)
    assert torch.allclose(m1, k * m0 @ rot.T + t, atol=1e-4)
    assert torch.allclose(s1, k * s0, atol=1e-5)
    assert torch.allclose(_quat_to_matrix(q1), rot @ _quat_to_matrix(q0), atol=1e-5)


def test_avatar_save_load_round_trip(tmp_path):
    faces = torch.tensor([[0, 1, 2], [1, 2, 3]])
    avatar = GaussianAvatar(torch.tensor([0, 1, 1]), faces, sh_degree=1, cond_dim=5, code_dim=2)
    with torch.no_grad():
        for p in avatar.parameters():
            p.normal_()
    avatar.save(tmp_path, meta={"head_model": "ict"})
    loaded, info = GaussianAvatar.load(tmp_path)
    assert info["head_model"] == "ict" and info["num_gaussians"] == 3
    for (name, a), (_, b) in zip(avatar.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    cond = torch.randn(5)
    assert torch.equal(avatar.colors_sh(cond), loaded.colors_sh(cond))
    # The expression code changes colours only when enabled.
    assert not torch.equal(avatar.colors_sh(cond), avatar.colors_sh(torch.zeros(5)))
