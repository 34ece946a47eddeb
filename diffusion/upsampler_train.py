"""``gafkit prior train-upsampler``: train the prior's 2x upsampler (:mod:`gafkit.diffusion.upsampler`)
on prior data folders built at twice the prior's size (``gafkit prior data ... --size 512``).

Each target view of each example is one training image: its high-resolution truth, its normal map
(the guide) and its low-resolution input, the truth downsampled and, by default, sent through the
prior's autoencoder (what the denoiser's decoder hands the upsampler is as soft as that round trip).
Steps train on random aligned crops. Held-out examples (split ``heldout``) score the upsampler
against bicubic and bilinear upsampling of the same inputs.

Output folder (an ``upsampler`` artifact): the model (``config.json`` + safetensors), ``metrics.json``,
``train_log.jsonl``; put it in a prior folder as ``PRIOR/upsampler`` (or pass it as ``prior.upsampler``).
The run is resumable (``OUT.partial/checkpoints/latest.pt``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from gafkit.artifact import write_artifact, write_checkpoint
from gafkit.console import log, track
from gafkit.device import resolve_device
from gafkit.diffusion.autoencoder import encode_chunk, load_default_autoencoder
from gafkit.diffusion.dataset import load_split
from gafkit.diffusion.upsampler import ImageUpsampler
from gafkit.errors import GafkitError
from gafkit.recon.metrics import psnr

UPSAMPLER_KIND = "upsampler"
CHUNK = 32  # views per upsampler call in evaluation


@dataclasses.dataclass
class UpsamplerTrainConfig:
    """A training run of the 2x upsampler."""

    channels: int = 32
    """Feature width."""
    blocks: int = 4
    """Residual blocks."""
    steps: int = 3000
    batch_size: int = 16
    crop: int = 128
    """High-resolution crop size of a training image (even)."""
    lr: float = 1e-3
    """Adam learning rate, cosine-decayed to zero."""
    through_autoencoder: bool = True
    """Low inputs = downsampled truth sent through the packaged autoencoder (as the prior's output is);
    False: the downsampled truth itself."""
    checkpoint_every: int = 500
    log_every: int = 50
    seed: int = 0


def _check(cfg: UpsamplerTrainConfig) -> None:
    if cfg.crop < 16 or cfg.crop % 16:
        raise GafkitError(f"upsampler: crop must be a multiple of 16 (>= 16), got {cfg.crop}")
    for name in ("channels", "blocks", "steps", "batch_size"):
        if getattr(cfg, name) < 1:
            raise GafkitError(f"upsampler: {name} must be >= 1, got {getattr(cfg, name)}")


def training_images(data: dict[str, Tensor], *, through_autoencoder: bool, device: torch.device
                    ) -> dict[str, Tensor]:
    """Every target view as one image: ``high`` [M, 3, H, W] and ``guide`` [M, 3, H, W] (uint8),
    ``mask`` [M, 1, H, W] (uint8) and ``low`` [M, 3, H/2, W/2] float in [0, 1].

    ``data`` holds :func:`gafkit.diffusion.dataset.load_split`'s uint8 tensors."""
    high = data["images"].flatten(0, 1)
    h, w = high.shape[-2:]
    if h % 16 or w % 16:
        raise GafkitError(f"upsampler: data images are {h}x{w}; the size must be a multiple of 16")
    ae = load_default_autoencoder().to(device) if through_autoencoder else None
    lows = []
    with torch.no_grad():
        step = encode_chunk(device)
        for i in range(0, len(high), step):
            x = high[i:i + step].to(device).float() / 255
            low = F.interpolate(x, size=(h // 2, w // 2), mode="bilinear", antialias=True, align_corners=False)
            if ae is not None:
                low = ae.decode(ae.encode(low)).float().clamp(0, 1)
            lows.append(low)
    return {"high": high.to(device), "guide": data["normals"].flatten(0, 1).to(device),
            "mask": data["masks"].flatten(0, 1).to(device), "low": torch.cat(lows)}


def random_crops(images: dict[str, Tensor], batch: int, crop: int, g: torch.Generator
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """(low [B, 3, c/2, c/2], guide [B, 3, c, c], high [B, 3, c, c]) at random images and aligned
    positions (even high-resolution offsets)."""
    m, _, h, w = images["high"].shape
    dev = images["high"].device
    idx = torch.randint(0, m, (batch,), generator=g, device=dev)
    ys = torch.randint(0, (h - crop) // 2 + 1, (batch,), generator=g, device=dev)
    xs = torch.randint(0, (w - crop) // 2 + 1, (batch,), generator=g, device=dev)
    lows, guides, highs = [], [], []
    half = crop // 2
    for i, y, x in zip(idx.tolist(), ys.tolist(), xs.tolist()):
        lows.append(images["low"][i, :, y:y + half, x:x + half])
        guides.append(images["guide"][i, :, 2 * y:2 * y + crop, 2 * x:2 * x + crop])
        highs.append(images["high"][i, :, 2 * y:2 * y + crop, 2 * x:2 * x + crop])
    return torch.stack(lows), torch.stack(guides).float() / 255, torch.stack(highs).float() / 255


@torch.no_grad()
def evaluate_upsampler(model: ImageUpsampler, images: dict[str, Tensor]) -> dict[str, float]:
    """Mean PSNR (full and masked) of the upsampler, bicubic and bilinear on every image of ``images``
    (:func:`training_images` of the held-out split)."""
    sums: dict[str, float] = {}
    n = len(images["high"])
    h, w = images["high"].shape[-2:]
    for i in range(0, n, CHUNK):
        low = images["low"][i:i + CHUNK]
        high = images["high"][i:i + CHUNK].float() / 255
        mask = images["mask"][i:i + CHUNK].float() / 255
        outs = {"upsampler": model(low, images["guide"][i:i + CHUNK].float() / 255).clamp(0, 1),
                "bicubic": F.interpolate(low, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1),
                "bilinear": F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)}
        for name, out in outs.items():
            for j in range(len(out)):
                sums[f"psnr_{name}"] = sums.get(f"psnr_{name}", 0.0) + psnr(out[j], high[j])
                sums[f"psnr_masked_{name}"] = sums.get(f"psnr_masked_{name}", 0.0) + psnr(out[j], high[j], mask[j])
    return {k: round(v / n, 3) for k, v in sums.items()}


def run_upsampler_train(cfg: UpsamplerTrainConfig, data: list[str | Path], out: str | Path, *,
                        device: str = "auto", overwrite: bool = False) -> Path:
    """Train the upsampler on the ``train`` split of the ``data`` folders, score it on their
    ``heldout`` split (or ``train`` when there is none) and write it to ``out``."""
    _check(cfg)
    out, roots = Path(out), [Path(d) for d in data]
    if not roots:
        raise GafkitError("prior train-upsampler: give at least one --data folder")
    dev = resolve_device(device)
    train_data = load_split(roots, "train")
    # Checked before the autoencoder round trips, which take minutes on a CPU.
    if cfg.crop > train_data["images"].shape[-1]:
        raise GafkitError(f"{roots[0]}: crop {cfg.crop} is larger than the data's images "
                          f"({train_data['images'].shape[-1]} px)")
    train = training_images(train_data, through_autoencoder=cfg.through_autoencoder, device=dev)
    del train_data
    try:
        heldout = training_images(load_split(roots, "heldout"), through_autoencoder=cfg.through_autoencoder,
                                  device=dev)
        split = "heldout"
    except GafkitError:
        heldout, split = train, "train"
    inputs = {f"data{i}": r / "index.json" for i, r in enumerate(roots)}
    with write_artifact(out, UPSAMPLER_KIND, config=cfg, inputs=inputs, overwrite=overwrite, resumable=True) as art:
        torch.manual_seed(cfg.seed)
        model = ImageUpsampler(channels=cfg.channels, blocks=cfg.blocks).to(dev)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps)))
        g = torch.Generator(device=dev).manual_seed(cfg.seed)
        step, train_time = 0, 0.0
        ckpt = art.dir / "checkpoints" / "latest.pt"
        if ckpt.is_file():
            state = torch.load(ckpt, map_location="cpu", weights_only=False)
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["opt"])
            sched.load_state_dict(state["sched"])
            g.set_state(state["generator"])
            step, train_time = int(state["step"]), float(state["train_time"])
            log.info("resuming upsampler training at step %d (%s)", step, ckpt)

        def save() -> None:
            write_checkpoint(ckpt, {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                                    "generator": g.get_state(), "step": step, "train_time": train_time})

        losses: list[Tensor] = []
        try:
            for _ in track(range(step, cfg.steps), "upsampler train", total=cfg.steps - step):
                start = time.perf_counter()
                low, guide, high = random_crops(train, cfg.batch_size, cfg.crop, g)
                loss = F.l1_loss(model(low, guide), high)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                losses.append(loss.detach())
                train_time += time.perf_counter() - start
                if step % cfg.log_every == 0 or step == cfg.steps:
                    entry = {"step": step, "loss": round(float(torch.stack(losses).mean()), 6),
                             "train_time_s": round(train_time, 3)}
                    losses.clear()
                    with open(art.dir / "train_log.jsonl", "a", encoding="utf-8") as f:
                        f.write(json.dumps(entry) + "\n")
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.steps:
                    save()
        except KeyboardInterrupt:
            save()
            log.warning("interrupted at step %d; checkpoint written to %s (rerun to resume)", step, ckpt)
            raise
        model.eval()
        with art.timed("evaluate"):
            metrics = evaluate_upsampler(model, heldout)
        metrics.update({"split": split, "images": len(heldout["high"]), "train_images": len(train["high"]),
                        "steps": step, "train_time_s": round(train_time, 3), "device": str(dev),
                        "parameters": sum(p.numel() for p in model.parameters())})
        model.save_pretrained(art.dir)
        (art.dir / "metrics.json").write_text(json.dumps(metrics, indent=1), encoding="utf-8")
        ckpt.unlink(missing_ok=True)
        if not any(ckpt.parent.iterdir()):
            ckpt.parent.rmdir()
        art.manifest.extra = {k: metrics[k] for k in ("psnr_upsampler", "psnr_bicubic", "steps")}
        log.info("upsampler: %d steps, held-out PSNR %.2f dB (bicubic %.2f)", step, metrics["psnr_upsampler"],
                 metrics["psnr_bicubic"])
    return out


__all__ = ["UpsamplerTrainConfig", "evaluate_upsampler", "random_crops", "run_upsampler_train", "training_images"]
