"""Configuration of ``gafkit fit`` (one dataclass tree; presets below, overrides via ``--set``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal, Optional


@dataclasses.dataclass
class InitConfig:
    """How the Gaussians start: on the mesh surface, coloured from the training frames."""

    per_face: int = 1
    """Gaussians per triangle (at random points inside it when > 1)."""
    max_gaussians: Optional[int] = None
    """Start from at most this many, on triangles drawn by area (small CPU runs); None = every triangle."""
    exclude_regions: tuple[str, ...] = ()
    """Head-model regions that get no Gaussians (e.g. ``teeth`` for a closed-mouth subject)."""
    scale: float = 0.5
    """Initial standard deviation, in units of the triangle's mean edge length."""
    opacity: float = 0.5
    color_frames: int = 8
    """Training frames whose pixels average into each Gaussian's starting colour."""


@dataclasses.dataclass
class LearningRates:
    """Adam learning rates per parameter (local units: triangle sizes, log scales, logits)."""

    xyz: float = 5e-3
    xyz_final: float = 5e-5
    """``xyz`` decays exponentially to this by the last iteration."""
    final_factor: float = 1.0
    """The other per-Gaussian rates (rotation, scale, opacity, colour) decay exponentially to this
    fraction of their start by the last iteration (1 = constant)."""
    rotation: float = 1e-3
    scale: float = 1.7e-2
    opacity: float = 5e-2
    sh_dc: float = 2.5e-3
    sh_rest: float = 1.25e-4
    expr_color: float = 1e-3
    tracking_expr: float = 5e-3
    tracking_pose: float = 1e-3
    """Head rotation, jaw and eyes (radians). Each frame is visited only iters / frames times (about 40),
    so per-step rates must be large enough to move a frame by a tracking error (~1 degree, ~2 mm)."""
    tracking_translation: float = 1e-4
    """Head translation (metres)."""


@dataclasses.dataclass
class DensifyConfig:
    """Adaptive density control that keeps each Gaussian on its triangle (clones and splits inherit
    the parent's triangle)."""

    enabled: bool = True
    start: int = 500
    """First iteration that densifies."""
    stop_fraction: float = 0.6
    """No densification after this fraction of the iterations (the rest refines)."""
    every: int = 300
    grad_threshold: float = 2e-4
    """Mean screen-space gradient (normalized-device units, as in 3DGS) above which a Gaussian grows."""
    split_scale_m: float = 0.003
    """Growing Gaussians larger than this (largest axis, metres) split in two; smaller ones clone."""
    prune_opacity: float = 0.005
    max_scale_m: float = 0.05
    """Gaussians whose largest axis exceeds this are removed."""
    max_gaussians: int = 250_000
    opacity_reset_every: int = 0
    """Clamp every opacity to 0.01 this often so floaters can be pruned (0 = never)."""


@dataclasses.dataclass
class LossConfig:
    ssim: float = 0.2
    """Weight of D-SSIM (the rest of the photometric weight goes to L1)."""
    alpha: float = 0.1
    """L1 between the rendered opacity and the foreground mask."""
    xyz_reg: float = 0.01
    xyz_reg_threshold: float = 1.0
    """Local offsets beyond this many triangle sizes are penalized: Gaussians stay near their triangle."""
    scale_reg: float = 1.0
    scale_reg_threshold: float = 0.6
    """Local scales beyond this many triangle sizes are penalized."""
    tracking_reg: float = 1.0
    """L2 on the refined per-frame parameter offsets (radians, metres x 100, expression units)."""
    expr_color_reg: float = 1e-3
    """L2 on the expression-dependent colour offsets."""
    outside: float = 0.0
    """Weight of the opacity rendered outside the head at a random orbit view per step
    (:mod:`gafkit.recon.unseen_views`): floaters that the frames never see. 0 = off."""
    outside_margin: float = 0.06
    """How far beyond the head mesh's silhouette opacity is free, as a fraction of the view size (hair)."""
    outside_size: int = 128
    """Size in pixels of the orbit view that term renders."""


