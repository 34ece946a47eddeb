"""The render-and-detect mediapipe landmark embedding, on the real ICT asset."""

from __future__ import annotations

import numpy as np
import torch

from gafkit.heads import load_head_model
from gafkit.heads.landmark_embedding import (
    closest_surface_points,
    combine_views,
    embed_landmarks,
    render_views,
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
    emb = embed_landmarks(head.template, head.faces, visible_vertices=keep)
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
