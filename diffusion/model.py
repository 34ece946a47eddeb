"""The multi-view latent denoiser of the prior (GAF's normal-conditioned multi-view diffusion model).

A diffusers ``UNet2DConditionModel`` runs on the ``B * V`` view latents of ``B`` examples at once:

- **Normal conditioning** is pixel-aligned: each view's noisy latent is concatenated with its target
  normal map's latent (same autoencoder), so the UNet's input has ``2 * latent_channels`` channels.
  GAF found this far better than camera-pose or ray-map conditioning.
- **Cross-view attention**: every self-attention layer attends over the tokens of all ``V`` views of
  an example (the tokens are regrouped ``[B * V, N, C] -> [B, V * N, C]`` by
  :class:`MultiViewAttnProcessor`), so the generated views agree.
- **Identity conditioning**: the reference frame's latent is patchified into tokens that every view
  cross-attends to, and (``global_embedding``) its pooled tokens are added to the timestep embedding.
  ``reference_dropped`` swaps those tokens for a learned null token: trained with some probability,
  it gives the unconditional branch of classifier-free guidance.
- **Reference view** (``reference_view``, off in the packaged prior): the clean reference latent also
  enters the UNet as an extra view at timestep 0, flagged by a learned latent in place of a normal map,
  so every cross-view self-attention layer can copy appearance from it at every resolution, not only
  through the pooled cross-attention tokens (the route image-conditioned multi-view models such as
  ImageDream and Zero123++ use to keep the subject's identity). A dropped reference is a zero latent.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from jaxtyping import Bool, Float
from torch import Tensor, nn


class MultiViewAttnProcessor:
    """Scaled dot-product attention where self-attention spans all views of an example.

    ``views`` (passed through ``cross_attention_kwargs``) is the number of consecutive batch entries
    that belong to one example; cross-attention (``encoder_hidden_states`` given) stays per view.
    """

    def __call__(self, attn, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                 attention_mask: Tensor | None = None, temb: Tensor | None = None, views: int = 1) -> Tensor:
        residual = hidden_states
        spatial = hidden_states.ndim == 4
        if spatial:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        bv, n, _ = hidden_states.shape
        cross = encoder_hidden_states is not None
        if cross:
            context = attn.norm_encoder_hidden_states(encoder_hidden_states) if attn.norm_cross else encoder_hidden_states
            groups = bv
        else:
            # All views' tokens of one example form one sequence.
            groups = bv // views
            hidden_states = hidden_states.reshape(groups, views * n, -1)
            context = hidden_states
        q, k, v = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        head_dim = k.shape[-1] // attn.heads
        q, k, v = (x.view(groups, -1, attn.heads, head_dim).transpose(1, 2) for x in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).reshape(groups, -1, attn.heads * head_dim).to(q.dtype)
        out = attn.to_out[1](attn.to_out[0](out)).reshape(bv, n, -1)
        if spatial:
            out = out.transpose(1, 2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


class MultiViewDenoiser(ModelMixin, ConfigMixin):
    """Predicts the diffusion target (``v`` by default) of ``V`` view latents given their normal-map
    latents and a reference latent. Saved and loaded as a diffusers model folder."""

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        latent_channels: int = 32,
        sample_size: int = 32,
        block_out_channels: tuple[int, ...] = (128, 256, 256),
        layers_per_block: int = 1,
        attention_head_dim: int = 32,
        cross_attention_dim: int = 256,
        reference_patch: int = 2,
        global_embedding: bool = True,
        reference_view: bool = False,
    ):
        super().__init__()
        n = len(block_out_channels)
        # Full-resolution blocks skip attention: V * 32 * 32 tokens would dominate the cost.
        down = ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1)
        up = ("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",)
        self.unet = UNet2DConditionModel(
            sample_size=sample_size, in_channels=2 * latent_channels, out_channels=latent_channels,
            down_block_types=down, up_block_types=up, block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block, cross_attention_dim=cross_attention_dim,
            attention_head_dim=attention_head_dim, norm_num_groups=min(32, block_out_channels[0]),
            class_embed_type="projection" if global_embedding else None,
            projection_class_embeddings_input_dim=cross_attention_dim if global_embedding else None,
        )
        self.unet.set_attn_processor(MultiViewAttnProcessor())
        tokens = (sample_size // reference_patch) ** 2
        self.reference_in = nn.Conv2d(latent_channels, cross_attention_dim, reference_patch, reference_patch)
        self.reference_pos = nn.Parameter(torch.randn(1, tokens, cross_attention_dim) * 0.02)
        self.null_reference = nn.Parameter(torch.zeros(1, 1, cross_attention_dim))
        if reference_view:
            # Stands where a target view has its normal-map latent: tells the UNet which view is the reference.
            self.reference_flag = nn.Parameter(torch.randn(1, latent_channels, 1, 1) * 0.5)

    def reference_tokens(self, reference: Float[Tensor, "B C h w"],
                         dropped: Bool[Tensor, " B"] | None = None) -> Float[Tensor, "B T D"]:
        """Cross-attention tokens of the reference latent; ``dropped`` rows become the null token."""
        tokens = self.reference_in(reference).flatten(2).transpose(1, 2)
        tokens = tokens + self.reference_pos[:, : tokens.shape[1]]
        if dropped is not None:
            tokens = torch.where(dropped[:, None, None], self.null_reference.to(tokens.dtype), tokens)
        return tokens

    def forward(
        self,
        noisy: Float[Tensor, "B V C h w"],
        timesteps: Float[Tensor, " B"],
        normals: Float[Tensor, "B V C h w"],
        reference: Float[Tensor, "B C h w"],
        reference_dropped: Bool[Tensor, " B"] | None = None,
    ) -> Float[Tensor, "B V C h w"]:
        """Args:
            noisy: noisy latents of the V target views.
            timesteps: diffusion timestep of each example (all its views share it).
            normals: latents of the target views' normal maps.
            reference: latent of the reference image.
            reference_dropped: examples whose reference is replaced by the null token (CFG).
        """
        b, v = noisy.shape[:2]
        tokens = self.reference_tokens(reference, reference_dropped)
        pooled = tokens.mean(1) if self.config.global_embedding else None
        x = torch.cat([noisy, normals], 2)
        t = timesteps[:, None].expand(b, v)
        if self.config.reference_view:
            ref = reference if reference_dropped is None else torch.where(
                reference_dropped[:, None, None, None], torch.zeros_like(reference), reference)
            flag = self.reference_flag.to(ref.dtype).expand_as(ref)
            x = torch.cat([torch.cat([ref, flag], 1)[:, None].to(x.dtype), x], 1)  # view 0: the reference
            t = torch.cat([torch.zeros_like(t[:, :1]), t], 1)  # clean: timestep 0
        n = x.shape[1]
        out = self.unet(
            x.flatten(0, 1), t.flatten(), encoder_hidden_states=tokens.repeat_interleave(n, 0),
            class_labels=None if pooled is None else pooled.repeat_interleave(n, 0),
            cross_attention_kwargs={"views": n}, return_dict=False,
        )[0].unflatten(0, (b, n))
        return out[:, n - v:]
