"""The prior's optional 2x image upsampler: 256-px generated views to 512, guided by the target view's
normal map at 512.

The denoiser works at its training size S (256 for the packaged prior); a 512-px fit wants its pseudo
views at 512. Bilinear upsampling halves their detail, and the pseudo-view loss then pulls the
avatar's renders toward blur. This network predicts the missing detail: a residual over the bicubic
upsampling, computed at S from the low image and the space-to-depth normal map (the normal map is
known sharply at 2S from the mesh, so silhouettes and facial features stay where the mesh has them).

Folder layout (``save_pretrained``): ``config.json`` + ``diffusion_pytorch_model.safetensors``, in a
prior folder as ``PRIOR/upsampler/``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from jaxtyping import Float
from torch import Tensor, nn


class _ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.silu(self.conv1(x)))


class ImageUpsampler(ModelMixin, ConfigMixin):
    """2x upsampler of RGB images in [0, 1], guided by a 2x-size RGB guide (the normal map).

    Args:
        channels: feature width (all convolutions run at the low resolution).
        blocks: residual blocks.
        guide_channels: channels of the guide image (3: normal maps as RGB).
    """

    scale = 2

    @register_to_config
    def __init__(self, channels: int = 32, blocks: int = 4, guide_channels: int = 3):
        super().__init__()
        s2 = self.scale ** 2
        self.head = nn.Conv2d(3 + guide_channels * s2, channels, 3, padding=1)
        self.body = nn.Sequential(*[_ResBlock(channels) for _ in range(blocks)])
        self.tail = nn.Conv2d(channels, 3 * s2, 3, padding=1)
        # Starts as plain bicubic upsampling: the residual branch outputs zero.
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, low: Float[Tensor, "N 3 S S"], guide: Float[Tensor, "N G 2S 2S"]) -> Float[Tensor, "N 3 2S 2S"]:
        """The upsampled images (not clamped; callers clamp to [0, 1])."""
        n, _, h, w = low.shape
        if guide.shape[-2:] != (h * self.scale, w * self.scale):
            guide = F.interpolate(guide, size=(h * self.scale, w * self.scale), mode="bilinear",
                                  antialias=True, align_corners=False)
        base = F.interpolate(low, scale_factor=self.scale, mode="bicubic", align_corners=False)
        x = torch.cat([low * 2 - 1, F.pixel_unshuffle(guide.to(low) * 2 - 1, self.scale)], 1)
        h_ = self.head(x)
        return base + F.pixel_shuffle(self.tail(self.body(h_) + h_), self.scale)


def upsample_to(images: Float[Tensor, "N 3 S S"], size: tuple[int, int], *,
                upsampler: ImageUpsampler | None = None, guide: Float[Tensor, "N G H W"] | None = None
                ) -> Float[Tensor, "N 3 H W"]:
    """``images`` at ``size``: through ``upsampler`` (with ``guide`` at ``size``) when given and the
    size grows, then bilinear to the exact size; plain bilinear otherwise. Outputs are clamped to [0, 1]."""
    if images.shape[-2:] == tuple(size):
        return images
    grows = size[0] > images.shape[-2] and size[1] > images.shape[-1]
    if upsampler is not None and grows and guide is not None:
        p = next(upsampler.parameters())
        images = upsampler(images.to(p), guide.to(p)).float().clamp(0, 1)
        if images.shape[-2:] == tuple(size):
            return images
    return F.interpolate(images.float(), size=size, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)


__all__ = ["ImageUpsampler", "upsample_to"]
