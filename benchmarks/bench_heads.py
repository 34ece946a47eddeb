"""Head-model measurements: ICT forward speed, landmark-embedding accuracy on a real photo, a figure.

    python benchmarks/bench_heads.py [--figure docs/img/ict_expressions.png]

1. ICT forward pass for a batch of 64 (random identity, expressions and gaze), median of 10 runs,
   without and with a backward pass.
2. Embedding accuracy: mediapipe's 478 landmarks on ``skimage.data.astronaut()`` (512x512); the neutral
   ICT head's embedded landmarks are fitted to them with a rotation, translation and focal length
   (the mesh is metric, so depth takes the role of scale); the mean reprojection error is reported.
3. ``--figure``: the neutral head and three expressions rendered side by side.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import torch

from gafkit.heads import load_head_model
from gafkit.heads.base import axis_angle_to_matrix


def bench_forward(head, batch: int = 64, runs: int = 10) -> dict[str, float]:
    torch.manual_seed(0)
    params = head.zero_params(batch)
    params.shape.normal_()
    params.expr.uniform_(0, 1)
    params.eyes.normal_(0, 0.1)
    times = []
    with torch.no_grad():
        head(params)
        for _ in range(runs):
            t0 = time.perf_counter()
            head(params)
            times.append(time.perf_counter() - t0)
    for t in params.tensors().values():
        t.requires_grad_(True)
    grad_times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        head(params).square().sum().backward()
        grad_times.append(time.perf_counter() - t0)
    return {"forward_s": statistics.median(times), "forward_backward_s": statistics.median(grad_times)}


def astronaut_fit(head) -> dict[str, float]:
    from skimage.data import astronaut

    from gafkit.heads.landmark_embedding import detect_landmarks

    image = astronaut()
    target = torch.from_numpy(detect_landmarks(image[None])[0]).float()  # [478, 2]
    if torch.isnan(target).any():
        raise SystemExit("mediapipe found no face in astronaut()")
    pts = head.landmark_points(head.template[None])[0].detach()
    pts = pts - pts.mean(0)
    h, w = image.shape[:2]
    # Start facing the camera (model +Y up / +Z forward -> OpenCV y down / z forward) at 0.6 m.
    aa = torch.tensor([math.pi, 0.0, 0.0], requires_grad=True)
    trans = torch.tensor([0.0, 0.0, 0.6], requires_grad=True)
    log_f = torch.tensor(math.log(1000.0), requires_grad=True)
    opt = torch.optim.LBFGS([aa, trans, log_f], lr=1, max_iter=500, line_search_fn="strong_wolfe")

    def project() -> torch.Tensor:
        cam = pts @ axis_angle_to_matrix(aa).T + trans
        return log_f.exp() * cam[:, :2] / cam[:, 2:] + torch.tensor([w / 2, h / 2])

    def closure():
        opt.zero_grad()
        loss = (project() - target).square().sum(-1).mean()
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    err = (project() - target).norm(dim=-1).detach()
    return {"mean_px": float(err.mean()), "median_px": float(err.median()), "max_px": float(err.max()),
            "focal_px": float(log_f.detach().exp()), "depth_m": float(trans.detach()[2])}


def figure(head, path: str) -> None:
    from PIL import Image

    from gafkit.heads.landmark_embedding import render_views

    settings = [{}, {"jawOpen": 0.8}, {"mouthSmile_L": 1.0, "mouthSmile_R": 1.0},
                {"eyeBlink_L": 1.0, "eyeBlink_R": 1.0, "browInnerUp_L": 1.0, "browInnerUp_R": 1.0}]
    tiles = []
    for expr in settings:
        params = head.zero_params(1)
        for name, value in expr.items():
            params.expr[0, head.expression_names.index(name)] = value
        with torch.no_grad():
            verts = head(params)[0]
        _, _, rgb = render_views(verts, head.faces, yaws_deg=(15.0,), size=512, fill=0.95)
        tiles.append((rgb[0].clamp(0, 1) * 255).round().byte().numpy()[40:472, 56:456])
    Image.fromarray(np.concatenate(tiles, axis=1)).save(path)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--figure", help="write the expression figure to this PNG")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    head = load_head_model("ict")
    print(f"threads: {torch.get_num_threads()}")
    fwd = bench_forward(head)
    print(f"ICT forward, batch 64: {fwd['forward_s'] * 1000:.0f} ms; forward+backward: "
          f"{fwd['forward_backward_s'] * 1000:.0f} ms")
    fit = astronaut_fit(head)
    print("astronaut landmark fit (478 points, 512x512): mean {mean_px:.2f} px, median {median_px:.2f} px, "
          "max {max_px:.1f} px (focal {focal_px:.0f} px, depth {depth_m:.2f} m)".format(**fit))
    if args.figure:
        figure(head, args.figure)


if __name__ == "__main__":
    main()
