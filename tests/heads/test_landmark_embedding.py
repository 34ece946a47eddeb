"""The render-and-detect mediapipe landmark embedding, on the real ICT asset."""

from __future__ import annotations

import numpy as np
import torch

from gafkit.heads import load_head_model
from gafkit.heads.landmark_embedding import (
    IRIS_LANDMARKS,
    closest_surface_points,
    combine_views,
    embed_landmarks,
    render_views,
    snap_landmarks,
)


def test_closest_surface_points_edge_and_inside():
    verts = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
    tri, bary = closest_surface_points(torch.tensor([[0.2, 0.2, 0.5], [2.0, 0.5, 0.0]]), verts, faces)
    pts = (bary[:, :, None] * verts[faces[tri]]).sum(1)
    assert torch.allclose(pts, torch.tensor([[0.2, 0.2, 0.0], [1.0, 0.5, 0.0]]), atol=1e-6)


def test_combine_views_drops_occluded_hits():
    good = np.array([[0.0, 0.0, 0.0]])
    points = np.stack([good, good + 0.001, good + np.array([0.0, 0.0, 0.05]), np.full((1, 3), np.nan)])
    assert np.allclose(combine_views(points), good + 0.0005)


def test_embedding_lands_on_the_face():
    head = load_head_model("ict")
    keep = torch.cat([head.regions[k] for k in ("face", "scalp", "neck", "eyes")])
    emb = embed_landmarks(head.template, head.faces, visible_vertices=keep, eyeball_vertices=head.regions["eyes"])
    assert emb.faces.shape == (478,) and torch.allclose(emb.bary.sum(1), torch.ones(478), atol=1e-5)
    # same recipe as the shipped asset
    assert (emb.faces == head.landmarks.faces).float().mean() > 0.95

    head.landmarks = emb
    pts = head.landmark_points(head.template[None])
    cams, raster, _ = render_views(head.template, head.faces, yaws_deg=(0.0,))
    uv, z = cams.project(pts)
    ij = uv[0].floor().long()
    hit_tri = raster.tri_id[0, ij[:, 1], ij[:, 0]]
    on_face = torch.zeros(head.num_vertices, dtype=torch.bool)
    on_face[torch.cat([head.regions["face"], head.regions["eyes"]])] = True
    assert (hit_tri >= 0).all()
    assert on_face[head.faces[hit_tri]].all(1).float().mean() > 0.98
    # the embedded point is the visible surface there (not hidden behind the nose or lips)
    depth = raster.depth[0, ij[:, 1], ij[:, 0]]
    assert ((depth - z[0]).abs() < 0.003).float().mean() > 0.98


def _on_eyeball(head, faces):
    eye = torch.zeros(head.num_vertices, dtype=torch.bool)
    eye[head.regions["eyes"]] = True
    return eye[head.faces[faces]].all(1)


def test_shipped_embedding_keeps_irises_on_the_eyeballs_and_lids_off_them():
    # A lid landmark on the eyeball turns with the gaze; an iris landmark on the lid does not.
    head = load_head_model("ict")
    on_eye = _on_eyeball(head, head.landmarks.faces)
    iris = torch.zeros(478, dtype=torch.bool)
    iris[list(IRIS_LANDMARKS)] = True
    assert on_eye[iris].all() and not on_eye[~iris].any()


def test_snap_moves_wrong_side_points_along_the_view_ray():
    # Landmark 0 sits on an "eyeball" triangle (z = 0) inside the opening of a "lid" (z = 0.01, a
    # frame around it); iris landmark 468 lies on the lid, in front of the eyeball.
    eyeball = [[-1.0, -1.0, 0.0], [1.0, -1.0, 0.0], [0.0, 1.0, 0.0]]
    lid = [[2.0, -1.0, 0.01], [4.0, -1.0, 0.01], [3.0, 1.0, 0.01]]  # front-facing, to the right
    verts = torch.tensor(eyeball + lid + [[-1.0, -1.0, 0.01], [1.0, -1.0, 0.01], [0.0, 1.0, 0.01]])
    faces = torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8]])  # the third: a lid patch over the eyeball
    points = torch.zeros(478, 3)
    points[:] = torch.tensor([3.0, 0.0, 0.01])  # on the lid
    points[0] = torch.tensor([0.0, 0.0, 0.0])  # a lid landmark seen on the eyeball
    points[468] = torch.tensor([0.2, 0.1, 0.01])  # an iris point seen on the lid patch
    tri, bary = closest_surface_points(points, verts, faces)
    assert tri[0] == 0 and tri[468] == 2  # the unconstrained snap keeps both on the wrong side
    tri, bary = snap_landmarks(points, verts, faces, eyeball_vertices=torch.tensor([0, 1, 2]))
    at = (bary[:, :, None] * verts[faces[tri]]).sum(1)
    assert tri[468] == 0 and torch.allclose(at[468], torch.tensor([0.2, 0.1, 0.0]), atol=1e-5)  # straight behind
    assert tri[0] == 2 and torch.allclose(at[0], torch.tensor([0.0, 0.0, 0.01]), atol=1e-5)  # straight in front
    assert (tri[1:468] == 1).all() and (tri[469:] == 0).all()  # the other irises leave the lid too
