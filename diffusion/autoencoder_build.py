"""``gafkit assets build-taef2``: TAESD's taef2 checkpoints -> the packaged :class:`TinyAutoencoder` folder.

The taesd checkpoints are ``state_dict``s of two ``nn.Sequential`` models (``taesd.py``'s ``Encoder``
and ``Decoder`` with ``use_midblock_gn=True``) keyed by layer index; :func:`taesd_key_map` renames them
onto our named layers. ``scaling_factor``/``shift_factor`` are then measured on calibration images
(frames of the bundled example clip and synthetic renders) so that scaled latents have ~zero mean and
~unit std. The weights are stored in float16, as taesd ships them, so nothing is lost.

The output is byte-reproducible: fixed inputs, fixed frame choice, factors rounded to 4 significant
digits (CPU reductions may differ in the last bits between thread counts).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from PIL import Image
from torch import Tensor

from gafkit.console import log
from gafkit.diffusion.autoencoder import STAGES, TinyAutoencoder
from gafkit.errors import GafkitError, InputError

EXAMPLE_VIDEO = Path(__file__).resolve().parent.parent / "examples" / "d20.mp4"
"""The repository's bundled clip (a checkout is needed to rebuild assets)."""
CALIBRATION_SIZE = 256
REAL_FRAMES = 16
SYNTH_SEEDS = (0, 1, 2, 3)
SYNTH_FRAMES = (0, 12)

_BLOCK_LAYERS = {"conv.0": "conv1", "conv.2": "conv2", "conv.4": "conv3",
                 "pool.0": "context.expand", "pool.1": "context.norm", "pool.3": "context.project"}


def taesd_key_map(blocks_per_stage: int = 3) -> dict[str, dict[str, str]]:
    """Layer-prefix renames ``{"encoder": {taesd_prefix: ours}, "decoder": {...}}``.

    taesd's encoder is ``conv, Block, (strided conv, Block x b) x 3, conv``; its decoder is
    ``Clamp, conv, ReLU, (Block x b, Upsample, conv) x 3, Block, conv`` (parameter-free layers keep
    their indices). Block layers map through ``_BLOCK_LAYERS``.
    """
    enc = {"0": "conv_in", "1": "block_in"}
    i = 2
    for s in range(STAGES):
        enc[str(i)] = f"stages.{s}.down"
        enc.update({str(i + 1 + k): f"stages.{s}.blocks.{k}" for k in range(blocks_per_stage)})
        i += blocks_per_stage + 1
    enc[str(i)] = "conv_out"
    dec = {"1": "conv_in"}
    i = 3
    for s in range(STAGES):
        dec.update({str(i + k): f"stages.{s}.blocks.{k}" for k in range(blocks_per_stage)})
        dec[str(i + blocks_per_stage + 1)] = f"stages.{s}.conv"  # after the Upsample at i + b
        i += blocks_per_stage + 2
    dec[str(i)] = "block_out"
    dec[str(i + 1)] = "conv_out"
    return {"encoder": enc, "decoder": dec}


def _rename(key: str, prefixes: dict[str, str]) -> str | None:
    head, _, rest = key.partition(".")
    ours = prefixes.get(head)
    if ours is None:
        return None
    if not (ours.startswith("block") or ".blocks." in ours):
        return f"{ours}.{rest}"
    layer, _, param = rest.rpartition(".")
    return f"{ours}.{_BLOCK_LAYERS[layer]}.{param}" if layer in _BLOCK_LAYERS else None


def convert_taesd_state(model: TinyAutoencoder, part: str, state: dict[str, Tensor], path: Path) -> dict[str, Tensor]:
    """Rename a taesd ``part`` ("encoder"/"decoder") state dict onto ``model.<part>``; an
    :class:`InputError` naming ``path`` when keys or shapes do not match."""
    prefixes = taesd_key_map(model.config.blocks_per_stage)[part]
    target = getattr(model, part).state_dict()
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        name = _rename(key, prefixes)
        if name is None or name not in target:
            raise InputError(path, f"unexpected tensor {key!r}: not a taef2 {part} checkpoint")
        if tuple(value.shape) != tuple(target[name].shape):
            raise InputError(path, f"tensor {key!r} has shape {tuple(value.shape)}, expected "
                                   f"{tuple(target[name].shape)} (not a taef2 {part})")
        out[name] = value
    missing = sorted(set(target) - set(out))
    if missing:
        raise InputError(path, f"{len(missing)} tensors missing (e.g. {missing[0]}): not a taef2 {part} checkpoint")
    return out


