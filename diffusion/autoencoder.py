"""The prior's frozen image autoencoder: a tiny 8x convolutional autoencoder with 32-channel latents.

The architecture is that of TAESD's FLUX.2 variant (``taef2``, Ollin Boer Bohan, MIT licence,
github.com/madebyollin/taesd), written here with named layers:

- **Encoder**: a 3x3 conv and a residual block at full resolution, then three stages of (stride-2 conv,
  three residual blocks), then a 3x3 conv to ``latent_channels``. Images go in as [0, 1] RGB.
- **Decoder**: a soft clamp ``3 tanh(z / 3)`` of the latents, a 3x3 conv + ReLU, then three stages of
  (three residual blocks, nearest 2x upsampling, 3x3 conv), a last residual block and a 3x3 conv to RGB.
- **Residual block**: three 3x3 convs with ReLUs between them, added to the input, then a ReLU. The
  blocks at the lowest resolution (the encoder's last stage, the decoder's first) first add a
  *group-norm context* branch (1x1 conv to 4x the channels, GroupNorm with 4 groups, ReLU, 1x1 conv):
  GroupNorm's statistics span the whole image, which taef2 needed to distil FLUX.2's VAE accurately.
  This branch is why taef2 does not fit diffusers' ``AutoencoderTiny``.

``encode`` returns *scaled* latents ``(raw - shift_factor) * scaling_factor`` whose mean is ~0 and
standard deviation ~1 on face images; ``decode`` undoes the scaling. The packaged weights in
``gafkit/assets/taef2/`` are built by ``gafkit assets build-taef2`` (:mod:`.autoencoder_build`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from jaxtyping import Float
from torch import Tensor, nn

from gafkit import ASSETS
from gafkit.errors import GafkitError

TAEF2_ASSET = ASSETS / "taef2"
"""The packaged ``save_pretrained`` folder of the taef2 weights."""
STAGES = 3
"""Stride-2 stages of the encoder (and 2x stages of the decoder): the 8x downscale."""


def _conv(c_in: int, c_out: int, *, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=bias)


class GroupNormContext(nn.Module):
    """Residual branch mixing in whole-image statistics: ``x + W2 relu(GN(W1 x))``, [B, C, H, W] -> same."""

    def __init__(self, channels: int, expand: int = 4, groups: int = 4):
        super().__init__()
        self.expand = nn.Conv2d(channels, channels * expand, 1, bias=False)
        self.norm = nn.GroupNorm(groups, channels * expand)
        self.project = nn.Conv2d(channels * expand, channels, 1, bias=False)

    def forward(self, x: Float[Tensor, "B C H W"]) -> Float[Tensor, "B C H W"]:
        return x + self.project(torch.relu(self.norm(self.expand(x))))


class ResBlock(nn.Module):
    """``relu(conv3(relu(conv2(relu(conv1(x))))) + x)``, optionally after a :class:`GroupNormContext`."""

    def __init__(self, channels: int, context: bool = False):
        super().__init__()
        self.context = GroupNormContext(channels) if context else None
        self.conv1 = _conv(channels, channels)
        self.conv2 = _conv(channels, channels)
        self.conv3 = _conv(channels, channels)

    def forward(self, x: Float[Tensor, "B C H W"]) -> Float[Tensor, "B C H W"]:
        if self.context is not None:
            x = self.context(x)
        h = self.conv3(torch.relu(self.conv2(torch.relu(self.conv1(x)))))
        return torch.relu(h + x)


def _blocks(channels: int, count: int, context: bool) -> nn.Sequential:
    return nn.Sequential(*(ResBlock(channels, context) for _ in range(count)))


class DownStage(nn.Module):
    """Stride-2 conv (no bias) then residual blocks: [B, C, H, W] -> [B, C, H/2, W/2]."""

    def __init__(self, channels: int, blocks: int, context: bool):
        super().__init__()
        self.down = _conv(channels, channels, stride=2, bias=False)
        self.blocks = _blocks(channels, blocks, context)

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(self.down(x))


class UpStage(nn.Module):
    """Residual blocks, nearest 2x upsampling, a conv (no bias): [B, C, H, W] -> [B, C, 2H, 2W]."""

    def __init__(self, channels: int, blocks: int, context: bool):
        super().__init__()
        self.blocks = _blocks(channels, blocks, context)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv = _conv(channels, channels, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.up(self.blocks(x)))


class TinyEncoder(nn.Module):
    """[B, 3, H, W] in [0, 1] -> raw latents [B, latent_channels, H/8, W/8]."""

    def __init__(self, latent_channels: int, channels: int, blocks_per_stage: int, group_norm_context: bool):
        super().__init__()
        self.conv_in = _conv(3, channels)
        self.block_in = ResBlock(channels)
        self.stages = nn.ModuleList(
            DownStage(channels, blocks_per_stage, group_norm_context and i == STAGES - 1) for i in range(STAGES)
        )
        self.conv_out = _conv(channels, latent_channels)

    def forward(self, x: Tensor) -> Tensor:
        x = self.block_in(self.conv_in(x))
        for stage in self.stages:
            x = stage(x)
        return self.conv_out(x)


class TinyDecoder(nn.Module):
    """Raw latents [B, latent_channels, h, w] -> unclamped RGB [B, 3, 8h, 8w] (~[0, 1])."""

    def __init__(self, latent_channels: int, channels: int, blocks_per_stage: int, group_norm_context: bool,
                 latent_clamp: float):
        super().__init__()
        self.latent_clamp = latent_clamp
        self.conv_in = _conv(latent_channels, channels)
        self.stages = nn.ModuleList(
            UpStage(channels, blocks_per_stage, group_norm_context and i == 0) for i in range(STAGES)
        )
        self.block_out = ResBlock(channels)
        self.conv_out = _conv(channels, 3)

    def forward(self, z: Tensor) -> Tensor:
        # The soft clamp keeps out-of-range latents (e.g. early diffusion samples) from blowing up.
        z = torch.tanh(z / self.latent_clamp) * self.latent_clamp
        x = torch.relu(self.conv_in(z))
        for stage in self.stages:
            x = stage(x)
        return self.conv_out(self.block_out(x))


class TinyAutoencoder(ModelMixin, ConfigMixin):
    """The prior's frozen autoencoder (taef2 architecture): images [B, 3, H, W] <-> latents
    [B, latent_channels, H/8, W/8]; H and W must be multiples of 8.

    Args:
        latent_channels: channels of the latent space (32 for taef2).
        channels: feature channels of every layer.
        blocks_per_stage: residual blocks per resolution stage.
        group_norm_context: add the :class:`GroupNormContext` branch to the lowest-resolution blocks.
        latent_clamp: the decoder's soft clamp bound on raw latents.
        scaling_factor, shift_factor: ``scaled = (raw - shift_factor) * scaling_factor``.

    Example::

        ae = load_default_autoencoder()
        z = ae.encode(images)       # [B, 3, 256, 256] -> [B, 32, 32, 32]
        recon = ae.decode(z)        # -> [B, 3, 256, 256] in [0, 1]
    """

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        latent_channels: int = 32,
        channels: int = 64,
        blocks_per_stage: int = 3,
        group_norm_context: bool = True,
        latent_clamp: float = 3.0,
        scaling_factor: float = 1.0,
        shift_factor: float = 0.0,
    ):
        super().__init__()
        self.encoder = TinyEncoder(latent_channels, channels, blocks_per_stage, group_norm_context)
        self.decoder = TinyDecoder(latent_channels, channels, blocks_per_stage, group_norm_context, latent_clamp)

    @property
    def downscale(self) -> int:
        """Image pixels per latent pixel along each side (8)."""
        return 2**STAGES

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    @property
    def scaling_factor(self) -> float:
        return self.config.scaling_factor

    @property
    def shift_factor(self) -> float:
        return self.config.shift_factor

    def _check(self, x: Tensor, channels: int, what: str) -> None:
        if x.ndim != 4 or x.shape[1] != channels:
            raise GafkitError(f"TinyAutoencoder.{what}: expected [B, {channels}, H, W], got {list(x.shape)}")

    def encode_raw(self, images: Float[Tensor, "B 3 H W"]) -> Float[Tensor, "B C h w"]:
        """Unscaled latents of [0, 1] images (h = H / 8, w = W / 8)."""
        self._check(images, 3, "encode")
        if images.shape[-2] % self.downscale or images.shape[-1] % self.downscale:
            raise GafkitError(f"TinyAutoencoder.encode: image size {list(images.shape[-2:])} is not a multiple "
                              f"of {self.downscale}")
        return self.encoder(images.to(self.dtype))

    def encode(self, images: Float[Tensor, "B 3 H W"]) -> Float[Tensor, "B C h w"]:
        """Scaled latents ``(raw - shift_factor) * scaling_factor`` of [0, 1] images."""
        return (self.encode_raw(images) - self.shift_factor) * self.scaling_factor

    def decode(self, latents: Float[Tensor, "B C h w"]) -> Float[Tensor, "B 3 H W"]:
        """Images in [0, 1] (clamped) from scaled latents (H = 8h, W = 8w)."""
        self._check(latents, self.latent_channels, "decode")
        raw = latents.to(self.dtype) / self.scaling_factor + self.shift_factor
        return self.decoder(raw).clamp(0.0, 1.0)

    def forward(self, images: Float[Tensor, "B 3 H W"]) -> Float[Tensor, "B 3 H W"]:
        """Reconstruction ``decode(encode(images))``."""
        return self.decode(self.encode(images))


def encode_chunk(device: torch.device) -> int:
    """Images per autoencoder call when encoding a data set: large batches on a GPU; on a CPU the
    activations of a big batch outgrow the caches (measured on 2 cores at 256 px: 0.33-0.38 s per
    image in batches of 4, 1.1 s in batches of 64)."""
    return 64 if torch.device(device).type == "cuda" else 4


def load_default_autoencoder(device: torch.device | str | None = None, dtype: torch.dtype | None = None
                             ) -> TinyAutoencoder:
    """The packaged taef2 autoencoder in eval mode with frozen weights (float32 on CPU unless given)."""
    if not (TAEF2_ASSET / "config.json").is_file():
        raise GafkitError(f"{TAEF2_ASSET}: the packaged taef2 autoencoder is missing from this install "
                          "(rebuild it with `gafkit assets build-taef2 TAESD_DIR`)")
    return _load(TAEF2_ASSET, device, dtype)


def _load(folder: Path, device: torch.device | str | None, dtype: torch.dtype | None) -> TinyAutoencoder:
    model = TinyAutoencoder.from_pretrained(folder, torch_dtype=dtype or torch.float32)
    model.requires_grad_(False).eval()
    return model.to(device) if device is not None else model
