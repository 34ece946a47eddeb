"""``gafkit fit``: optimize Gaussians bound to the tracked head mesh against the video frames.

One training step renders one training frame: the head model posed with that frame's (optionally
refined) parameters, the Gaussians bound to its triangles, rendered by gsplat on CUDA or the torch
reference elsewhere, compared with the frame composited over the background. Loss: L1 + D-SSIM,
an opacity-vs-mask term, and regularizers that keep Gaussians near and not much larger than their
triangles, plus a small penalty on the per-frame parameter offsets when tracking is refined.

Checkpoints (``checkpoints/latest.pt`` inside ``AVATAR.partial/``, written atomically) hold the whole
training state; Ctrl-C/SIGTERM writes one before exiting, and the same command resumes from it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from gafkit.artifact import write_artifact, write_checkpoint
from gafkit.console import track
from gafkit.device import resolve_device
from gafkit.errors import InputError, StoppedError
from gafkit.heads import load_head_model
from gafkit.heads.base import HeadModel, HeadParams
from gafkit.media import sequence_fps
from gafkit.recon.avatar import PER_GAUSSIAN, render_avatar
from gafkit.recon.binding import triangle_frames
from gafkit.recon.config import FitConfig
from gafkit.recon.data import FrameSet, evenly_spaced, load_frames
from gafkit.recon.densify import GradStats, densify_and_prune, reset_opacity
from gafkit.recon.evaluate import (
    AVATAR_KIND,
    BACKGROUNDS,
    evaluate_frames,
    render_speed,
    save_avatar_files,
    write_preview,
)
from gafkit.recon.initialize import initial_avatar
from gafkit.recon.metrics import photometric_loss
from gafkit.trackers.sequence import TrackedSequence, load_sequence

log = logging.getLogger("gafkit.fit")

MAX_BAD_STEPS = 20
OFFSET_FIELDS = ("expr", "jaw", "eyes", "rotation", "translation")


class FrameOffsets(nn.Module):
    """Per-frame corrections to the tracked parameters (zeros at the start; only trained frames move).

    Shapes: ``expr`` [T, E], ``jaw`` [T, 3], ``eyes`` [T, 6], ``rotation`` [T, 3], ``translation`` [T, 3].
    """

    def __init__(self, params: HeadParams):
        super().__init__()
        for name in OFFSET_FIELDS:
            self.register_parameter(name, nn.Parameter(torch.zeros_like(getattr(params, name))))

    def apply(self, params: HeadParams, index: int | slice) -> HeadParams:
        """``params[index]`` plus the offsets of those frames (an int keeps the batch dimension)."""
        sl = slice(index, index + 1) if isinstance(index, int) else index
        p = params[sl]
        return dataclasses.replace(p, **{n: getattr(p, n) + getattr(self, n)[sl] for n in OFFSET_FIELDS})

    def penalty(self, index: int) -> Tensor:
        """Squared offsets of one frame; translation in centimetres so all terms are of similar size."""
        scale = {"translation": 100.0}
        return sum((getattr(self, n)[index] * scale.get(n, 1.0)).square().sum() for n in OFFSET_FIELDS)


def _clamp_expr(model: HeadModel, params: HeadParams) -> HeadParams:
    if model.expr_bounds is None:
        return params
    lo, hi = model.expr_bounds
    return dataclasses.replace(params, expr=params.expr.clamp(lo, hi))


class Trainer:
    """The whole mutable state of a fit, with one method per thing the loop does."""

    def __init__(self, cfg: FitConfig, model: HeadModel, seq: TrackedSequence, frames: FrameSet, device: torch.device):
        self.cfg, self.model, self.seq, self.frames, self.device = cfg, model, seq, frames, device
        self.base = seq.params.to(device)
        self.train_ids = list(seq.splits["train"])
        if cfg.foreground_colour and frames.foreground is None:
            frames.add_foreground(self.train_ids)
        self.bg = torch.tensor(BACKGROUNDS[cfg.background], device=device)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        self.avatar = initial_avatar(model, self.base, frames, self.train_ids, cfg, self.gen)
        self.offsets = FrameOffsets(self.base).to(device)
        self.iteration = 0
        self.train_time = 0.0
        self.history: list[dict] = []
        self.bad_steps = 0
        self._build_optimizer()
        self.stats = GradStats.zeros(len(self.avatar), device)
        with torch.no_grad():
            ref = model(self.base[self.train_ids[0]])
            self.face_size = triangle_frames(ref, model.faces).size[0]
        self._order: list[int] = []
        self.outside = None
        if cfg.loss.outside > 0:
            from gafkit.recon.unseen_views import OutsideOpacity

            # The trainer's checkpointed generator draws the views, so a resumed fit draws the same ones.
            self.outside = OutsideOpacity(model, self.base, frames.cameras, self.train_ids, size=cfg.loss.outside_size,
                                          margin=cfg.loss.outside_margin, pitch_deg=cfg.prior.pitch_deg,
                                          generator=self.gen)
        self.pseudo = None
        if cfg.prior.path != "none":
            from gafkit.diffusion.pipeline import MultiViewPrior
            from gafkit.recon.prior_guidance import PseudoViews

            prior = MultiViewPrior.from_pretrained(cfg.prior.path, device=device, upsampler=cfg.prior.upsampler)
            self.pseudo = PseudoViews(cfg.prior, prior, model, self.base, frames, self.train_ids, cfg.iters, device,
                                      cfg.seed)

    # ---- optimizer ----------------------------------------------------------------------------
    def _build_optimizer(self) -> None:
        lr = self.cfg.lr
        rates = {"xyz": lr.xyz, "rotation": lr.rotation, "log_scale": lr.scale, "opacity_logit": lr.opacity,
                 "sh_dc": lr.sh_dc, "sh_rest": lr.sh_rest, "expr_color": lr.expr_color}
        groups = [{"name": n, "params": [getattr(self.avatar, n)], "lr": rates[n]} for n in PER_GAUSSIAN]
        groups.append({"name": "code_proj", "params": [self.avatar.code_proj], "lr": lr.expr_color})
        if self.cfg.refine_tracking:
            track_lr = {"expr": lr.tracking_expr, "jaw": lr.tracking_pose, "eyes": lr.tracking_pose,
                        "rotation": lr.tracking_pose, "translation": lr.tracking_translation}
            groups += [{"name": f"offset.{n}", "params": [getattr(self.offsets, n)], "lr": track_lr[n]}
                       for n in OFFSET_FIELDS]
        # Fused Adam: one kernel per parameter group instead of a dozen (the step is launch-bound on GPU).
        fused = self.device.type == "cuda"
        self.optimizer = torch.optim.Adam(groups, lr=0.0, eps=1e-15, fused=fused)

    def _schedule(self) -> None:
        """Exponential decay of the position learning rate (3DGS's schedule, without its warm-up), and of
        the other per-Gaussian rates to ``lr.final_factor`` of their start."""
        lr = self.cfg.lr
        t = min(1.0, self.iteration / max(1, self.cfg.iters))
        value = math.exp((1 - t) * math.log(lr.xyz) + t * math.log(lr.xyz_final))
        factor = lr.final_factor**t
        for group in self.optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
            if group["name"] == "xyz":
                group["lr"] = value
            elif group["name"] in PER_GAUSSIAN:
                group["lr"] = group["initial_lr"] * factor

    # ---- one step -----------------------------------------------------------------------------
    def _next_frame(self) -> int:
        if not self._order:
            perm = torch.randperm(len(self.train_ids), generator=self.gen).tolist()
            self._order = [self.train_ids[j] for j in perm]
        return self._order.pop()

    def frame_params(self, index: int) -> HeadParams:
        params = self.offsets.apply(self.base, index) if self.cfg.refine_tracking else self.base[index]
        return _clamp_expr(self.model, params)

    def step(self) -> dict[str, float] | None:
        """One optimization step; returns its losses, or None when it was skipped (non-finite)."""
        cfg = self.cfg
        index = self._next_frame()
        active_sh = min(self.avatar.sh_degree, self.iteration // max(1, cfg.sh_increase_every))
        params = self.frame_params(index)
        out = render_avatar(self.avatar, self.model, params, self.frames.cameras[index], bg=self.bg,
                            sh_degree=active_sh, backend=cfg.backend)
        if out.means2d.requires_grad:
            out.means2d.retain_grad()
        gt, mask = self.frames.target(index, self.bg, foreground=cfg.foreground_colour)
        rgb = out.rgb
        loss, l1 = photometric_loss(rgb, gt, cfg.loss.ssim)
        if cfg.loss.alpha > 0:
            loss = loss + cfg.loss.alpha * (out.alpha - mask).abs().mean()
        a = self.avatar
        if cfg.loss.xyz_reg > 0:
            loss = loss + cfg.loss.xyz_reg * (a.xyz.norm(dim=-1) - cfg.loss.xyz_reg_threshold).clamp_min(0).mean()
        if cfg.loss.scale_reg > 0:
            loss = loss + cfg.loss.scale_reg * (a.log_scale.exp() - cfg.loss.scale_reg_threshold).clamp_min(0).mean()
        if a.code_dim > 0 and cfg.loss.expr_color_reg > 0:
            loss = loss + cfg.loss.expr_color_reg * a.expr_color.square().mean()
        if cfg.refine_tracking and cfg.loss.tracking_reg > 0:
            loss = loss + cfg.loss.tracking_reg * self.offsets.penalty(index)
        if self.outside is not None:
            loss = loss + cfg.loss.outside * self.outside.loss(self.avatar, cfg.backend)
        pseudo = self.pseudo if self.pseudo is not None and self.pseudo.active(self.iteration) else None
        if pseudo is not None:
            if pseudo.due(self.iteration):
                pseudo.regenerate(self.avatar, self.iteration, cfg.backend, active_sh)
            loss = loss + pseudo.loss(self.avatar, self.iteration, cfg.backend, active_sh, cfg.loss.ssim)
        loss.backward()
        # One host sync per step: the loss and the gradients that a blow-up reaches first.
        finite = torch.isfinite(loss)
        for p in (a.xyz, a.sh_dc, a.log_scale):
            if p.grad is not None:
                finite = finite & torch.isfinite(p.grad).all()
        if not bool(finite):
            self.optimizer.zero_grad(set_to_none=True)
            self.bad_steps += 1
            return None
        self.bad_steps = 0
        if out.means2d.grad is not None:
            self.stats.add(out.means2d.grad[0], out.visible[0], self.frames.size[1], self.frames.size[0])
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if pseudo is not None:
            pseudo.step_affine()
        return {"loss": loss.detach(), "l1": l1.detach(), "frame": index}

    def maybe_densify(self) -> dict[str, int] | None:
        d = self.cfg.densify
        it = self.iteration
        if not d.enabled or it < d.start or it > d.stop_fraction * self.cfg.iters or it % d.every != 0:
            return None
        counts = densify_and_prune(self.avatar, self.optimizer, self.stats, self.face_size, d, self.gen)
        self.stats = GradStats.zeros(len(self.avatar), self.device)
        if d.opacity_reset_every and it % d.opacity_reset_every == 0:
            reset_opacity(self.avatar, self.optimizer)
        return counts

    # ---- checkpoints --------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "iteration": self.iteration, "train_time": self.train_time, "history": self.history,
            "face_ids": self.avatar.face_ids.cpu(),
            "avatar": {k: v.detach().cpu() for k, v in self.avatar.state_dict().items()},
            "offsets": {k: v.detach().cpu() for k, v in self.offsets.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "stats": (self.stats.grad_sum.cpu(), self.stats.count.cpu()),
            "gen": self.gen.get_state(), "torch_rng": torch.get_rng_state(), "py_rng": random.getstate(),
            "order": list(self._order),
            "pseudo": None if self.pseudo is None else self.pseudo.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        av = state["avatar"]
        self.avatar.replace(state["face_ids"].to(self.device), {k: av[k].to(self.device) for k in PER_GAUSSIAN})
        self.avatar.load_state_dict({k: v.to(self.device) for k, v in av.items()})
        self.offsets.load_state_dict({k: v.to(self.device) for k, v in state["offsets"].items()})
        self._build_optimizer()
        self.optimizer.load_state_dict(state["optimizer"])
        self.stats = GradStats(state["stats"][0].to(self.device), state["stats"][1].to(self.device))
        self.iteration, self.train_time, self.history = state["iteration"], state["train_time"], state["history"]
        self.gen.set_state(state["gen"])
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["py_rng"])
        self._order = list(state["order"])
        if self.pseudo is not None and state.get("pseudo") is not None:
            self.pseudo.load_state_dict(state["pseudo"])

    def save_checkpoint(self, path: Path) -> None:
        state = self.state_dict()
        try:
            write_checkpoint(path, state)
        except OSError as err:
            # The previous checkpoint is intact (atomic replace): the run can continue from it.
            raise StoppedError(f"{path}: could not write the checkpoint ({err.strerror or err}); the previous "
                               "checkpoint is kept, free space and rerun the same command to resume") from None

    # ---- evaluation ---------------------------------------------------------------------------
    def params_all(self) -> HeadParams:
        """Every frame's parameters with the learned offsets applied (zero for frames not trained)."""
        with torch.no_grad():
            p = self.offsets.apply(self.base, slice(0, self.base.batch_size)) if self.cfg.refine_tracking else self.base
            return _clamp_expr(self.model, p).detach()

    def evaluate(self, split: str, limit: int | None = None) -> dict[str, float]:
        ids = list(self.seq.splits[split])
        if limit is not None:
            ids = evenly_spaced(ids, limit)
        return evaluate_frames(self.avatar, self.model, self.params_all(), self.frames, ids, self.bg, self.cfg.backend)


def _check_sequence(seq: TrackedSequence) -> None:
    train = seq.splits.get("train") or []
    if not train:
        raise InputError(seq.root, "the tracked sequence has no training frames")
    if len(seq.images) != len(seq.masks):
        raise InputError(seq.root, f"{len(seq.images)} images but {len(seq.masks)} masks")


def _check_settings(cfg: FitConfig) -> None:
    from gafkit.errors import ConfigError

    if not cfg.lr.final_factor > 0:
        raise ConfigError(f"lr.final_factor: {cfg.lr.final_factor!r} must be > 0 (1 keeps the rates constant)")
    if not 0 <= cfg.prior.min_yaw_deg < 180:
        raise ConfigError(f"prior.min_yaw_deg: {cfg.prior.min_yaw_deg!r} must be in [0, 180)")
    if not 0 <= cfg.prior.seen_cos <= 1:
        raise ConfigError(f"prior.seen_cos: {cfg.prior.seen_cos!r} must be in [0, 1] (0 turns it off)")
    if not 0 <= cfg.prior.foreground_faces <= 1:
        raise ConfigError(f"prior.foreground_faces: {cfg.prior.foreground_faces!r} must be in [0, 1] (0 turns it off)")
    if cfg.prior.upsampler not in ("auto", "none") and not (Path(cfg.prior.upsampler) / "config.json").is_file():
        raise ConfigError(f"prior.upsampler: {cfg.prior.upsampler}: not an upsampler folder (no config.json); "
                          "use auto, none or a `gafkit prior train-upsampler` output")
    if cfg.loss.outside < 0 or not 0 <= cfg.loss.outside_margin < 1 or cfg.loss.outside_size < 8:
        raise ConfigError(f"loss.outside {cfg.loss.outside!r}, outside_margin {cfg.loss.outside_margin!r}, "
                          f"outside_size {cfg.loss.outside_size!r}: need >= 0, [0, 1) and >= 8 pixels")


def run_fit(cfg: FitConfig, tracked: str | Path, out: str | Path, *, device: str = "auto", overwrite: bool = False,
            resume: bool = True) -> Path:
    """Fit an avatar to the tracked sequence ``tracked`` and write the avatar artifact ``out``.

    With ``resume`` (default) an interrupted run of the same command (same inputs and config)
    continues from its last checkpoint; ``resume=False`` starts over.
    """
    tracked, out = Path(tracked), Path(out)
    _check_settings(cfg)
    dev = resolve_device(device)
    seq = load_sequence(tracked)
    _check_sequence(seq)
    model = load_head_model(seq.head_model, cfg.flame_model).to(dev)
    if model.n_expr != seq.params.expr.shape[1] or model.n_shape != seq.params.shape.shape[1]:
        raise InputError(tracked / "head_params.npz",
                         f"parameters do not fit the {seq.head_model} model ({seq.params.shape.shape[1]} shape, "
                         f"{seq.params.expr.shape[1]} expression; model has {model.n_shape}, {model.n_expr})")
    inputs: dict[str, Path] = {"tracked": tracked}
    if cfg.prior.path not in ("none", "default"):
        index = Path(cfg.prior.path) / "model_index.json"
        if not index.is_file():
            raise InputError(cfg.prior.path, "not a gafkit prior folder (no model_index.json)")
        inputs["prior"] = index
    if not resume:
        import shutil

        shutil.rmtree(Path(str(out) + ".partial"), ignore_errors=True)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    with write_artifact(out, AVATAR_KIND, config=cfg, inputs=inputs, overwrite=overwrite,
                        resumable=True) as art:
        with art.timed("load"):
            frames = load_frames(seq.images, seq.masks, seq.cameras, resolution=cfg.resolution, device=dev)
        trainer = Trainer(cfg, model, seq, frames, dev)
        ckpt = art.dir / "checkpoints" / "latest.pt"
        if art.resumed and ckpt.is_file():
            trainer.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=False))
            log.info("resuming from iteration %d (%s)", trainer.iteration, ckpt)
        _train(trainer, ckpt, art.dir / "train_log.jsonl")
        art.manifest.timings["train"] = round(trainer.train_time, 3)
        with art.timed("evaluate"):
            metrics = _final_metrics(trainer, dev)
        save_avatar_files(art.dir, trainer.avatar, seq.head_model, trainer.params_all(), seq, metrics,
                          cfg.background)
        trainer.save_checkpoint(ckpt)
        if cfg.preview:
            with art.timed("preview"):
                write_preview(art.dir / "preview.mp4", trainer.avatar, model, trainer.params_all(), frames,
                              seq.splits[cfg.eval_split], trainer.bg, cfg.backend, fps=_fps(seq))
        art.manifest.extra = {"head_model": seq.head_model, **{k: v for k, v in metrics.items() if k != "history"}}
        log.info("avatar: %d Gaussians, %s PSNR %.2f dB (masked %.2f dB), %.0f s of training",
                 metrics["num_gaussians"], metrics["split"], metrics["psnr"], metrics["psnr_masked"],
                 metrics["train_time_s"])
    return out


