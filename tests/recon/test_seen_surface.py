"""Which triangles the video saw, and the pseudo-view weight that leaves them to the frames."""

from __future__ import annotations

import math

import torch

from gafkit.recon.seen_surface import face_view_cosine, seen_faces, unseen_weight
from gafkit.render.camera import Cameras
from toy_head import ToyHead


def test_face_view_cosine_is_the_angle_to_the_camera_either_winding():
    tri = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 1]])
    # A camera 60 degrees off the normal, at the triangle's centroid's height.
    c = torch.tensor([1 / 3, 1 / 3, 0.0]) + 4 * torch.tensor([math.sin(math.pi / 3), 0, math.cos(math.pi / 3)])
    cos = face_view_cosine(tri, faces, c)
    assert torch.allclose(cos, torch.full((2,), 0.5), atol=1e-5)


def test_frames_from_the_front_see_the_face_and_not_the_back():
    model = ToyHead()
    n = 3
    params = model.zero_params(n)
    verts = model(params[0])[0]
    center = verts.mean(0)
    # Three frontal cameras (the toy head faces +Z), slightly apart.
    eye = center + torch.tensor([[0.0, 0.0, 0.6], [0.05, 0.0, 0.6], [-0.05, 0.02, 0.6]])
    cams = Cameras.look_at(eye, center.expand(n, 3), focal=200.0, width=160, height=160)
    seen = seen_faces(model, params, cams, list(range(n)), size=64)
    z = verts[model.faces].mean(1)[:, 2] - center[2]
    assert seen.shape == (model.faces.shape[0],)
    # The front cap (within about 37 degrees of the cameras' axis) is seen squarely, the back half never.
    assert seen[z > 0.8 * z.max()].min() > 0.7 and (seen[z < 0] == 0).all()
    # Fewer frames (``limit``) see no more than all of them.
    assert (seen_faces(model, params, cams, list(range(n)), size=64, limit=2) <= seen + 1e-6).all()


def test_unseen_weight_ramps_to_one_and_is_one_off_the_mesh():
    seen = torch.tensor([0.9, 0.5, 0.25, 0.0])
    tri = torch.tensor([[[0, 1, 2], [3, -1, -1]]])
    w = unseen_weight(seen, tri, 0.5)
    assert w.shape == (1, 1, 2, 3)
    assert w[0, 0].tolist() == [[0.0, 0.0, 0.5], [1.0, 1.0, 1.0]]
