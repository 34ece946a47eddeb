"""Speed of ``gafkit animate``: rendering alone, and the whole command with H.264 encoding.

Without ``--avatar`` a synthetic avatar is written to a temporary folder: ``--gaussians`` Gaussians bound
to random triangles of the ICT head (random local offsets, rotations and sizes of about a triangle,
SH degree 1 like the default fit) over the motion of a synthetic subject (``gafkit synth``'s
trajectory, no images), seen by a ``--size`` x ``--size`` camera. With ``--avatar`` a fitted avatar is
used as it is (its own sequence drives it, rendered at ``--size``).

Measures (frames per second, each after a warm-up pass):

- ``render_fps``: posing (batches of ``chunk`` frames), binding and rasterizing every frame; images stay
  on the device (what a renderer can deliver).
- ``render_readback_fps``: the same plus the 8-bit copy to the host that animate makes.
- ``encode_fps``: H.264 encoding (PyAV, ``gafkit.media.write_video``) of already rendered frames.
- ``animate_fps``: ``run_animate`` end to end (load the avatar, check and plan, render, encode, rename),
  frames / wall seconds; ``animate_loop_fps`` is its render+encode loop alone.

Usage:
    python benchmarks/bench_animate.py                                    # 100k Gaussians, 512 px, 300 frames
    python benchmarks/bench_animate.py --device cpu --gaussians 2000 --size 128 --frames 24 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch


def synthetic_avatar(out: Path, gaussians: int, frames: int, size: int) -> Path:
    """An avatar artifact with random Gaussians on the ICT head and a synthetic subject's motion."""
    from gafkit.artifact import write_artifact
    from gafkit.heads import load_head_model
    from gafkit.heads.base import head_center
    from gafkit.recon.avatar import GaussianAvatar
    from gafkit.recon.evaluate import AVATAR_KIND, save_avatar_files
    from gafkit.render.camera import Cameras
    from gafkit.synth.config import MotionConfig
    from gafkit.synth.motion import make_trajectory
    from gafkit.trackers.sequence import contiguous_splits

    head = load_head_model("ict")
    distance = 1.2  # gafkit synth's default framing: the head 1.2 m in front of a 20-degree camera
    rest = torch.tensor([0.0, 0.0, -distance]) - head_center(head, head.template)
    params = make_trajectory(head, torch.zeros(1, head.n_shape), frames, rest, MotionConfig(), seed=0)
    cams = Cameras.look_at(torch.zeros(1, 3), torch.tensor([[0.0, 0.0, -1.0]]), fov_deg=20, width=size, height=size)
    gen = torch.Generator().manual_seed(0)
    n = gaussians
    tensors = {
        "xyz": torch.randn(n, 3, generator=gen) * 0.3,
        "rotation": torch.randn(n, 4, generator=gen),
        "log_scale": torch.empty(n, 3).uniform_(math.log(0.2), math.log(1.0), generator=gen),
        "opacity_logit": torch.randn(n, generator=gen),
        "sh_dc": torch.randn(n, 1, 3, generator=gen) * 0.5,
        "sh_rest": torch.randn(n, 3, 3, generator=gen) * 0.05,
        "expr_color": torch.zeros(n, 0, 3),
    }
    face_ids = torch.randint(0, head.faces.shape[0], (n,), generator=gen)
    avatar = GaussianAvatar(face_ids, head.faces, sh_degree=1, cond_dim=head.n_expr + 3, tensors=tensors)
    seq = SimpleNamespace(root=Path("synthetic"), splits=contiguous_splits(frames),
                          cameras=Cameras(K=cams.K.expand(frames, 3, 3), w2c=cams.w2c.expand(frames, 4, 4),
                                          width=size, height=size))
    with write_artifact(out, AVATAR_KIND, config={"benchmark": True}) as art:
        save_avatar_files(art.dir, avatar, "ict", params, seq, metrics={}, background="white")
    return out


def _rate(fn, frames: int, seconds: float, sync) -> float:
    """Frames per second of ``fn`` (which handles ``frames`` frames), repeated for ``seconds``."""
    fn()  # warm-up: kernels, allocator, lazy imports
    sync()
    count, start = 0, time.perf_counter()
    while True:
        fn()
        sync()
        count += frames
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return count / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--avatar", type=Path, help="a fitted avatar (default: a synthetic one)")
    ap.add_argument("--gaussians", type=int, default=100_000)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--chunk", type=int, default=16)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seconds", type=float, default=3.0, help="minimum time per measure")
    ap.add_argument("--threads", type=int, help="torch CPU threads")
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args()

    from gafkit.device import resolve_device
    from gafkit.media import write_video
    from gafkit.recon.animate import AnimateConfig, plan_animation, render_frames, run_animate, to_uint8
    from gafkit.recon.evaluate import load_avatar

    if args.threads:
        torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = args.avatar or synthetic_avatar(tmp / "avatar", args.gaussians, args.frames, args.size)
        bundle = load_avatar(path, dev)
        cfg = AnimateConfig(size=args.size, chunk=args.chunk)
        anim = plan_animation(cfg, bundle)
        frames = len(anim)

        def render():
            for _ in render_frames(bundle, anim, chunk=args.chunk):
                pass

        def render_readback():
            return [to_uint8(rgb) for rgb, _ in render_frames(bundle, anim, chunk=args.chunk)]

        result = {
            "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
            "avatar": str(args.avatar) if args.avatar else "synthetic", "gaussians": len(bundle.avatar),
            "size": [anim.cameras.width, anim.cameras.height], "frames": frames, "chunk": args.chunk,
            "render_fps": round(_rate(render, frames, args.seconds, sync), 1),
            "render_readback_fps": round(_rate(render_readback, frames, args.seconds, sync), 1),
        }
        pictures = render_readback()
        result["encode_fps"] = round(_rate(lambda: write_video(tmp / "enc.mp4", pictures, fps=25, crf=cfg.crf),
                                           frames, args.seconds, lambda: None), 1)
        run_animate(cfg, path, tmp / "warm.mp4", device=str(dev))  # warm-up
        start = time.perf_counter()
        summary = run_animate(cfg, path, tmp / "out.mp4", device=str(dev))
        result["animate_fps"] = round(frames / (time.perf_counter() - start), 1)
        result["animate_loop_fps"] = summary["frames_per_second"]
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