@dataclasses.dataclass
class PriorGuidanceConfig:
    """Pseudo ground truth at novel views from the multi-view diffusion prior (GAF), see
    :mod:`gafkit.recon.prior_guidance`."""

    path: str = "none"
    """Prior folder (``gafkit prior train`` output), ``default`` (the packaged prior) or ``none``."""
    views: int = 4
    """Novel views generated together per regeneration."""
    size: Optional[int] = None
    """Pseudo-view image size (None = the prior's training size). Larger sizes go through the prior's
    2x upsampler (``upsampler``), else bilinear."""
    upsampler: str = "auto"
    """Upsampler of pseudo views larger than the prior's size: ``auto`` (the prior folder's
    ``upsampler/``, if any), ``none`` (bilinear) or an upsampler folder (``gafkit prior train-upsampler``)."""
    start: float = 0.2
    """Fraction of the iterations fitted to the frames alone before the prior joins (its renders must
    look like a head before they are worth denoising)."""
    regenerate_every: int = 100
    """Iterations between regenerations; each iteration in between reuses the pseudo views."""
    strength_max: float = 0.4
    """Noise level of the first regeneration (0..1 of the diffusion schedule). Higher levels let the
    prior repaint more of the avatar, and with it the subject's identity (0.4 beat 0.7 on every
    novel-view measure of a held-out person, benchmarks/RESULTS.md session 5)."""
    strength_min: float = 0.2
    """Noise level reached at the last iteration."""
    steps: int = 20
    """DDIM steps of a full-strength denoise; a regeneration runs ceil(strength * steps)."""
    guidance_scale: float = 2.0
    """Classifier-free guidance on the reference frame."""
    weight: float = 0.25
    """Weight of the pseudo-view loss relative to the frame loss (0.25 beat 0.5 and 1.0 with the packaged
    prior: most of its gain is the clean-up of the unseen sides, its cost the colours it makes up)."""
    pitch_deg: float = 30.0
    """Pitch range (+-) of the sampled cameras; yaw covers the full circle."""
    min_yaw_deg: float = 0.0
    """Sampled yaws keep at least this far from the front on either side: the frames already show the
    front, and pseudo views there compete with them."""
    seen_cos: float = 0.3
    """Leave to the frames what they saw: a pseudo-view pixel on a triangle that a training frame saw
    at a view cosine of at least this counts 0, rising linearly to 1 for triangles never seen and
    pixels off the mesh (:mod:`gafkit.recon.seen_surface`). 0 = the prior supervises every pixel
    (GAF). 0.3 beat 0, 0.5 and 0.8 on a held-out person's novel views and held-out frames
    (benchmarks/RESULTS.md, session 7)."""
    foreground_faces: float = 0.5
    """Pseudo views' normal maps (and their ``seen_cos`` weights) leave out the triangles whose centroid
    falls outside the training frames' foreground masks in more than half (this share) of the frames
    (:func:`gafkit.render.silhouette.carve_bust`): the bust below the tracker's neck cut, which
    the frames show as background and the prior would otherwise paint; back faces (the inside, seen
    through the cut) are culled too. 0 keeps the whole mesh."""
    color_affine: bool = True
    """A per-view affine colour transform absorbs colour disagreements between pseudo views."""
    affine_lr: float = 1e-3
    affine_reg: float = 1.0
    """L2 pull of the colour transforms toward identity."""


@dataclasses.dataclass
class FitConfig:
    """Everything ``gafkit fit`` does."""

    iters: int = 6000
    sh_degree: int = 1
    """Highest SH degree (monocular video sees few directions; higher degrees overfit them)."""
    sh_increase_every: int = 1000
    """The active SH degree grows by one every this many iterations."""
    resolution: Optional[int] = None
    """Train at this image size (longer side); None = the tracked size."""
    background: Literal["white", "black"] = "white"
    foreground_colour: bool = True
    """Train on the frames' estimated foreground colour at the mask's soft edge (blur fusion,
    :mod:`gafkit.recon.foreground`) instead of the frame's pixels, which hold part of the room there.
    Evaluation always scores against the frame composited by its mask, as the literature does. On by
    default: on d20 (default preset, two seeds, H100 and H200) held-out masked PSNR rose by 1.26 and
    0.30 dB and the mask interior by 1.6 and 0.65 dB; on d12 it changed nothing; a small CPU fit of s18
    gained 0.6 dB masked (benchmarks/RESULTS.md, "Session 6")."""
    refine_tracking: bool = False
    """Jointly refine the per-frame expression, jaw, eyes and head pose of the training frames. Off by
    default: on d20 (fast preset, H200) it lowered held-out masked PSNR from 21.87 to 20.52 dB
    (benchmarks/RESULTS.md, "Avatar fit"): the offsets fit the training frames' misalignment, which
    the held-out frames (tracked parameters, no offsets) do not share."""
    expr_color_dims: int = 0
    """Size of the expression code that drives per-Gaussian colour changes (0 = off). Off by default: 8
    channels changed held-out masked PSNR by +0.17 dB on d20 (within run-to-run noise) for 25 % more
    training time."""
    seed: int = 0
    checkpoint_every: int = 1000
    eval_every: int = 0
    """Log held-out PSNR this often (0 = only at the end); feeds the time-to-95 % measure."""
    eval_split: Literal["test", "val"] = "test"
    backend: Literal["auto", "torch", "gsplat"] = "auto"
    flame_model: Optional[Path] = None
    """FLAME .pkl when the sequence was tracked with FLAME (default: $GAFKIT_FLAME_MODEL)."""
    preview: bool = True
    """Write ``preview.mp4`` (held-out frames: ground truth next to render)."""
    init: InitConfig = dataclasses.field(default_factory=InitConfig)
    lr: LearningRates = dataclasses.field(default_factory=LearningRates)
    densify: DensifyConfig = dataclasses.field(default_factory=DensifyConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    prior: PriorGuidanceConfig = dataclasses.field(default_factory=PriorGuidanceConfig)


def _fast() -> FitConfig:
    return dataclasses.replace(FitConfig(), iters=2000,
                               densify=dataclasses.replace(DensifyConfig(), start=300, every=200))


def _quality() -> FitConfig:
    return dataclasses.replace(FitConfig(), iters=30000, sh_degree=2,
                               densify=dataclasses.replace(DensifyConfig(), every=500, opacity_reset_every=6000))


PRESETS = {"default": FitConfig, "fast": _fast, "quality": _quality}
