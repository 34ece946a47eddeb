"""The prior as one object: denoiser + autoencoder + scheduler, a diffusers-style model folder, and the
two ways it is used: generating views from noise (``gafkit prior sample``) and turning renders of the
avatar into pseudo ground truth (GAF's iterative denoising, used by ``gafkit fit --prior``).

Folder layout (what :meth:`MultiViewPrior.save_pretrained` writes)::

    PRIOR/model_index.json            class names, size, views, the autoencoder's origin
    PRIOR/denoiser/                   config.json + diffusion_pytorch_model.safetensors (or .int8.safetensors)
    PRIOR/scheduler/scheduler_config.json
    PRIOR/autoencoder/                only when not the packaged default (``"autoencoder": "default"``)
    PRIOR/upsampler/                  optional 2x upsampler (:mod:`gafkit.diffusion.upsampler`)
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.schedulers.scheduling_ddim import DDIMScheduler
from jaxtyping import Float
from torch import Tensor

from gafkit import ASSETS
from gafkit.diffusion.autoencoder import TinyAutoencoder, load_default_autoencoder
from gafkit.diffusion.model import MultiViewDenoiser
from gafkit.diffusion.upsampler import ImageUpsampler, upsample_to
from gafkit.errors import GafkitError

INDEX = "model_index.json"
DEFAULT_PRIOR = ASSETS / "prior"
"""The packaged prior (``default``)."""


def make_scheduler(num_train_timesteps: int = 1000) -> DDIMScheduler:
    """The noise schedule the prior is trained and sampled with: v-prediction on a zero-terminal-SNR
    scaled-linear schedule (so pure noise at t = T matches training), deterministic DDIM with
    trailing timesteps (the first step starts at T)."""
    return DDIMScheduler(
        num_train_timesteps=num_train_timesteps, beta_schedule="scaled_linear", beta_start=0.00085,
        beta_end=0.012, prediction_type="v_prediction", rescale_betas_zero_snr=True,
        timestep_spacing="trailing", clip_sample=False, set_alpha_to_one=True,
    )


class MultiViewPrior:
    """Denoiser, autoencoder and scheduler of a trained (or freshly initialised) prior.

    ``size`` is the image size the denoiser was trained at (latents are ``size / 8``); inputs of
    another size are resized to it and outputs resized back, through ``upsampler`` (guided by the
    normal maps) when there is one and the outputs are larger.
    """

    def __init__(self, denoiser: MultiViewDenoiser, autoencoder: TinyAutoencoder,
                 scheduler: DDIMScheduler | None = None, *, size: int = 256, views: int = 4,
                 autoencoder_origin: str = "default", upsampler: ImageUpsampler | None = None):
        self.denoiser, self.autoencoder, self.upsampler = denoiser, autoencoder, upsampler
        self.scheduler = scheduler or make_scheduler()
        self.size, self.views, self.autoencoder_origin = size, views, autoencoder_origin

    # -- folders ---------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | Path, *, device: str | torch.device = "cpu",
                        dtype: torch.dtype | None = None, upsampler: str | Path = "auto") -> MultiViewPrior:
        """Load a prior folder; ``"default"`` is the packaged prior. ``dtype`` None: bfloat16 on CUDA
        (half the memory), float32 elsewhere. ``upsampler``: ``"auto"`` (the folder's ``upsampler/``
        when it has one), ``"none"``, or an upsampler folder (``gafkit prior train-upsampler``)."""
        if dtype is None:
            dtype = torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
        root = DEFAULT_PRIOR if str(path) == "default" else Path(path)
        index_file = root / INDEX
        if not index_file.is_file():
            hint = " (the packaged default prior is missing from this install)" if str(path) == "default" else ""
            raise GafkitError(f"{root}: not a gafkit prior folder (no {INDEX}){hint}")
        try:
            index = json.loads(index_file.read_text(encoding="utf-8"))
            denoiser = _load_denoiser(root / "denoiser", dtype)
            scheduler = DDIMScheduler.from_pretrained(root / "scheduler")
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise GafkitError(f"{root}: cannot load the prior ({str(exc).splitlines()[0]})") from exc
        origin = index.get("autoencoder", "default")
        if origin == "default":
            autoencoder = load_default_autoencoder(dtype=dtype)
        else:
            autoencoder = TinyAutoencoder.from_pretrained(root / "autoencoder", torch_dtype=dtype)
        prior = cls(denoiser, autoencoder, scheduler, size=int(index["size"]), views=int(index["views"]),
                    autoencoder_origin=origin, upsampler=_load_upsampler(root, upsampler))
        return prior.to(device)

    def save_pretrained(self, path: str | Path, *, dtype: torch.dtype | str | None = None) -> Path:
        """Write the prior folder. ``dtype=torch.float16`` halves the size; ``"int8"`` quarters it
        (weights quantized per output channel, see :func:`quantize_int8`)."""
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        denoiser = self.denoiser
        if dtype == "int8":
            from safetensors.torch import save_file

            (root / "denoiser").mkdir(parents=True, exist_ok=True)
            denoiser.save_config(root / "denoiser")
            save_file(quantize_int8(denoiser.state_dict()), str(root / "denoiser" / INT8_WEIGHTS))
        else:
            if dtype is not None and dtype != next(denoiser.parameters()).dtype:
                import copy

                # nn.Module.to: ModelMixin.to warns about fp32-pinned modules (this model has none).
                denoiser = torch.nn.Module.to(copy.deepcopy(denoiser), dtype)
            denoiser.save_pretrained(root / "denoiser")
        self.scheduler.save_pretrained(root / "scheduler")
        if self.autoencoder_origin != "default":
            self.autoencoder.save_pretrained(root / "autoencoder")
        if self.upsampler is not None:
            self.upsampler.save_pretrained(root / "upsampler")
        index = {"_class_name": type(self).__name__, "denoiser": ["gafkit.diffusion.model", "MultiViewDenoiser"],
                 "scheduler": ["diffusers", "DDIMScheduler"], "autoencoder": self.autoencoder_origin,
                 "size": self.size, "views": self.views}
        (root / INDEX).write_text(json.dumps(index, indent=1), encoding="utf-8")
        return root

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> MultiViewPrior:
        for module in (self.denoiser, self.autoencoder, self.upsampler):
            if module is not None:
                torch.nn.Module.to(module, device=device, dtype=dtype)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.denoiser.parameters()).dtype

    # -- latents ---------------------------------------------------------------------------------
    @staticmethod
    def _resize(x: Tensor, height: int, width: int) -> Tensor:
        if x.shape[-2:] == (height, width):
            return x
        return F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)

    def encode(self, images: Float[Tensor, "N 3 H W"]) -> Float[Tensor, "N C h w"]:
        """Scaled latents of images in [0, 1] (resized to the prior's size)."""
        return self.autoencoder.encode(self._resize(images, self.size, self.size).to(self.device, self.dtype))

    def decode(self, latents: Float[Tensor, "N C h w"]) -> Float[Tensor, "N 3 S S"]:
        """Images in [0, 1] of scaled latents, at the prior's size."""
        return self.autoencoder.decode(latents).float().clamp(0, 1)

    # -- sampling --------------------------------------------------------------------------------
    def _predict(self, x: Tensor, t: Tensor, normals: Tensor, reference: Tensor, guidance: float) -> Tensor:
        b = x.shape[0]
        tt = t.expand(b).to(x.device)
        if guidance == 1.0:
            return self.denoiser(x, tt, normals, reference)
        # Conditional and unconditional branches in one batch.
        dropped = torch.cat([torch.zeros(b, dtype=torch.bool), torch.ones(b, dtype=torch.bool)]).to(x.device)
        out = self.denoiser(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([normals, normals]),
                            torch.cat([reference, reference]), dropped)
        cond, uncond = out.chunk(2)
        return uncond + guidance * (cond - uncond)

    @torch.no_grad()
    def __call__(
        self,
        reference: Float[Tensor, "B 3 H W"],
        normals: Float[Tensor, "B V 3 H W"],
        *,
        init: Float[Tensor, "B V 3 H W"] | None = None,
        strength: float = 1.0,
        num_inference_steps: int = 20,
        guidance_scale: float = 2.0,
        generator: torch.Generator | None = None,
    ) -> Float[Tensor, "B V 3 H W"]:
        """Generate the V views of each example.

        Args:
            reference: reference image of the person, [0, 1].
            normals: camera-space normal maps of the target views as RGB (``normals_to_rgb``), [0, 1].
            init: images to start from (renders of the avatar); ``None`` starts from pure noise.
            strength: noise level the ``init`` images are taken to, in (0, 1]; 1 ignores them. Only
                the last ``ceil(strength * num_inference_steps)`` DDIM steps run (GAF: steps
                proportional to the noise level).
            num_inference_steps: DDIM steps of a full (strength 1) denoise.
            guidance_scale: classifier-free guidance weight on the reference (1 disables it).
            generator: seeds the noise (a CPU generator gives the same noise on any device).

        Returns:
            Generated views in [0, 1] at the input resolution (the normal maps' size).
        """
        # 1. Check inputs
        b, v, _, h, w = normals.shape
        if reference.shape[0] != b or (init is not None and init.shape[:2] != (b, v)):
            raise GafkitError(f"prior: batch mismatch (reference {tuple(reference.shape)}, normals "
                              f"{tuple(normals.shape)}, init {None if init is None else tuple(init.shape)})")
        if not 0.0 < strength <= 1.0:
            raise GafkitError(f"prior: strength must be in (0, 1], got {strength}")
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda")
        with autocast:
            # 2. Encode the conditions
            ref = self.encode(reference)
            nrm = self.encode(normals.flatten(0, 1)).unflatten(0, (b, v))
            # 3. Timesteps: the tail of the full schedule that starts at the requested noise level
            self.scheduler.set_timesteps(num_inference_steps, device=self.device)
            steps = max(1, math.ceil(strength * num_inference_steps))
            timesteps = self.scheduler.timesteps[num_inference_steps - steps:]
            # 4. Starting latents
            shape = nrm.shape
            # Drawn where the generator lives: a CPU generator gives the same noise on every device.
            noise = torch.randn(shape, generator=generator, device=generator.device if generator else self.device,
                                dtype=torch.float32).to(self.device)
            if init is None or strength >= 1.0:
                x = noise * self.scheduler.init_noise_sigma
            else:
                x0 = self.encode(init.flatten(0, 1)).unflatten(0, (b, v)).float()
                x = self.scheduler.add_noise(x0, noise, timesteps[:1])
            # 5. Denoising loop
            for t in timesteps:
                pred = self._predict(x.to(self.dtype), t, nrm, ref, guidance_scale).float()
                x = self.scheduler.step(pred, t, x, eta=0.0).prev_sample
            # 6. Decode
            out = self.decode(x.flatten(0, 1).to(self.dtype))
            out = upsample_to(out, (h, w), upsampler=self.upsampler, guide=normals.flatten(0, 1))
        return out.float().unflatten(0, (b, v))

    def pseudo_ground_truth(
        self,
        renders: Float[Tensor, "B V 3 H W"],
        normals: Float[Tensor, "B V 3 H W"],
        reference: Float[Tensor, "B 3 H W"],
        strength: float,
        *,
        num_inference_steps: int = 20,
        guidance_scale: float = 2.0,
        generator: torch.Generator | None = None,
    ) -> Float[Tensor, "B V 3 H W"]:
        """GAF's pseudo ground truth: the avatar's renders noised to ``strength`` and denoised with the
        mesh's normal maps and the reference frame as conditions (see :meth:`__call__`)."""
        return self(reference, normals, init=renders, strength=strength, num_inference_steps=num_inference_steps,
                    guidance_scale=guidance_scale, generator=generator)


INT8_WEIGHTS = "diffusion_pytorch_model.int8.safetensors"


def quantize_int8(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Weight matrices and kernels (2+ dims) as int8 with one fp16 scale per output channel
    (``name.q8`` [O, ...] int8, ``name.scale`` [O] fp16); everything else as fp16."""
    out: dict[str, Tensor] = {}
    for name, w in state.items():
        w = w.detach().float().cpu()
        if w.ndim >= 2:
            scale = w.flatten(1).abs().amax(1).clamp_min(1e-12) / 127
            out[f"{name}.q8"] = (w / scale.view(-1, *[1] * (w.ndim - 1))).round().clamp(-127, 127).to(torch.int8)
            out[f"{name}.scale"] = scale.half()
        else:
            out[name] = w.half()
    return out


def dequantize_int8(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The float32 state dict of :func:`quantize_int8`'s output."""
    out: dict[str, Tensor] = {}
    for name, t in state.items():
        if name.endswith(".q8"):
            base = name[:-3]
            scale = state[f"{base}.scale"].float()
            out[base] = t.float() * scale.view(-1, *[1] * (t.ndim - 1))
        elif not name.endswith(".scale"):
            out[name] = t.float()
    return out


def _load_upsampler(root: Path, which: str | Path) -> ImageUpsampler | None:
    """The upsampler ``which`` names (see :meth:`MultiViewPrior.from_pretrained`), float32 (it is small)."""
    if str(which) == "none":
        return None
    folder = root / "upsampler" if str(which) == "auto" else Path(which)
    if not (folder / "config.json").is_file():
        if str(which) == "auto":
            return None
        raise GafkitError(f"{folder}: not an upsampler folder (no config.json)")
    try:
        return ImageUpsampler.from_pretrained(folder).eval()
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise GafkitError(f"{folder}: cannot load the upsampler ({str(exc).splitlines()[0]})") from exc


def _load_denoiser(folder: Path, dtype: torch.dtype) -> MultiViewDenoiser:
    if not (folder / INT8_WEIGHTS).is_file():
        return MultiViewDenoiser.from_pretrained(folder, torch_dtype=dtype)
    from safetensors.torch import load_file

    denoiser = MultiViewDenoiser.from_config(MultiViewDenoiser.load_config(folder))
    denoiser.load_state_dict(dequantize_int8(load_file(str(folder / INT8_WEIGHTS))))
    return torch.nn.Module.to(denoiser, dtype).eval()


def build_prior(*, size: int = 256, views: int = 4, autoencoder: TinyAutoencoder | None = None,
                **denoiser_kwargs) -> MultiViewPrior:
    """A freshly initialised prior (training starts here; tests use tiny ones)."""
    origin = "default" if autoencoder is None else "custom"
    autoencoder = autoencoder or load_default_autoencoder()
    ds = autoencoder.downscale
    denoiser = MultiViewDenoiser(latent_channels=autoencoder.config.latent_channels, sample_size=size // ds,
                                 **denoiser_kwargs)
    return MultiViewPrior(denoiser, autoencoder, size=size, views=views, autoencoder_origin=origin)
