"""Normal maps per second from the mesh rasterizer, per backend.

Renders a procedural closed mesh (:func:`gafkit.render.primitives.bumpy_sphere`, 20 * f**2 triangles)
into a batch of cameras around it and encodes the normal maps as RGB, the way the diffusion prior
consumes them. Prints one Markdown table row per backend.

Usage:
    python benchmarks/bench_mesh.py --device cpu --threads 2          # torch backend
    python benchmarks/bench_mesh.py --device cuda --backend torch nvdiffrast
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from gafkit.render.camera import Cameras
from gafkit.render.mesh import normals_to_rgb, render_normals
from gafkit.render.primitives import bumpy_sphere


def ring_cameras(count: int, res: int, device: torch.device) -> Cameras:
    angles = torch.linspace(-math.pi / 3, math.pi / 3, count)
    eye = torch.stack([2.5 * torch.sin(angles), 0.3 * torch.ones(count), 2.5 * torch.cos(angles)], -1)
    return Cameras.look_at(eye, torch.zeros(count, 3), fov_deg=40, width=res, height=res).to(device)


def bench(backend: str, device: torch.device, frequency: int, res: int, batch: int, seconds: float) -> dict:
    verts, faces = bumpy_sphere(frequency)
    verts = verts.to(device).expand(batch, -1, -1).contiguous()
    faces = faces.to(device)
    cams = ring_cameras(batch, res, device)

    def step() -> torch.Tensor:
        normals, _ = render_normals(verts, faces, cams, backend=backend)
        return normals_to_rgb(normals)

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    step()  # warm-up: context creation, allocator growth
    sync()
    iters, start = 0, time.perf_counter()
    while True:
        step()
        iters += 1
        sync()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and iters >= 3:
            break
    return {
        "backend": backend,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "faces": faces.shape[0],
        "ms_per_batch": 1e3 * elapsed / iters,
        "maps_per_s": iters * batch / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backend", nargs="+", default=["torch"], choices=["torch", "nvdiffrast"])
    parser.add_argument("--frequency", type=int, default=50, help="icosphere frequency: 20*f^2 triangles")
    parser.add_argument("--res", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0, help="minimum timed duration per backend")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        # On a loaded machine extra intra-op threads spin against other processes and run slower.
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print("| backend | device | triangles | batch x res | ms / batch | normal maps / s |")
    print("|---|---|---|---|---|---|")
    for backend in args.backend:
        r = bench(backend, device, args.frequency, args.res, args.batch, args.seconds)
        print(
            f"| {r['backend']} | {r['device']} | {r['faces']} | {args.batch} x {args.res}^2 "
            f"| {r['ms_per_batch']:.2f} | {r['maps_per_s']:.1f} |"
        )


if __name__ == "__main__":
    main()
