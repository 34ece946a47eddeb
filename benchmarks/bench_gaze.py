"""How well a tracked sequence follows the detected eyes: iris landmark error and tracked vs detected gaze.

    python benchmarks/bench_gaze.py TRACKED [--params head_params.npz] [--embedding OLD_ICT.safetensors]

For every valid frame, the head model's landmark points (its current embedding) are projected with the
sequence's cameras and compared with the detections in ``landmarks.npz`` (crop pixels): the mean error
of the 8 iris ring points, of the 468 face points, and the horizontal offset of the two iris centres.
Gaze proxy per eye: the iris centre relative to the mid-point of the eye corners (33/133, 362/263), in
eye widths, for detections and for the fit; slope and correlation of fitted on detected (1 and 1 when
the tracked eyes turn as the detected ones); the same for the lid gap (blinks). Per split (train/test). ``--embedding`` takes the landmark
embedding from another ICT asset file (e.g. ``git show REV:gafkit/assets/ict_head.safetensors``), to
score a sequence tracked with that one. Prints JSON.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from gafkit.heads import load_head_model
from gafkit.heads.base import HeadParams, LandmarkEmbedding
from gafkit.trackers.fit import LANDMARK_GROUPS
from gafkit.trackers.sequence import load_sequence

IRIS = list(LANDMARK_GROUPS["iris"])  # the two rings: right eye's four points, then the left's
RIGHT_IRIS, LEFT_IRIS = IRIS[:4], IRIS[4:]
CORNERS = ((33, 133), (362, 263))
LIDS = ((159, 145), (386, 374))


def gaze(points: torch.Tensor) -> torch.Tensor:
    """[N, 478, 2] pixels -> [N, 2 eyes, 2] iris centre offset from the eye corners' mid-point, in eye widths."""
    out = []
    for iris, (a, b) in zip((RIGHT_IRIS, LEFT_IRIS), CORNERS):
        mid = (points[:, a] + points[:, b]) / 2
        width = (points[:, b] - points[:, a]).norm(dim=-1, keepdim=True)
        out.append((points[:, iris].mean(1) - mid) / width)
    return torch.stack(out, 1)


def openness(points: torch.Tensor) -> torch.Tensor:
    """[N, 478, 2] pixels -> [N, 2 eyes] lid gap (upper 159/386 to lower 145/374) in eye widths: blinks."""
    out = []
    for (up, low), (a, b) in zip(LIDS, CORNERS):
        width = (points[:, b] - points[:, a]).norm(dim=-1)
        out.append((points[:, up] - points[:, low]).norm(dim=-1) / width)
    return torch.stack(out, 1)


def fit_line(x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    x, y = x.flatten(), y.flatten()
    dx, dy = x - x.mean(), y - y.mean()
    return {"detected_std": float(x.std()), "tracked_std": float(y.std()),
            "slope": float((dx * dy).sum() / (dx * dx).sum()), "corr": float(torch.corrcoef(torch.stack([x, y]))[0, 1])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tracked")
    ap.add_argument("--params", help="head_params.npz to use instead of the sequence's (e.g. after stage 6)")
    ap.add_argument("--embedding", help="ICT asset file whose landmarks.faces/bary replace the model's")
    args = ap.parse_args()
    seq = load_sequence(args.tracked)
    model = load_head_model(seq.head_model)
    if args.embedding:
        from safetensors.torch import load_file

        arrays = load_file(args.embedding)
        model.landmarks = LandmarkEmbedding(faces=arrays["landmarks.faces"].long(), bary=arrays["landmarks.bary"])
    params = HeadParams.load_npz(args.params) if args.params else seq.params
    lmk = np.load(f"{args.tracked}/landmarks.npz")
    valid = torch.from_numpy(lmk["valid"].astype(bool))
    detected = torch.from_numpy(lmk["landmarks"][..., :2].astype(np.float32))
    uv = torch.zeros_like(detected)
    with torch.no_grad():
        for s in range(0, len(valid), 64):
            ids = torch.arange(s, min(s + 64, len(valid)))
            uv[ids] = seq.cameras[ids].project(model.landmark_points(model(params[ids])))[0]
    result = {"tracked": args.tracked, "params": args.params or "sequence", "embedding": args.embedding or "packaged"}
    for split, frames in seq.splits.items():
        ids = torch.tensor([i for i in frames if valid[i]], dtype=torch.long)
        if not len(ids):
            continue
        d, f = detected[ids], uv[ids]
        centre_dx = torch.stack([(f[:, e].mean(1) - d[:, e].mean(1))[:, 0] for e in (RIGHT_IRIS, LEFT_IRIS)], 1)
        gd, gf = gaze(d), gaze(f)
        result[split] = {
            "frames": len(ids),
            "iris_error_px": float((f[:, IRIS] - d[:, IRIS]).norm(dim=-1).mean()),
            "face_error_px": float((f[:, :468] - d[:, :468]).norm(dim=-1).mean()),
            "iris_centre_abs_dx_px": float(centre_dx.abs().mean()),
            "gaze_x": fit_line(gd[..., 0], gf[..., 0]),
            "gaze_y": fit_line(gd[..., 1], gf[..., 1]),
            "eye_openness": fit_line(openness(d), openness(f)),
        }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
