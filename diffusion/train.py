"""``gafkit prior train``: train the multi-view denoiser on prior data folders.

The autoencoder is frozen, so every example's latents (reference, target views, normal maps) are
computed once and kept on the device; a step then only samples a batch, noises it and runs the
denoiser. accelerate handles the device, bf16 autocast and (with ``accelerate launch``) several GPUs.
The run is resumable: ``OUT.partial/checkpoints/latest.pt`` holds weights, EMA, optimizer, scheduler,
step and RNG states; Ctrl-C and ``time_limit_s`` checkpoint and stop, and the same command continues.

Output folder (a ``prior`` artifact): the prior (EMA weights, :mod:`gafkit.diffusion.pipeline` layout),
``train_log.jsonl``, ``samples/step_NNNNNN.jpg`` grids of held-out examples and ``metrics.json``.
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
from gafkit.diffusion.autoencoder import encode_chunk
from gafkit.diffusion.dataset import load_split
from gafkit.diffusion.evaluate import evaluate_prior, sample_grid
from gafkit.diffusion.pipeline import MultiViewPrior, build_prior
from gafkit.diffusion.train_config import PriorModelConfig, PriorTrainConfig
from gafkit.errors import GafkitError, StoppedError

PRIOR_KIND = "prior"


class EMA:
    """Exponential moving average of a module's floating-point parameters."""

    def __init__(self, module: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = [p.detach().clone().float() for p in module.parameters()]

    @torch.no_grad()
    def update(self, module: torch.nn.Module, step: int) -> None:
        # Warm-up (as in diffusers' EMAModel): early averages would mostly hold the random init.
        decay = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self.shadow, [p.detach().float() for p in module.parameters()], 1 - decay)

    @torch.no_grad()
    def copy_to(self, module: torch.nn.Module) -> None:
        for s, p in zip(self.shadow, module.parameters()):
            p.copy_(s.to(p.dtype))


def encode_examples(prior: MultiViewPrior, data: dict[str, Tensor], dtype: torch.dtype) -> dict[str, Tensor]:
    """Latents of every example: ``reference`` [N, C, h, w], ``images`` and ``normals`` [N, V, C, h, w].

    ``data`` holds the uint8 tensors of :func:`gafkit.diffusion.dataset.load_split`.
    """
    out: dict[str, Tensor] = {}
    for key in ("reference", "images", "normals"):
        x = data[key]
        flat = x.flatten(0, 1) if x.ndim == 5 else x
        parts = []
        with torch.no_grad():
            step = encode_chunk(prior.device)
            for i in range(0, len(flat), step):
                chunk = flat[i:i + step].to(prior.device).float() / 255
                parts.append(prior.encode(chunk).to(dtype))
        lat = torch.cat(parts)
        out[key] = lat.unflatten(0, x.shape[:2]) if x.ndim == 5 else lat
    return out


