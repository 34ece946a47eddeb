"""Priors side by side on the held-out examples of prior-data folders (e.g. real tracked people and
synthetic subjects), the same examples, noise and settings for every prior.

    python benchmarks/bench_prior_heldout.py --prior default --prior FT --data tracked256 --data synth256
        [--upsampler none --upsampler auto] [--examples 8] [--strength 0.3] [--device cpu]

Data at twice a prior's size compare its upsamplers (``--upsampler``, repeatable: ``none`` = bilinear,
``auto`` = the prior folder's, or an upsampler folder); the rows of one prior share their latents, only
the last step, 256 -> 512, differs. Per prior, upsampler and folder: generated views from noise and refined views (the truth blurred and
colour-shifted, noised to ``strength`` and denoised: the fit's pseudo ground truth), PSNR / masked / SSIM
against the truth (:func:`gafkit.diffusion.evaluate.evaluate_prior`). One JSON line per row.
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

KEYS = ("psnr", "psnr_masked", "ssim", "refine_psnr", "refine_psnr_masked", "refine_ssim", "degraded_psnr_masked")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prior", action="append", required=True)
    ap.add_argument("--data", action="append", required=True)
    ap.add_argument("--upsampler", action="append")
    ap.add_argument("--examples", type=int, default=8)
    ap.add_argument("--strength", type=float, default=0.3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    dev = resolve_device(args.device)
    for root in args.data:
        data = load_split([root], "heldout")
        # Spread over the split (its subjects are stored one after another).
        ids = torch.linspace(0, len(data["images"]) - 1, args.examples).round().long()
        data = {k: v[ids] for k, v in data.items()}
        for name in args.prior:
            for up in args.upsampler or ["none"]:
                prior = MultiViewPrior.from_pretrained(name, device=dev, upsampler=up)
                start = time.perf_counter()
                m = evaluate_prior(prior, data, examples=args.examples, steps=args.steps, strength=args.strength)
                row = {"prior": name, "upsampler": up, "data": root, "size": int(data["images"].shape[-1])}
                row.update({k: round(m[k], 3) for k in KEYS})
                row.update(examples=args.examples, strength=args.strength, seconds=round(time.perf_counter() - start, 1))
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