def _train(trainer: Trainer, ckpt: Path, log_path: Path) -> None:
    cfg = trainer.cfg
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    last_loss = math.nan

    def log_eval() -> None:
        m = trainer.evaluate(cfg.eval_split, limit=20)
        train = trainer.evaluate("train", limit=10)
        entry = {"iteration": trainer.iteration, "train_time_s": round(trainer.train_time, 3),
                 "loss": float(last_loss), "num_gaussians": len(trainer.avatar), **m,
                 "train_psnr": train["psnr"], "train_psnr_masked": train["psnr_masked"]}
        trainer.history.append(entry)
        with open(log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")

    try:
        if cfg.eval_every and trainer.iteration == 0:
            log_eval()  # the starting point of the learning curve
        for _ in track(range(trainer.iteration, cfg.iters), "fit", total=cfg.iters - trainer.iteration):
            start = time.perf_counter()
            trainer._schedule()
            result = trainer.step()
            if result is None and trainer.bad_steps >= MAX_BAD_STEPS:
                trainer.save_checkpoint(ckpt)
                raise StoppedError(f"{ckpt.parent.parent}: the optimization diverged (non-finite loss or gradients "
                                   f"in {MAX_BAD_STEPS} steps in a row at iteration {trainer.iteration}); the last "
                                   "good state is checkpointed: lower the learning rates (--set lr.xyz=...) and rerun")
            trainer.iteration += 1
            counts = trainer.maybe_densify()
            sync()
            trainer.train_time += time.perf_counter() - start
            if result is not None:
                last_loss = result["loss"]  # a tensor: read only when logged (no sync per step)
            if counts is not None:
                log.debug("iteration %d: %s", trainer.iteration, counts)
            if cfg.eval_every and trainer.iteration % cfg.eval_every == 0:
                log_eval()
            if cfg.checkpoint_every and trainer.iteration % cfg.checkpoint_every == 0 and trainer.iteration < cfg.iters:
                trainer.save_checkpoint(ckpt)
    except KeyboardInterrupt:
        trainer.save_checkpoint(ckpt)
        log.warning("interrupted at iteration %d; checkpoint written to %s (rerun to resume)", trainer.iteration, ckpt)
        raise


def _final_metrics(trainer: Trainer, dev: torch.device) -> dict:
    cfg = trainer.cfg
    m = trainer.evaluate(cfg.eval_split)
    final = m["psnr"]
    t95 = next((h["train_time_s"] for h in trainer.history if h["psnr"] >= final - abs(final) * 0.05), None)
    ids = list(trainer.seq.splits[cfg.eval_split])
    fps = render_speed(trainer.avatar, trainer.model, trainer.params_all(), trainer.frames, ids, trainer.bg,
                       cfg.backend)
    return {
        "split": cfg.eval_split, **m, "lpips": None, "num_gaussians": len(trainer.avatar), "iters": trainer.iteration,
        "train_time_s": round(trainer.train_time, 3), "time_to_95_s": t95,
        "peak_vram_mb": round(torch.cuda.max_memory_allocated(dev) / 2**20, 1) if dev.type == "cuda" else None,
        "fps_render": round(fps, 2), "resolution": list(trainer.frames.size), "device": str(dev),
        "prior": None if trainer.pseudo is None else {
            "path": cfg.prior.path, "generations": trainer.pseudo.generations,
            "generate_time_s": round(trainer.pseudo.generate_time, 3)},
        "history": trainer.history,
    }


def _fps(seq: TrackedSequence) -> float:
    return sequence_fps([f.get("timestamp", 0.0) for f in seq.frames]) or 25.0