class PriorTrainer:
    """One training run: model, EMA, optimizer, LR schedule and the resident latents."""

    def __init__(self, cfg: PriorTrainConfig, device: torch.device):
        from accelerate import Accelerator

        self.cfg = cfg
        precision = cfg.mixed_precision
        if precision == "auto":
            precision = "bf16" if device.type == "cuda" else "no"
        self.accelerator = Accelerator(mixed_precision=precision, cpu=device.type == "cpu")
        if self.accelerator.num_processes > 1:
            device = self.accelerator.device  # this process's GPU under `accelerate launch`
        torch.manual_seed(cfg.seed)  # the same initial weights in every process
        # The model config's fields other than size and views are the denoiser's constructor arguments.
        arch = {k: v for k, v in dataclasses.asdict(cfg.model).items() if k not in ("size", "views")}
        arch["block_out_channels"] = tuple(arch["block_out_channels"])
        if cfg.init is None:
            self.prior = build_prior(size=cfg.model.size, views=cfg.model.views, **arch).to(device)
        else:
            self.prior = MultiViewPrior.from_pretrained(cfg.init, device=device, dtype=torch.float32, upsampler="none")
        self.prior.autoencoder.requires_grad_(False)
        model = self.prior.denoiser
        if cfg.gradient_checkpointing:
            model.unet.enable_gradient_checkpointing()
        self.ema = EMA(model, cfg.ema_decay)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                fused=device.type == "cuda")
        warm = max(1, cfg.warmup_steps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
        self.model, self.opt, self.lr_sched = self.accelerator.prepare(model, opt, sched)
        self.latents: dict[str, Tensor] = {}
        self.step = 0
        self.train_time = 0.0
        # Each process draws its own batches; DDP averages their gradients (global batch = B x processes).
        self.generator = torch.Generator(device=device).manual_seed(cfg.seed + self.accelerator.process_index)
        self.noise_sched = self.prior.scheduler
        self.alphas = self.noise_sched.alphas_cumprod.to(device)

    @property
    def _store_dtype(self) -> torch.dtype:
        # bf16 storage halves the resident latents; a step upcasts what it samples.
        return torch.bfloat16 if self.accelerator.device.type == "cuda" else torch.float32

    def load_examples(self, data: dict[str, Tensor]) -> None:
        """Encode the uint8 examples of :func:`load_split` once; they stay on the device."""
        self.latents = encode_examples(self.prior, data, self._store_dtype)

    def set_latents(self, latents: dict[str, Tensor]) -> None:
        """Latents encoded earlier (:meth:`load_examples`'s ``latents``, e.g. from a resumed run)."""
        self.latents = {k: v.to(self.prior.device, self._store_dtype) for k, v in latents.items()}

    @property
    def n(self) -> int:
        """Training examples loaded."""
        return len(self.latents["images"]) if self.latents else 0

    def noised_batch(self, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """A random batch taken to random noise levels: (noisy [B,V,C,h,w], timesteps [B], normal
        latents, reference latents, v-prediction target)."""
        cfg, dev = self.cfg, self.accelerator.device
        idx = torch.randint(0, self.n, (cfg.batch_size,), device=dev, generator=g)
        x0 = self.latents["images"][idx].float()
        noise = torch.randn(x0.shape, device=dev, generator=g)
        t = torch.randint(0, self.noise_sched.config.num_train_timesteps, (cfg.batch_size,), device=dev, generator=g)
        a = self.alphas[t].view(-1, 1, 1, 1, 1)
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
        target = a.sqrt() * noise - (1 - a).sqrt() * x0  # v-prediction
        return noisy, t, self.latents["normals"][idx].float(), self.latents["reference"][idx].float(), target

    def train_step(self, generator: torch.Generator | None = None) -> Tensor:
        """One optimizer step on a random batch drawn with ``generator`` (default: the run's own);
        returns the loss (a tensor, not synced)."""
        cfg, g = self.cfg, generator or self.generator
        noisy, t, normals, reference, target = self.noised_batch(g)
        dropped = torch.rand(cfg.batch_size, device=noisy.device, generator=g) < cfg.reference_drop
        with self.accelerator.autocast():
            pred = self.model(noisy, t, normals, reference, dropped)
        loss = F.mse_loss(pred.float(), target)
        self.accelerator.backward(loss)
        if cfg.grad_clip:
            self.accelerator.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.opt.step()
        self.lr_sched.step()
        self.opt.zero_grad(set_to_none=True)
        self.step += 1
        self.ema.update(self.accelerator.unwrap_model(self.model), self.step)
        return loss.detach()

    def ema_prior(self) -> MultiViewPrior:
        """The prior with the EMA weights (a copy; training continues on the raw weights)."""
        import copy

        denoiser = copy.deepcopy(self.accelerator.unwrap_model(self.model))
        self.ema.copy_to(denoiser)
        denoiser.eval()
        return MultiViewPrior(denoiser, self.prior.autoencoder, self.prior.scheduler, size=self.prior.size,
                              views=self.prior.views, autoencoder_origin=self.prior.autoencoder_origin)

    def state_dict(self) -> dict:
        return {"model": self.accelerator.unwrap_model(self.model).state_dict(), "ema": self.ema.shadow,
                "opt": self.opt.state_dict(), "lr_sched": self.lr_sched.state_dict(), "step": self.step,
                "train_time": self.train_time, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.accelerator.unwrap_model(self.model).load_state_dict(state["model"])
        dev = self.accelerator.device
        self.ema.shadow = [s.to(dev) for s in state["ema"]]
        self.opt.load_state_dict(state["opt"])
        self.lr_sched.load_state_dict(state["lr_sched"])
        self.step, self.train_time = int(state["step"]), float(state["train_time"])
        self.generator.set_state(state["generator"])

    def save_checkpoint(self, path: Path) -> None:
        write_checkpoint(path, self.state_dict())


def run_prior_train(cfg: PriorTrainConfig, data: list[str | Path], out: str | Path, *, device: str = "auto",
                    overwrite: bool = False, resume: bool = True, time_limit_s: float | None = None) -> Path:
    """Train a prior on the ``train`` split of the ``data`` folders and write it to ``out``.

    Held-out examples (split ``heldout``) feed the sample grids and the final metrics. With
    ``time_limit_s`` the run stops with a checkpoint after that much training time (e.g. to fit a job
    slot); the same command (with or without a limit) continues from it.
    """
    from accelerate import PartialState

    out, roots = Path(out), [Path(d) for d in data]
    if not roots:
        raise GafkitError("prior train: give at least one --data folder")
    if cfg.init is not None:
        cfg = dataclasses.replace(cfg, model=init_model_config(cfg.init))
    dev = resolve_device(device)
    state = PartialState(cpu=dev.type == "cpu")  # joins the process group under `accelerate launch`
    if state.num_processes > 1:
        dev = state.device
    if not resume and state.is_main_process:
        import shutil

        shutil.rmtree(Path(str(out) + ".partial"), ignore_errors=True)
    train_data = load_split(roots, "train", dev)
    _check_data(cfg, train_data, roots)
    try:
        heldout = load_split(roots, "heldout", dev)
    except GafkitError:
        heldout = None
    # Samples and metrics use the held-out examples, or the training ones when there are none.
    eval_set = heldout if heldout is not None else train_data
    if not state.is_main_process:
        # The other processes train in step (every step all-reduces gradients) and write nothing.
        trainer = PriorTrainer(cfg, dev)
        trainer.load_examples(train_data)
        del train_data
        _resume(trainer, Path(str(out) + ".partial") / "checkpoints" / "latest.pt")
        try:
            _train(trainer, None, None, eval_set, time_limit_s)
        except StoppedError:
            return out  # the main process reports the stop and holds the checkpoint
        state.wait_for_everyone()
        return out
    inputs = {f"data{i}": r / "index.json" for i, r in enumerate(roots)}
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    with write_artifact(out, PRIOR_KIND, config=cfg, inputs=inputs, overwrite=overwrite, resumable=True) as art:
        # Encoded latents are kept beside the checkpoint: a resumed CPU run skips the encoding (25 min
        # for 3,780 images at 256 px on 2 cores). write_artifact reuses the folder only for the same
        # data and config, so the cache always matches.
        cache = art.dir / "checkpoints" / "latents.pt"
        with art.timed("encode"):
            trainer = PriorTrainer(cfg, dev)
            if cache.is_file():
                trainer.set_latents(torch.load(cache, map_location="cpu", weights_only=True))
                log.info("prior train: %d examples' latents from %s", trainer.n, cache)
            else:
                trainer.load_examples(train_data)
                write_checkpoint(cache, {k: v.cpu() for k, v in trainer.latents.items()})
        del train_data
        ckpt = art.dir / "checkpoints" / "latest.pt"  # absent unless write_artifact resumed the folder
        _resume(trainer, ckpt)
        _train(trainer, ckpt, art.dir, eval_set, time_limit_s)
        art.manifest.timings["train"] = round(trainer.train_time, 3)
        prior = trainer.ema_prior()
        with art.timed("evaluate"):
            metrics = evaluate_prior(prior, eval_set, examples=cfg.eval_examples, steps=cfg.sample_steps,
                                     guidance_scale=cfg.guidance_scale, seed=cfg.seed)
            _samples(prior, eval_set, art.dir, trainer.step, cfg)
        metrics.update({"split": "heldout" if heldout is not None else "train", "steps": trainer.step,
                        "train_time_s": round(trainer.train_time, 3), "examples": trainer.n,
                        "processes": state.num_processes, "global_batch": cfg.batch_size * state.num_processes,
                        "parameters": sum(p.numel() for p in prior.denoiser.parameters()),
                        "peak_vram_mb": round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
                        if dev.type == "cuda" else None, "device": str(dev)})
        prior.save_pretrained(art.dir, dtype="int8" if cfg.save_dtype == "int8" else getattr(torch, cfg.save_dtype))
        (art.dir / "metrics.json").write_text(json.dumps(metrics, indent=1), encoding="utf-8")
        ckpt.unlink(missing_ok=True)  # optimizer state is 3x the weights: not part of the prior
        cache.unlink(missing_ok=True)
        art.manifest.extra = {k: metrics[k] for k in ("psnr", "ssim", "steps", "examples") if k in metrics}
        log.info("prior: %d steps on %d examples, held-out PSNR %.2f dB", trainer.step, trainer.n,
                 metrics.get("psnr", math.nan))
    state.wait_for_everyone()
    return out


def init_model_config(init: str) -> PriorModelConfig:
    """The architecture of the prior ``init`` (a folder or ``default``) as a model config."""
    prior = MultiViewPrior.from_pretrained(init, upsampler="none")
    if prior.autoencoder_origin != "default":
        raise GafkitError(f"{init}: fine-tuning a prior with its own autoencoder is not supported")
    config = prior.denoiser.config
    fields = {f.name for f in dataclasses.fields(PriorModelConfig)} - {"size", "views"}
    arch = {k: (tuple(config[k]) if isinstance(config[k], list) else config[k]) for k in fields if k in config}
    return PriorModelConfig(size=prior.size, views=prior.views, **arch)


def _resume(trainer: PriorTrainer, ckpt: Path) -> None:
    """Load ``ckpt`` when it exists; every process reads the same file, once the main process has set
    up the output folder (a fresh run starts from an empty one)."""
    trainer.accelerator.wait_for_everyone()
    if ckpt.is_file():
        trainer.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=False))
        log.info("resuming prior training at step %d (%s)", trainer.step, ckpt)
        if trainer.accelerator.num_processes > 1:
            # The checkpoint holds the main process's batch stream; each process continues its own.
            trainer.generator.manual_seed(trainer.cfg.seed + trainer.accelerator.process_index + 7919 * trainer.step)


def _samples(prior: MultiViewPrior, eval_set: dict[str, Tensor], root: Path, step: int,
             cfg: PriorTrainConfig) -> None:
    sample_grid(prior, eval_set, root / "samples" / f"step_{step:06d}.jpg", examples=min(4, cfg.eval_examples),
                steps=cfg.sample_steps, guidance_scale=cfg.guidance_scale, seed=cfg.seed)


def _check_data(cfg: PriorTrainConfig, data: dict[str, Tensor], roots: list[Path]) -> None:
    _, v, _, h, w = data["images"].shape
    if v != cfg.model.views or h != cfg.model.size or w != cfg.model.size:
        raise GafkitError(f"{roots[0]}: examples have {v} views of {h}x{w}; the config trains "
                          f"{cfg.model.views} views of {cfg.model.size}x{cfg.model.size} (set model.views/size)")


def _train(trainer: PriorTrainer, ckpt: Path | None, root: Path | None, eval_set: dict[str, Tensor],
           time_limit_s: float | None) -> None:
    """The training loop; ``root`` None in the processes other than the main one (they log, sample and
    checkpoint nothing)."""
    cfg = trainer.cfg
    sync = torch.cuda.synchronize if trainer.accelerator.device.type == "cuda" else (lambda: None)
    main = root is not None
    log_path = root / "train_log.jsonl" if main else None
    losses: list[Tensor] = []
    trainer.model.train()
    try:
        for _ in track(range(trainer.step, cfg.steps), "prior train", total=cfg.steps - trainer.step):
            start = time.perf_counter()
            losses.append(trainer.train_step())
            if main and (trainer.step % cfg.log_every == 0 or trainer.step == cfg.steps):
                loss = float(torch.stack(losses).mean())
                losses.clear()
                if not math.isfinite(loss):
                    raise StoppedError(f"{root}: the prior's training diverged (loss {loss} at step {trainer.step});"
                                       " lower --set lr=... and rerun (the last checkpoint is kept)")
                entry = {"step": trainer.step, "loss": round(loss, 6), "lr": trainer.lr_sched.get_last_lr()[0],
                         "train_time_s": round(trainer.train_time, 3)}
                with open(log_path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(entry) + "\n")
            sync()
            trainer.train_time += time.perf_counter() - start
            if main and cfg.sample_every and trainer.step % cfg.sample_every == 0 and trainer.step < cfg.steps:
                _samples(trainer.ema_prior(), eval_set, root, trainer.step, cfg)
            if main and cfg.checkpoint_every and trainer.step % cfg.checkpoint_every == 0 and trainer.step < cfg.steps:
                trainer.save_checkpoint(ckpt)
            if _time_is_up(trainer, time_limit_s) and trainer.step < cfg.steps:
                if main:
                    trainer.save_checkpoint(ckpt)
                raise StoppedError(f"{root}: stopped at step {trainer.step} after the {time_limit_s:g} s time "
                                   "limit; rerun the same command to continue")
    except KeyboardInterrupt:
        if main:
            trainer.save_checkpoint(ckpt)
            log.warning("interrupted at step %d; checkpoint written to %s (rerun to resume)", trainer.step, ckpt)
        raise


def _time_is_up(trainer: PriorTrainer, time_limit_s: float | None) -> bool:
    """The main process's clock decides for all, so every process stops after the same step."""
    if time_limit_s is None:
        return False
    up = trainer.train_time >= time_limit_s
    if trainer.accelerator.num_processes == 1:
        return up
    from accelerate.utils import broadcast

    return bool(broadcast(torch.tensor([float(up)], device=trainer.accelerator.device), from_process=0).item())


def loss_on_batch(trainer: PriorTrainer, seed: int = 0) -> float:
    """The training loss on a fixed batch (fixed examples, noise and timesteps, reference kept), without
    a step: tests and sanity checks compare it before and after training."""
    g = torch.Generator(device=trainer.accelerator.device).manual_seed(seed)
    with torch.no_grad():
        noisy, t, normals, reference, target = trainer.noised_batch(g)
        pred = trainer.model(noisy, t, normals, reference)
    return float(F.mse_loss(pred.float(), target))


__all__ = ["EMA", "PriorTrainer", "encode_examples", "loss_on_batch", "run_prior_train"]
