"""The prior's views at twice its size: through an upsampler vs bilinear, on held-out 512-px examples.

    python benchmarks/bench_upsampler.py DATA512 --upsampler UPS [--prior default] [--examples 16]
        [--strength 0.3] [--device cpu]

DATA512: ``gafkit prior data ... --size 512`` (its ``heldout`` split is scored). Both rows run the same
prior with the same seed (the same latents); only the last step, 256 -> 512, differs. ``generate``:
views from noise; ``refine``: the truth blurred and colour-shifted (a stand-in for an avatar's render,
:func:`gafkit.diffusion.evaluate.degrade`) noised to ``strength`` and denoised (the fit's pseudo ground
truth). Prints one JSON line per row.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from gafkit.device import resolve_device
from gafkit.diffusion.dataset import load_split
from gafkit.diffusion.evaluate import evaluate_prior
from gafkit.diffusion.pipeline import MultiViewPrior


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("--upsampler", required=True)
    ap.add_argument("--prior", default="default")
    ap.add_argument("--examples", type=int, default=16)
    ap.add_argument("--strength", type=float, default=0.3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    dev = resolve_device(args.device)
    data = load_split([args.data], "heldout")
    # Examples alternate between the held-out subjects' shards: take them evenly over the split.
    ids = torch.linspace(0, len(data["images"]) - 1, args.examples).round().long()
    data = {k: v[ids] for k, v in data.items()}
    for name in ("none", args.upsampler):
        prior = MultiViewPrior.from_pretrained(args.prior, device=dev, upsampler=name)
        start = time.perf_counter()
        m = evaluate_prior(prior, data, examples=args.examples, steps=args.steps, strength=args.strength)
        row = {"upsampler": "bilinear" if name == "none" else name, "size": int(data["images"].shape[-1]),
               **{k: round(m[k], 3) for k in ("psnr", "psnr_masked", "ssim", "refine_psnr", "refine_psnr_masked",
                                             "refine_ssim", "degraded_psnr_masked")},
               "examples": args.examples, "strength": args.strength, "seconds": round(time.perf_counter() - start, 1)}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
