"""Speed and accuracy of the landmark-fitting stage of ``gafkit track`` (stage 5) alone.

    python benchmarks/bench_fit.py --landmarks OUT/landmarks.npz [--frames 300] [--device cpu]
    python benchmarks/bench_fit.py [--frames 300] [--size 512] [--device cuda]   # synthetic, no mediapipe

With ``--landmarks`` (a ``landmarks.npz`` of a track work folder or artifact), the valid frames are
played forward, backward, forward... up to ``--frames`` (no jump at the seams, so the temporal terms see
a real clip), at the crop size of the ``crop.json`` beside it (else ``--size``). Without it, a synthetic
ICT sequence (head sweeping +-25 deg yaw, +-10 deg pitch, smooth expressions, a random identity) is
projected by a 22 deg camera and given 1 px Gaussian noise; its report adds the error against the
noise-free landmarks and the face vertices.

One warm-up fit on 8 frames (imports, allocator, CUDA context), then ``--repeat`` timed fits. Prints one
JSON object: wall and process-CPU seconds per fit (CPU time is the robust number on a shared machine),
frames/s from the median wall time, landmark error mean/p95 (crop pixels, as in tracking.json) and mesh
jitter (mm/frame^2).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from gafkit.device import resolve_device
from gafkit.heads import load_head_model
from gafkit.heads.base import HeadModel, HeadParams
from gafkit.trackers.fit import LandmarkFitConfig, LandmarkFitResult, _project, default_camera, fit_landmarks


def ping_pong(n_src: int, n: int) -> np.ndarray:
    """Frame indices 0..n_src-1, n_src-2..1, 0.. up to ``n`` of them."""
    cycle = np.concatenate([np.arange(n_src), np.arange(n_src - 2, 0, -1)]) if n_src > 1 else np.zeros(1, int)
    return np.resize(cycle, n)


def load_landmarks(path: Path, frames: int, size: int) -> tuple[torch.Tensor, int]:
    """[frames, 478, 2] crop-pixel landmarks of the valid frames, and the crop size."""
    with np.load(path) as data:
        keep = np.nonzero(data["valid"])[0]
        lmk = data["landmarks"][keep, :, :2].astype(np.float32)
    crop = path.parent / "crop.json"
    if crop.is_file():
        size = int(json.loads(crop.read_text())["size"])
    return torch.from_numpy(lmk[ping_pong(len(lmk), frames)]), size


def synthetic_sequence(model: HeadModel, frames: int, seed: int = 0) -> HeadParams:
    """A talking-head-like sequence: smooth head sweep and expressions, one random identity."""
    g = torch.Generator().manual_seed(seed)
    p = model.zero_params(frames, "cpu")
    t = torch.arange(frames, dtype=torch.float32) / 25.0  # seconds at 25 fps
    p.rotation[:, 1] = torch.sin(2 * math.pi * t / 6.0) * math.radians(25)
    p.rotation[:, 0] = torch.sin(2 * math.pi * t / 4.0 + 1.0) * math.radians(10)
    p.shape[:] = torch.randn(1, model.n_shape, generator=g) * 0.7
    freq = torch.rand(model.n_expr, generator=g) * 0.8 + 0.2  # Hz
    phase = torch.rand(model.n_expr, generator=g) * 2 * math.pi
    amp = torch.rand(model.n_expr, generator=g) * 0.5
    p.expr[:] = amp * (0.5 + 0.5 * torch.sin(2 * math.pi * freq * t[:, None] + phase))
    if model.expr_bounds is None:
        p.expr[:] = (p.expr - amp / 2) * 2  # signed coefficients for models without bounds
    p.translation[:] = torch.tensor([0.0, 0.0, -0.9]) - model.pivot.cpu()
    return p


def jitter_mm(model: HeadModel, params: HeadParams) -> float:
    """Mean face-vertex acceleration in mm/frame^2 (tracking.json's measure, without importing the
    preprocessing stack)."""
    with torch.no_grad():
        verts = model(params)
        idx = model.regions.get("face")
        verts = verts[:, idx] if idx is not None else verts
        return float((verts[2:] - 2 * verts[1:-1] + verts[:-2]).norm(dim=-1).mean() * 1000) if len(verts) > 2 else 0.0


def errors(result: LandmarkFitResult) -> dict:
    e = result.errors_px.flatten().float().cpu()
    return {"landmark_error_mean_px": round(float(e.mean()), 4),
            "landmark_error_p95_px": round(float(e.quantile(0.95)), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--landmarks", type=Path, help="landmarks.npz (default: synthetic ICT sequence)")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", type=int, default=512, help="crop size when there is no crop.json")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, help="fit.cpu_threads (default: the fit's default)")
    parser.add_argument("--rigid-steps", type=int)
    parser.add_argument("--steps", type=int)
    args = parser.parse_args()

    device = resolve_device(args.device)
    model = load_head_model("ict").to(device)
    cfg = LandmarkFitConfig()
    for key, value in (("cpu_threads", args.threads), ("rigid_steps", args.rigid_steps), ("steps", args.steps)):
        if value is not None:
            setattr(cfg, key, value)
    truth = None
    if args.landmarks:
        landmarks, size = load_landmarks(args.landmarks, args.frames, args.size)
        source = str(args.landmarks)
    else:
        size, source = args.size, "synthetic ICT, 1 px noise"
        truth = synthetic_sequence(model, args.frames).to(device)
        focal = default_camera(size, size, fov_deg=22.0).K[0, 0, 0]
        with torch.no_grad():
            clean, _ = _project(model.landmark_points(model(truth)), focal, size / 2, size / 2)
        landmarks = (clean + torch.randn(clean.shape, generator=torch.Generator(device).manual_seed(1),
                                         device=device)).cpu()
    valid = torch.ones(len(landmarks), dtype=torch.bool)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    fit_landmarks(model, landmarks[:8], valid[:8], size, size, LandmarkFitConfig(rigid_steps=5, steps=5))
    walls, cpus = [], []
    for _ in range(args.repeat):
        sync()
        wall, cpu = time.perf_counter(), time.process_time()
        result = fit_landmarks(model, landmarks, valid, size, size, cfg)
        sync()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    wall = statistics.median(walls)
    report = {
        "source": source,
        "frames": len(landmarks),
        "size": size,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cpu_threads": cfg.cpu_threads if device.type == "cpu" else None,
        "rigid_steps": cfg.rigid_steps,
        "steps": cfg.steps,
        "fit_s": [round(w, 3) for w in walls],
        "fit_cpu_s": [round(c, 3) for c in cpus],
        "frames_per_s": round(len(landmarks) / wall, 2),
        "frames_per_s_best": round(len(landmarks) / min(walls), 2),
        **errors(result),
        "jitter_mm_per_frame2": round(jitter_mm(model, result.params), 4),
        "torch": torch.__version__,
    }
    if truth is not None:
        with torch.no_grad():
            f_fit = result.cameras.K[0, 0, 0]
            fitted, _ = _project(model.landmark_points(model(result.params)), f_fit, size / 2, size / 2)
            report["clean_landmark_error_mean_px"] = round(float((fitted - clean).norm(dim=-1).mean()), 4)
            face = model.regions["face"]
            uv_fit, _ = _project(model(result.params)[:, face], f_fit, size / 2, size / 2)
            uv_gt, _ = _project(model(truth)[:, face], focal, size / 2, size / 2)
            report["face_vertex_error_mean_px"] = round(float((uv_fit - uv_gt).norm(dim=-1).mean()), 4)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
