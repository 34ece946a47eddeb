"""Forward and forward+backward time of the Gaussian rasterizer, per backend.

A head-sized random cloud (SH degree 3, scales 2 mm to 2 cm, 0.6 m from a single camera that it fills)
is rendered with :func:`gafkit.recon.render.render_gaussians`; the backward pass takes an L1-style loss
on the image, as a training step would. Prints one Markdown table row per case.

Usage:
    python benchmarks/bench_gaussians.py                       # gsplat 100k @ 512 (with CUDA), torch 2k @ 128 on CPU
    python benchmarks/bench_gaussians.py --case torch:cuda:20000:256 --case gsplat:cuda:200000:512
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from gafkit.recon.render import Gaussians, render_gaussians
from gafkit.render.camera import Cameras


def head_cloud(n: int, device: torch.device, seed: int = 0) -> Gaussians:
    gen = torch.Generator().manual_seed(seed)
    direction = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=-1)
    # Mostly on an ellipsoidal shell, like Gaussians bound to a face mesh.
    radius = 1 + 0.05 * torch.randn(n, 1, generator=gen)
    means = direction * radius * torch.tensor([0.08, 0.11, 0.09])
    log_scale = torch.empty(n, 3).uniform_(math.log(0.002), math.log(0.02), generator=gen)
    return Gaussians(
        means=means,
        quats=torch.randn(n, 4, generator=gen),
        scales=log_scale.exp(),
        opacities=torch.rand(n, generator=gen) * 0.9 + 0.05,
        sh=torch.randn(n, 16, 3, generator=gen) * 0.2,
    ).to(device)


def bench(backend: str, device: torch.device, n: int, size: int, seconds: float) -> dict:
    g = head_cloud(n, device)
    leaves = [g.means, g.quats, g.scales, g.opacities, g.sh]
    for t in leaves:
        t.requires_grad_()
    cams = Cameras.look_at(torch.tensor([[0.0, 0.0, 0.6]]), torch.zeros(1, 3), fov_deg=30.0, width=size, height=size)
    cams = cams.to(device)
    target = torch.rand(1, size, size, 3, generator=torch.Generator().manual_seed(1)).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def forward():
        return render_gaussians(g, cams, bg=torch.ones(3, device=device), backend=backend)

    def step():
        out = forward()
        (out.rgb - target).abs().mean().backward()
        for t in leaves:
            t.grad = None
        return out

    def timed(fn) -> tuple[float, float, object]:
        """Wall ms and this process's CPU ms per call (the latter robust to other jobs on a shared CPU)."""
        fn()  # warm-up: allocator growth, lazy loading
        sync()
        iters, start, cpu_start = 0, time.perf_counter(), time.process_time()
        while True:
            result = fn()
            iters += 1
            sync()
            elapsed = time.perf_counter() - start
            if elapsed >= seconds and iters >= 3:
                return 1e3 * elapsed / iters, 1e3 * (time.process_time() - cpu_start) / iters, result

    with torch.no_grad():
        fwd_ms, _, out = timed(forward)
    step_ms, step_cpu_ms, _ = timed(step)
    return {
        "backend": backend,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "n": n,
        "size": size,
        "forward_ms": fwd_ms,
        "step_ms": step_ms,
        "step_cpu_ms": step_cpu_ms,
        "visible": float(out.visible.float().mean()),
        "coverage": float((out.alpha > 0.5).float().mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--case",
        action="append",
        metavar="BACKEND:DEVICE:N:SIZE",
        help="repeatable; default: gsplat:cuda:100000:512 (when CUDA is there) and torch:cpu:2000:128",
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="minimum timed duration per measurement")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cases = args.case or (["gsplat:cuda:100000:512"] if torch.cuda.is_available() else []) + ["torch:cpu:2000:128"]
    print("| backend | device | Gaussians | image | forward ms | forward+backward ms | fwd+bwd process CPU ms | visible | alpha>0.5 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for case in cases:
        backend, device, n, size = case.split(":")
        r = bench(backend, torch.device(device), int(n), int(size), args.seconds)
        print(
            f"| {r['backend']} | {r['device']} | {r['n']} | {r['size']}x{r['size']} | {r['forward_ms']:.2f} "
            f"| {r['step_ms']:.2f} | {r['step_cpu_ms']:.1f} | {r['visible']:.2f} | {r['coverage']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