def _load_pth(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise InputError(path, "no such file (expected a checkout of github.com/madebyollin/taesd)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a corrupt pickle raises anything from UnpicklingError to RuntimeError
        raise InputError(path, f"unreadable checkpoint ({err.__class__.__name__})") from err
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise InputError(path, "not a state dict of tensors")
    return state


def _square(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[:2]
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    crop = Image.fromarray(image[y0:y0 + side, x0:x0 + side])
    return np.asarray(crop.resize((size, size), Image.Resampling.BICUBIC))


def video_frames(path: Path, count: int, size: int = CALIBRATION_SIZE) -> Float[Tensor, "N 3 S S"]:
    """``count`` evenly spaced frames of a video, centre-cropped square and resized to ``size``, in [0, 1]."""
    import av

    if not path.is_file():
        raise InputError(path, "no such video")
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    if not frames:
        raise InputError(path, "no video frames")
    picks = np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int)
    images = np.stack([_square(frames[i], size) for i in picks])
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255


def synthetic_renders(seeds: Sequence[int] = SYNTH_SEEDS, frames: Sequence[int] = SYNTH_FRAMES,
                      size: int = CALIBRATION_SIZE) -> tuple[Tensor, Tensor]:
    """Colour renders and camera-space normal maps (as RGB) of ``gafkit synth`` subjects, each
    [len(seeds) * len(frames), 3, size, size] in [0, 1] (8-bit quantised like the written PNGs)."""
    from gafkit.synth import SynthConfig
    from gafkit.synth.generate import make_subject, render_views

    rgbs, normals = [], []
    head = None
    for seed in seeds:
        cfg = SynthConfig(frames=max(frames) + 1, size=size, seed=seed)
        subject = make_subject(cfg, head)
        head = subject.head
        with torch.no_grad():
            for f in frames:
                rgb, _, normal = render_views(subject, head(subject.params[f]), subject.camera, cfg)
                rgbs.append(rgb[0])
                normals.append(normal[0])
    to_t = lambda a: torch.from_numpy(np.stack(a)).permute(0, 3, 1, 2).float() / 255  # noqa: E731
    return to_t(rgbs), to_t(normals)


def calibration_images(video: Path = EXAMPLE_VIDEO) -> Float[Tensor, "N 3 256 256"]:
    """The images the latent scale and shift are measured on: real frames then synthetic renders."""
    return torch.cat([video_frames(video, REAL_FRAMES), synthetic_renders()[0]])


@torch.no_grad()
def measure_scale_shift(model: TinyAutoencoder, images: Float[Tensor, "N 3 H W"], batch: int = 8
                        ) -> tuple[float, float]:
    """``(scaling_factor, shift_factor)`` = (1 / std, mean) of the raw latents of ``images``, rounded to 4
    significant digits."""
    raw = torch.cat([model.encode_raw(images[i:i + batch]).double() for i in range(0, len(images), batch)])
    mean, std = raw.mean().item(), raw.std().item()
    return float(f"{1.0 / std:.4g}"), float(f"{mean:.4g}")


def build_taef2_asset(taesd_dir: Path, out: Path, *, video: Path = EXAMPLE_VIDEO) -> Path:
    """Convert ``taesd_dir/taef2_{encoder,decoder}.pth`` into a ``save_pretrained`` folder at ``out``
    (config.json + float16 diffusion_pytorch_model.safetensors); returns ``out``.

    ``out`` is written atomically: a failure leaves any existing folder there untouched.
    """
    taesd_dir, out = Path(taesd_dir), Path(out)
    if not taesd_dir.is_dir():
        raise InputError(taesd_dir, "no such folder (expected a checkout of github.com/madebyollin/taesd)")
    if out.exists() and not (out / "config.json").is_file():
        raise GafkitError(f"{out}: exists and is not an autoencoder folder; choose another output path")
    model = TinyAutoencoder()
    for part in ("encoder", "decoder"):
        path = taesd_dir / f"taef2_{part}.pth"
        getattr(model, part).load_state_dict(convert_taesd_state(model, part, _load_pth(path), path))
    model.eval()
    images = calibration_images(video)
    scale, shift = measure_scale_shift(model, images)
    log.info("taef2: scaling_factor %.4g, shift_factor %.4g over %d calibration images", scale, shift, len(images))
    model.register_to_config(scaling_factor=scale, shift_factor=shift)

    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        model.half().save_pretrained(staging)  # taesd ships float16 weights: lossless
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = out.with_name(out.name + f".old-{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(staging, out)
    shutil.rmtree(old, ignore_errors=True)
    return out
