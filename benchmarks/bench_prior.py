"""Time the prior's pseudo ground truth (the step that makes GAF's fits take 12 hours).

    python benchmarks/bench_prior.py [--prior PATH|default|random] [--device cuda] [--views 4] [--size 256]
                                     [--steps 20] [--guidance 2.0] [--repeats 10]

Prints JSON: seconds per call of ``pseudo_ground_truth`` for V views at several noise levels
(after a warm-up, synchronized), the denoiser's parameters and peak GPU memory. ``random`` builds the
default architecture untrained (same cost as a trained prior).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from gafkit.device import resolve_device
from gafkit.diffusion.pipeline import MultiViewPrior, build_prior


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prior", default="random")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    dev = resolve_device(args.device)
    if args.prior == "random":
        prior = build_prior(size=args.size, views=args.views).to(dev, torch.bfloat16 if dev.type == "cuda" else None)
    else:
        prior = MultiViewPrior.from_pretrained(args.prior, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    s, v = prior.size, args.views
    renders, normals, ref = torch.rand(1, v, 3, s, s, device=dev), torch.rand(1, v, 3, s, s, device=dev), \
        torch.rand(1, 3, s, s, device=dev)
    result = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "views": v, "size": s,
              "steps": args.steps, "guidance": args.guidance,
              "parameters": sum(p.numel() for p in prior.denoiser.parameters()), "seconds": {}}
    for strength in (1.0, 0.7, 0.5, 0.2):
        call = lambda strength=strength: prior.pseudo_ground_truth(renders, normals, ref, strength,  # noqa: E731
            num_inference_steps=args.steps, guidance_scale=args.guidance)
        call()
        sync()
        start = time.perf_counter()
        for _ in range(args.repeats):
            call()
        sync()
        result["seconds"][str(strength)] = round((time.perf_counter() - start) / args.repeats, 4)
    if dev.type == "cuda":
        result["peak_vram_mb"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
