"""Photometric refinement (stage 6 of ``gafkit track``): wall time and frames/s of ``refine_photometric``.

    python benchmarks/bench_photometric.py                          # 300 synthetic frames at 512, GPU
    python benchmarks/bench_photometric.py --frames 8 --size 128 --device cpu --threads 1
    python benchmarks/bench_photometric.py --sequence OUT           # a gafkit track / synth artifact
    python benchmarks/bench_photometric.py --set steps=40 --set batch_size=64

Synthetic subject (default): an ICT identity drawn like ``gafkit synth``'s, its seeded motion
(``gafkit.synth.motion``), a procedural albedo of this script's own (skin with plane-wave variation,
hair, sclera/iris/pupil, lips, mouth; no mediapipe needed) rendered with Lambert shading at twice the
size and box-filtered, on the benchmark's device. Its true parameters are perturbed like a landmark
fit's errors (``--perturb`` scales: 1 degree, 2 mm, 0.05 on the driven expression weights) and the
landmarks are the true ones plus 1 px noise (at 512), so the landmark term runs as in tracking. The
face-vertex reprojection error against the truth is reported before and after.

``--sequence``: a tracked-sequence artifact's frames, masks, parameters and cameras; its
``landmarks.npz`` (written by ``gafkit track``) when present.

Prints one JSON object: seconds (the refinement call, frames already in memory; CUDA synchronized),
frames/s, the photometric and landmark metrics before/after, peak GPU memory. A warm-up call on two
frames (CUDA context, nvdiffrast, allocator) runs first and is not timed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gafkit.config import merge, parse_sets
from gafkit.heads import HeadParams, load_head_model
from gafkit.render.camera import Cameras
from gafkit.render.mesh import render_shaded, resolve_backend
from gafkit.synth.config import MotionConfig
from gafkit.synth.motion import ICT_CHANNELS, make_trajectory
from gafkit.trackers.fit import default_camera
from gafkit.trackers.photometric import PhotometricConfig, load_frames, refine_photometric


def procedural_albedo(head, neutral: torch.Tensor, seed: int) -> torch.Tensor:
    """Per-vertex albedo [V, 3] on the neutral mesh [V, 3] (model space), from region names only."""
    g = torch.Generator().manual_seed(seed)
    v = neutral.cpu()
    dirs = F.normalize(torch.randn(6, 3, generator=g), dim=-1)
    wavelengths = 0.02 + 0.04 * torch.rand(6, generator=g)
    waves = torch.sin(v @ (dirs / wavelengths[:, None]).T * 2 * math.pi + 6 * torch.rand(6, generator=g))
    colors = torch.tensor([0.78, 0.58, 0.47]) * (1 + 0.08 * waves[:, :3].mean(1, keepdim=True) + 0.03 * waves[:, 3:])
    regions = head.regions
    for name, rgb in (("scalp", (0.22, 0.15, 0.1)), ("neck", (0.74, 0.55, 0.45)), ("mouth", (0.45, 0.12, 0.12)),
                      ("teeth", (0.9, 0.88, 0.8)), ("eye_sockets", (0.3, 0.2, 0.18))):
        if name in regions:
            colors[regions[name].cpu()] = torch.tensor(rgb)
    # Lips: face vertices near the mouth opening (just above and below the mouth region's front).
    if "mouth" in regions and "face" in regions:
        mouth = v[regions["mouth"].cpu()]
        front = mouth[mouth[:, 2] > mouth[:, 2].quantile(0.8)].mean(0)
        face = regions["face"].cpu()
        d = (v[face] - front) / torch.tensor([0.03, 0.012, 0.03])
        lips = d.norm(dim=-1) < 1
        colors[face[lips]] = torch.tensor([0.7, 0.3, 0.3])
    for side in ("eyeball_left", "eyeball_right"):
        if side not in regions:
            continue
        idx = regions[side].cpu()
        centre = v[idx].mean(0)
        direction = F.normalize(v[idx] - centre, dim=-1)
        angle = torch.rad2deg(torch.acos(direction[:, 2].clamp(-1, 1)))  # from the forward axis (+Z)
        eye = torch.tensor([0.92, 0.9, 0.88]).expand(len(idx), 3).clone()
        eye[angle < 30] = torch.tensor([0.3, 0.45, 0.25])
        eye[angle < 12] = torch.tensor([0.03, 0.03, 0.03])
        colors[idx] = eye
    return colors.clamp(0, 1)


def synthetic(frames: int, size: int, seed: int, perturb: float, device: torch.device, backend: str):
    """Images [N, H, W, 3] uint8, masks [N, H, W] uint8, true and perturbed params, cameras, landmarks."""
    head = load_head_model("ict")
    rng = np.random.default_rng([seed, 0])
    shape = torch.from_numpy(rng.normal(0.0, 0.8, (1, head.n_shape))).float()
    with torch.no_grad():
        neutral = head(dataclasses.replace(head.zero_params(1), shape=shape))[0]
    upper = torch.cat([head.regions[k] for k in ("face", "scalp", "eyes")])
    centre = (neutral[upper].amin(0) + neutral[upper].amax(0)) / 2
    truth = make_trajectory(head, shape, frames, torch.tensor([0.0, 0.0, -1.2]) - centre, MotionConfig(), seed)
    colors = procedural_albedo(head, neutral, seed).to(device)
    cam = default_camera(size, size, 20.0)
    cams = Cameras(K=cam.K.expand(frames, 3, 3), w2c=cam.w2c.expand(frames, 4, 4), width=size, height=size)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        lmk, _ = cams.project(head.landmark_points(head(truth)))
    lmk = lmk + (size / 512) * torch.randn(lmk.shape, generator=g)
    head = head.to(device)
    images, masks = [], []
    with torch.no_grad():
        for a in range(0, frames, 16):
            b = min(frames, a + 16)
            verts = head(truth[a:b].to(device))
            rgb, cover = render_shaded(verts, head.faces, cams[a:b].scaled(2).to(device), colors=colors[None],
                                       light_dir=(-0.3, -0.4, -1.0), ambient=0.35, backend=backend)
            rgb = F.avg_pool2d(rgb.permute(0, 3, 1, 2), 2)
            alpha = F.avg_pool2d(cover[:, None].float(), 2)
            images.append(((rgb + 1 - alpha) * 255).round().clamp(0, 255).byte().permute(0, 2, 3, 1).cpu())
            masks.append((alpha[:, 0] * 255).round().byte().cpu())
    driven = [head.expression_names.index(n) for chan, _ in ICT_CHANNELS for n in chan]
    expr = truth.expr.clone()
    expr[:, driven] += perturb * 0.05 * torch.randn(frames, len(driven), generator=g)
    start = dataclasses.replace(
        truth, expr=expr.clamp(0, 1),
        rotation=truth.rotation + perturb * math.radians(1.0) * torch.randn(frames, 3, generator=g),
        translation=truth.translation + perturb * 0.002 * torch.randn(frames, 3, generator=g))
    return head, torch.cat(images), torch.cat(masks), truth, start, cams, lmk


def from_sequence(path: Path, render_size: int):
    from gafkit.trackers.sequence import load_sequence

    seq = load_sequence(path)
    head = load_head_model(seq.head_model)
    start = time.perf_counter()
    images, masks = load_frames(seq.images, seq.masks, render_size)
    load_s = time.perf_counter() - start
    lmk = None
    if (path / "landmarks.npz").is_file():
        with np.load(path / "landmarks.npz") as data:
            kept = data["landmarks"][data["valid"].astype(bool), :, :2]
        if len(kept) == len(seq):
            lmk = torch.from_numpy(kept.astype(np.float32))
    return head, images, masks, seq.params, seq.cameras, lmk, load_s


def face_px(head, cams: Cameras, a: HeadParams, b: HeadParams) -> float:
    """Mean image distance of the face vertices of ``a`` and ``b`` (crop pixels)."""
    idx = head.regions["face"]
    with torch.no_grad():
        pa = cams.project(head(a.to(head.template.device))[:, idx].cpu())[0]
        pb = cams.project(head(b.to(head.template.device))[:, idx].cpu())[0]
    return float((pa - pb).norm(dim=-1).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequence", type=Path, help="tracked-sequence artifact (default: synthetic subject)")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", type=int, default=512, help="crop size of the synthetic subject")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--perturb", type=float, default=1.0, help="scale of the synthetic fit errors")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        help="PhotometricConfig override, e.g. --set steps=40 --set backend=torch")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = merge(PhotometricConfig(enabled=True), parse_sets(args.sets))
    backend = resolve_backend(cfg.backend, device)

    truth, load_s = None, 0.0
    if args.sequence is not None:
        head, images, masks, start, cams, lmk, load_s = from_sequence(args.sequence, cfg.render_size)
    else:
        t0 = time.perf_counter()
        head, images, masks, truth, start, cams, lmk = synthetic(args.frames, args.size, args.seed, args.perturb,
                                                                 device, backend)
        print(f"synthetic subject: {args.frames} frames at {args.size} in {time.perf_counter() - t0:.1f} s", flush=True)

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    warm = dataclasses.replace(cfg, steps=1, appearance_steps=1)
    refine_photometric(head, start[:2], cams[:2], images[:2], masks[:2], None if lmk is None else lmk[:2], warm,
                       device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync()
    t0 = time.perf_counter()
    result = refine_photometric(head, start, cams, images, masks, lmk, cfg, device)
    sync()
    seconds = time.perf_counter() - t0
    n = start.batch_size
    out = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "backend": backend,
        "subject": str(args.sequence) if args.sequence else f"synthetic ICT, seed {args.seed}, perturb {args.perturb}",
        "frames": n,
        "crop_size": cams.width,
        "seconds": round(seconds, 2),
        "frames_per_s": round(n / seconds, 2),
        "frame_load_seconds": round(load_s, 2),
        "config": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "w"},
        **{k: v for k, v in result.metrics.items() if not k.startswith("per_frame")},
    }
    if truth is not None:
        out["face_reprojection_px_before"] = face_px(head, cams, start, truth)
        out["face_reprojection_px_after"] = face_px(head, cams, result.params, truth)
    if device.type == "cuda":
        out["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
