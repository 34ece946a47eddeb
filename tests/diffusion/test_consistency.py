"""Reprojection agreement: views of an unlit, smoothly coloured head agree; the same views shuffled do not."""

from __future__ import annotations

import torch

from gafkit.diffusion.consistency import reprojection_agreement
from gafkit.diffusion.views import head_center, orbit_cameras
from gafkit.heads import load_head_model
from gafkit.render.mesh import render_shaded


def test_consistent_views_agree_and_shuffled_views_do_not():
    head = load_head_model("ict")
    with torch.no_grad():
        verts = head(head.zero_params(1))[0]
    center = head_center(head, verts)
    cams = orbit_cameras(center, torch.eye(3), 1.2, torch.tensor([-40.0, -10.0, 20.0]), torch.zeros(3),
                         focal=360.0, size=128)
    colors = ((verts - verts.mean(0)) / 0.2 + 0.5).clamp(0, 1)[None]  # position as colour: unique, smooth
    rgb, cover = render_shaded(verts.expand(3, -1, -1), head.faces, cams, colors=colors, light_dir=(0.0, 0.0, -1.0),
                               ambient=1.0, backend="torch")
    images = (rgb + (1 - cover[..., None].float())).permute(0, 3, 1, 2)
    good = reprojection_agreement(images, verts, head.faces, cams, backend="torch")
    bad = reprojection_agreement(images[[1, 2, 0]], verts, head.faces, cams, backend="torch")
    assert good["pixels"] > 1000 and good["pixels"] == bad["pixels"]
    assert good["psnr"] > 25 and good["psnr"] > bad["psnr"] + 10, (good, bad)
