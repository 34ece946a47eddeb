"""Time one training step of ``gafkit fit`` and show where it goes.

    python benchmarks/bench_fit_step.py TRACKED [--device cuda] [--steps 200] [--profile] [--set key=value ...]

Prints JSON: milliseconds per step (after a warm-up, synchronized), Gaussians, image size; with
``--profile`` also the top operators by self device (or CPU) time from ``torch.profiler``.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from gafkit.config import build_config
from gafkit.device import resolve_device
from gafkit.heads import load_head_model
from gafkit.recon.config import FitConfig
from gafkit.recon.data import load_frames
from gafkit.recon.train import Trainer
from gafkit.trackers.sequence import load_sequence


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tracked")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    args = ap.parse_args()
    dev = resolve_device(args.device)
    cfg = build_config(FitConfig(), sets=args.sets)
    seq = load_sequence(args.tracked)
    model = load_head_model(seq.head_model, cfg.flame_model).to(dev)
    frames = load_frames(seq.images, seq.masks, seq.cameras, resolution=cfg.resolution, device=dev)
    trainer = Trainer(cfg, model, seq, frames, dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for _ in range(10):
        trainer.step()
    sync()
    start = time.perf_counter()
    for _ in range(args.steps):
        trainer.step()
    sync()
    ms = (time.perf_counter() - start) / args.steps * 1000
    result = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "ms_per_step": round(ms, 3),
              "gaussians": len(trainer.avatar), "image": list(frames.size), "steps": args.steps}
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
        with profile(activities=acts) as prof:
            for _ in range(20):
                trainer.step()
            sync()
        key = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=20))
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
