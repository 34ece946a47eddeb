"""The prior's autoencoder (packaged taef2): reconstruction quality, scaled-latent statistics, speed.

    python benchmarks/bench_autoencoder.py [--real /work/shared/data/real] [--per-clip 4]

1. Real face crops: ``--per-clip`` evenly spaced frames of every clip in ``--real``; the face is found
   with the tracker's mediapipe detector and a square of 1.8x the landmark box width around it is
   resized to 256x256.
2. Synthetic renders and their camera-space normal maps (``normals_to_rgb``, as ``gafkit synth``
   writes them) at 256x256, seeds 10-13 (the asset's scale was measured on seeds 0-3).
3. PSNR / SSIM (``gafkit.recon.metrics``) of ``decode(encode(x))``, mean and std of the scaled latents,
   and the median encode+decode time of one 256x256 image over 10 runs (float32, this CPU).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gafkit.diffusion.autoencoder import TAEF2_ASSET, load_default_autoencoder
from gafkit.diffusion.autoencoder_build import synthetic_renders
from gafkit.recon.metrics import psnr, ssim

SIZE = 256


def face_crops(folder: Path, per_clip: int) -> torch.Tensor:
    """[N, 3, 256, 256] face crops in [0, 1] from every ``*.mp4`` in ``folder``."""
    import av

    from gafkit.trackers.config import DetectConfig
    from gafkit.trackers.detect import FaceDetector

    crops = []
    for clip in sorted(folder.glob("*.mp4")):
        with av.open(str(clip)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        picks = np.linspace(0, len(frames) - 1, per_clip).round().astype(int)
        with FaceDetector(DetectConfig()) as detector:
            for i in picks:
                points, _, _ = detector(frames[i])
                if points is None:
                    continue
                lo, hi = points[:, :2].min(0), points[:, :2].max(0)
                centre, side = (lo + hi) / 2, 1.8 * float((hi - lo).max())
                x0, y0 = (centre - side / 2).round().astype(int)
                box = (x0, y0, x0 + round(side), y0 + round(side))
                crop = Image.fromarray(frames[i]).crop(box).resize((SIZE, SIZE), Image.Resampling.BICUBIC)
                crops.append(np.asarray(crop))
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255


@torch.no_grad()
def evaluate(ae, images: torch.Tensor) -> dict[str, float]:
    latents = torch.cat([ae.encode(images[i:i + 4]) for i in range(0, len(images), 4)])
    recon = torch.cat([ae.decode(latents[i:i + 4]) for i in range(0, len(latents), 4)])
    a, b = recon.permute(0, 2, 3, 1), images.permute(0, 2, 3, 1)
    per = [(psnr(a[i:i + 1], b[i:i + 1]), ssim(a[i:i + 1], b[i:i + 1])) for i in range(len(images))]
    return {"n": len(images), "psnr": statistics.mean(p for p, _ in per), "psnr_min": min(p for p, _ in per),
            "ssim": statistics.mean(s for _, s in per), "latent_mean": latents.mean().item(),
            "latent_std": latents.std().item()}


@torch.no_grad()
def timing(ae, runs: int = 10) -> float:
    x = torch.rand(1, 3, SIZE, SIZE)
    ae.decode(ae.encode(x))
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        ae.decode(ae.encode(x))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", type=Path, default=Path("/work/shared/data/real"))
    parser.add_argument("--per-clip", type=int, default=4)
    args = parser.parse_args()
    ae = load_default_autoencoder()
    params = sum(p.numel() for p in ae.parameters())
    size = sum(f.stat().st_size for f in TAEF2_ASSET.iterdir())
    print(f"parameters {params:,}; asset {size / 1e6:.2f} MB; scaling_factor {ae.scaling_factor}, "
          f"shift_factor {ae.shift_factor}; torch threads {torch.get_num_threads()}")
    rgb, normals = synthetic_renders(seeds=(10, 11, 12, 13), frames=(0, 20))
    for name, images in (("real face crops", face_crops(args.real, args.per_clip)), ("synthetic renders", rgb),
                         ("normal maps", normals)):
        r = evaluate(ae, images)
        print(f"{name:18s} n={r['n']:2d}  PSNR {r['psnr']:.2f} dB (min {r['psnr_min']:.2f})  SSIM {r['ssim']:.4f}"
              f"  scaled latents mean {r['latent_mean']:+.3f} std {r['latent_std']:.3f}")
    print(f"encode+decode 1x3x{SIZE}x{SIZE}: {timing(ae) * 1000:.0f} ms (median of 10)")


if __name__ == "__main__":
    main()
