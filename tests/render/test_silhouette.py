"""faces_in_masks: the per-triangle visual hull that leaves the cut-off bust out of normal maps."""

from __future__ import annotations

import torch

from gafkit.render.camera import Cameras
from gafkit.render.silhouette import faces_in_masks

W = H = 8


def _camera(n: int = 1) -> Cameras:
    # At the origin looking down +Z; a point (x, y, 1) lands on pixel (4 + 8x, 4 + 8y).
    return Cameras.from_intrinsics(8.0, 8.0, 4.0, 4.0, torch.eye(4).expand(n, 4, 4), W, H)


def _tri(x: float, y: float, z: float = 1.0) -> torch.Tensor:
    """A small triangle whose centroid projects to (4 + 8x, 4 + 8y) at depth z (scaled with z)."""
    d = 0.02
    return torch.tensor([[x - d, y - d, 1.0], [x + d, y - d, 1.0], [x, y + 2 * d, 1.0]]) * z


def _mesh(*centres) -> tuple[torch.Tensor, torch.Tensor]:
    verts = torch.cat([_tri(*c) for c in centres])[None]
    faces = torch.arange(verts.shape[1]).reshape(-1, 3)
    return verts, faces


def test_triangles_below_the_mask_go_and_occluded_ones_inside_it_stay():
    mask = torch.zeros(1, H, W)
    mask[0, :5] = 1  # foreground: the upper rows (the head); below: the cut-off bust
    # inside, inside but behind the first (occluded: still kept), below the cut
    verts, faces = _mesh((0.0, -0.2), (0.0, -0.2, 2.0), (0.0, 0.3))
    assert faces_in_masks(verts, faces, _camera(), mask).tolist() == [True, True, False]
    # uint8 masks read the same; a share of 0 keeps everything.
    assert faces_in_masks(verts, faces, _camera(), (mask * 255).byte()).tolist() == [True, True, False]
    assert faces_in_masks(verts, faces, _camera(), mask, 0.0).all()


def test_share_of_frames_and_no_evidence():
    masks = torch.zeros(4, H, W)
    masks[:3, :, :4] = 1  # three of four frames hold the left half
    verts, faces = _mesh((-0.2, 0.0), (5.0, 0.0))  # the second projects outside every image
    verts = verts.expand(4, -1, -1)
    assert faces_in_masks(verts, faces, _camera(4), masks, 0.5).tolist() == [True, True]
    assert faces_in_masks(verts, faces, _camera(4), masks, 0.75).tolist() == [True, True]
    assert faces_in_masks(verts, faces, _camera(4), masks, 0.8).tolist() == [False, True]
    # Behind the camera is no evidence either.
    behind, f = _mesh((0.0, 0.0, -1.0))
    assert faces_in_masks(behind, f, _camera(), torch.zeros(1, H, W)).tolist() == [True]


def test_carving_spares_everything_above_the_chin():
    """Masks that hold nothing at all: only the bust (below the lowest face landmark) is carved; the
    head keeps its triangles, so a mask missing some hair cannot punch a hole in the scalp."""
    from gafkit.heads import load_head_model
    from gafkit.render.silhouette import bust_faces, carve_bust

    model = load_head_model("ict")
    bust = bust_faces(model)
    chin = model.landmarks.points(model.template[None], model.faces)[0, :, 1].min()
    y = model.template[model.faces].mean(1)[:, 1]
    assert torch.equal(bust, y < chin) and 0.02 < bust.float().mean() < 0.5
    params = model.zero_params(1)
    verts = model(params)
    cam = Cameras.look_at(torch.tensor([[0.0, 0.0, 1.0]]), verts[0].mean(0, keepdim=True), fov_deg=30,
                          width=W, height=H)
    keep = carve_bust(model, params, cam, torch.zeros(1, H, W), 0.5)
    assert torch.equal(keep, ~bust)
