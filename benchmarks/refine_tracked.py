"""Run stage 6 of ``gafkit track`` (photometric refinement) on a sequence already tracked without it.

    python benchmarks/refine_tracked.py TRACKED [--set photometric.steps=40 ...] [--device cuda]

A CPU tracks the real clips in about a minute each but stage 6 wants a GPU (it is off on a CPU by
default); the GPU machine lacks mediapipe and PyAV. So the benchmarks track here and refine there: this
loads TRACKED (its detected landmarks from ``landmarks.npz``, the valid rows in order), runs
:func:`refine_photometric` with the sequence's own ``photometric`` settings (its ``config.yaml``, when a tracking run wrote it) plus any
``--set``, and rewrites the parameter files and ``tracking.json``'s ``photometric`` section in place,
as a tracking run with ``--photometric`` would have written them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from gafkit.config import build_config, merge, read_config_file
from gafkit.errors import GafkitError, InputError
from gafkit.heads import load_head_model
from gafkit.trackers.photometric import load_frames, refine_photometric
from gafkit.trackers.sequence import load_sequence, write_sequence
from gafkit.trackers.track import TrackConfig


def refine_tracked(root: Path, overrides: list[str], device: str) -> dict:
    """Refine ``root`` in place; returns tracking.json's new ``photometric`` section."""
    seq = load_sequence(root)
    # A synthetic subject's config.yaml is a SynthConfig: only a tracking run's photometric section is taken.
    raw = read_config_file(root / "config.yaml") if (root / "config.yaml").is_file() else {}
    cfg = build_config(merge(TrackConfig(), {"photometric": raw.get("photometric", {})}), sets=overrides)
    model = load_head_model(seq.head_model, cfg.flame_model)
    if not (root / "landmarks.npz").is_file():
        raise InputError(root, "no landmarks.npz (stage 6 needs the tracker's detections)")
    with np.load(root / "landmarks.npz") as data:
        landmarks = torch.from_numpy(data["landmarks"][data["valid"].astype(bool), :, :2].astype(np.float32))
    if len(landmarks) != len(seq):
        raise InputError(root, f"{len(landmarks)} valid landmark rows but {len(seq)} tracked frames")
    start = time.perf_counter()
    images, masks = load_frames(seq.images, seq.masks, cfg.photometric.render_size)
    refined = refine_photometric(model, seq.params, seq.cameras, images, masks, landmarks, cfg.photometric,
                                 torch.device(device))
    seconds = time.perf_counter() - start
    write_sequence(root, head_model=seq.head_model, params=refined.params.to("cpu"), cameras=seq.cameras.to("cpu"),
                   image_files=[str(p.relative_to(root)) for p in seq.images],
                   mask_files=[str(p.relative_to(root)) for p in seq.masks], frames=seq.frames, splits=seq.splits,
                   model=model)
    section = {"seconds": round(seconds, 3), **refined.metrics}
    path = root / "tracking.json"
    tracking = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    tracking["photometric"] = section
    tracking.setdefault("summary", {})["photometric"] = True
    path.write_text(json.dumps(tracking, indent=1), encoding="utf-8")
    return section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tracked", type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    try:
        section = refine_tracked(args.tracked, args.overrides, args.device)
    except GafkitError as err:  # bad input: one line, no traceback, nothing rewritten
        raise SystemExit(f"error: {err}") from None
    print(json.dumps({k: v for k, v in section.items() if not k.startswith("per_frame")}, indent=1))


if __name__ == "__main__":
    main()
