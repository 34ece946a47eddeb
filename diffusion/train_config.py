"""Settings of ``gafkit prior train``: the denoiser's architecture and the training run."""

from __future__ import annotations

import dataclasses
from typing import Literal


@dataclasses.dataclass
class PriorModelConfig:
    """Architecture of the denoiser (:class:`gafkit.diffusion.model.MultiViewDenoiser`)."""

    size: int = 256
    """Image size the prior works at (latents are size / 8)."""
    views: int = 4
    """Target views generated together (cross-view attention spans them)."""
    block_out_channels: tuple[int, ...] = (128, 256, 256)
    """UNet widths per resolution level (the first level has no attention)."""
    layers_per_block: int = 1
    attention_head_dim: int = 32
    cross_attention_dim: int = 256
    """Width of the reference tokens."""
    reference_patch: int = 2
    """Reference latent patch size per token (2: 256 tokens at size 256)."""
    global_embedding: bool = True
    """Also add the pooled reference tokens to the timestep embedding."""
    reference_view: bool = False
    """Also feed the clean reference latent as an extra view into the cross-view self-attention (costs
    (V + 1) / V of the compute); off in the packaged prior, which was trained without it."""


@dataclasses.dataclass
class PriorTrainConfig:
    """A training run of the prior."""

    model: PriorModelConfig = dataclasses.field(default_factory=PriorModelConfig)
    init: str | None = None
    """Start from this prior's weights (a prior folder or ``default``, the packaged one) instead of a
    fresh initialisation: fine-tuning on one's own data. ``model`` is then taken from that prior."""
    steps: int = 20000
    batch_size: int = 16
    """Examples per step (each has ``views`` target views)."""
    lr: float = 2e-4
    warmup_steps: int = 200
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    reference_drop: float = 0.1
    """Probability of training an example without its reference (classifier-free guidance)."""
    ema_decay: float = 0.999
    """The saved prior is the exponential moving average of the weights."""
    mixed_precision: Literal["auto", "no", "bf16"] = "auto"
    """``auto``: bf16 on CUDA, fp32 on CPU."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, ~30 % slower)."""
    checkpoint_every: int = 1000
    sample_every: int = 2000
    """Sample grids of held-out examples (0: only at the end)."""
    log_every: int = 50
    eval_examples: int = 16
    """Held-out examples generated for the final metrics and sample grids."""
    sample_steps: int = 20
    """DDIM steps for samples and metrics."""
    guidance_scale: float = 2.0
    save_dtype: Literal["float16", "float32", "int8"] = "float16"
    """Weights of the saved prior: float16 halves its size, int8 (per-channel scales) quarters it."""
    seed: int = 0


def _tiny() -> PriorTrainConfig:
    """A few-second CPU run over the whole path (tests, smoke checks)."""
    return PriorTrainConfig(
        model=PriorModelConfig(size=64, views=2, block_out_channels=(32, 32), attention_head_dim=16,
                               cross_attention_dim=32),
        steps=20, batch_size=2, warmup_steps=2, checkpoint_every=10, sample_every=10, log_every=5,
        eval_examples=2, sample_steps=4, lr=1e-3,
    )


PRESETS = {"default": PriorTrainConfig, "tiny": _tiny}
