"""The prior alone on a held-out synthetic subject: generate its ground-truth novel views from one
training frame and the mesh's normal maps; score them against the truth and their multi-view
consistency (reprojection through the true mesh) against the truth's own.

    python benchmarks/bench_prior_views.py SUBJECT [--prior default] [--frames 0 10] [--steps 20]
                                           [--guidance 2.0] [--device auto]

SUBJECT is a `gafkit synth` folder (its gt/novel views, cameras and true parameters). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gafkit.device import resolve_device
from gafkit.diffusion.consistency import reprojection_agreement
from gafkit.diffusion.pipeline import MultiViewPrior
from gafkit.heads import load_head_model
from gafkit.recon.metrics import image_metrics
from gafkit.render.camera import Cameras
from gafkit.trackers.sequence import load_sequence


def _load(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB"))).float().permute(2, 0, 1) / 255


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("subject", type=Path)
    ap.add_argument("--prior", default="default")
    ap.add_argument("--frames", type=int, nargs="+", default=[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=2.0)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    dev = resolve_device(args.device)
    prior = MultiViewPrior.from_pretrained(args.prior, device=dev)
    seq = load_sequence(args.subject)
    head = load_head_model(seq.head_model)
    novel = args.subject / "gt" / "novel"
    entries = json.loads((novel / "cameras.json").read_text())["frames"]
    rows = []
    for frame in args.frames:
        views = [e for e in entries if e["frame"] == frame]
        gt = torch.stack([_load(novel / e["file_path"]) for e in views])
        normals = torch.stack([_load(novel / e["normal_path"]) for e in views])
        masks = torch.stack([_load(novel / e["mask_path"])[:1] for e in views])
        cams = Cameras.from_nerf_frames(views)
        ref = _load(seq.images[frame])
        out = prior(ref[None], normals[None], num_inference_steps=args.steps, guidance_scale=args.guidance,
                    generator=torch.Generator().manual_seed(frame))[0].float().cpu()
        with torch.no_grad():
            verts = head(seq.params[frame])[0]
        hwc = lambda x: x.permute(0, 2, 3, 1)  # noqa: E731
        rows.append({"frame": frame, "views": [e["name"] for e in views],
                     **image_metrics(hwc(out), hwc(gt), hwc(masks)),
                     "consistency_generated": reprojection_agreement(out, verts, head.faces, cams, backend="torch"),
                     "consistency_truth": reprojection_agreement(gt, verts, head.faces, cams, backend="torch")})
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("psnr", "psnr_masked", "ssim", "ssim_masked")}
    for key in ("consistency_generated", "consistency_truth"):
        mean[f"{key}_psnr"] = float(np.mean([r[key]["psnr"] for r in rows]))
    print(json.dumps({"subject": str(args.subject), "prior": args.prior, "steps": args.steps,
                      "guidance": args.guidance, "mean": mean, "frames": rows}, indent=1))


if __name__ == "__main__":
    main()
