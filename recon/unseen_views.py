"""Opacity the avatar puts where no view of the video looks: a cheap guard against floaters.

A monocular video sees the head from the front, so Gaussians may drift behind or beside it where the
frames never penalize them; turned views (``gafkit animate --camera orbit``) then show them as fog.
Each step, :class:`OutsideOpacity` renders the avatar's opacity at one random orbit view of a random
training frame and penalizes what falls outside that frame's head-mesh silhouette, dilated by a
margin that leaves room for hair beyond the mesh. It needs no diffusion prior; with one, the two add.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor

from gafkit.diffusion.views import frame_orbit, sample_orbit
from gafkit.heads.base import HeadModel, HeadParams
from gafkit.recon.avatar import GaussianAvatar, render_avatar
from gafkit.render.camera import Cameras
from gafkit.render.mesh import rasterize_mesh


def outside_opacity(alpha: Float[Tensor, "C H W 1"], silhouette: Bool[Tensor, "C H W"], margin_px: int) -> Tensor:
    """Mean rendered opacity outside ``silhouette`` dilated by ``margin_px`` (a square window).

    >>> sil = torch.zeros(1, 8, 8, dtype=torch.bool); sil[0, 3:5, 3:5] = True
    >>> alpha = torch.zeros(1, 8, 8, 1); alpha[0, 0, 0] = 1.0; alpha[0, 2, 2] = 1.0
    >>> float(outside_opacity(alpha, sil, 1)) * 64  # (2, 2) is inside the 1-px margin, (0, 0) is not
    1.0
    """
    allowed = F.max_pool2d(silhouette[:, None].float(), 2 * margin_px + 1, 1, margin_px)[:, 0] > 0
    return (alpha[..., 0] * (~allowed)).mean()


class OutsideOpacity:
    """One random orbit view per call: camera, head silhouette and the avatar's outside opacity."""

    def __init__(self, model: HeadModel, params: HeadParams, cameras: Cameras, train_ids: list[int], *,
                 size: int, margin: float, pitch_deg: float, generator: torch.Generator):
        self.model, self.params, self.cameras, self.train_ids = model, params, cameras, train_ids
        self.size, self.pitch_deg, self.gen = size, pitch_deg, generator
        self.margin_px = max(1, round(margin * size))

    def loss(self, avatar: GaussianAvatar, backend: str) -> Tensor:
        frame = self.train_ids[int(torch.randint(len(self.train_ids), (1,), generator=self.gen))]
        yaw, pitch = sample_orbit(1, self.gen, pitch_deg=self.pitch_deg)
        params = self.params[frame]
        cams, verts = frame_orbit(self.model, params, self.cameras[frame], yaw, pitch, self.size)
        with torch.no_grad():
            silhouette = rasterize_mesh(verts[None], self.model.faces, cams).mask
        alpha = render_avatar(avatar, self.model, params, cams, sh_degree=0, backend=backend).alpha
        return outside_opacity(alpha, silhouette, self.margin_px)
