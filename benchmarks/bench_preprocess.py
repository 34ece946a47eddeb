"""Tracking preprocessing (stages 1-4) speed and face coverage on real clips.

    python benchmarks/bench_preprocess.py [--size 512] [--clips d20 d12 d14 d6 s18]

Runs ``preprocess`` on examples/d20.mp4 (per-stage frames/s) and on each clip of
../shared/data/real/ (frames with a face / all frames), each into a fresh temporary work folder.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from gafkit.trackers.config import PreprocessConfig
from gafkit.trackers.preprocess import preprocess

REPO = Path(__file__).resolve().parent.parent


def run(source: Path, size: int, stage_fps: bool) -> None:
    cfg = PreprocessConfig()
    cfg.crop.size = size
    cfg.min_valid_ratio = 0.0  # measure coverage instead of failing
    with tempfile.TemporaryDirectory() as work:
        result = preprocess(cfg, source, Path(work))
    line = f"{source.name}: face in {result.num_valid}/{result.num_frames} frames"
    if stage_fps:
        rates = ", ".join(f"{k} {result.num_frames / v:.1f}" for k, v in result.timings.items())
        line += f"; frames/s: {rates}; total {sum(result.timings.values()):.1f} s"
    print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--clips", nargs="*", default=["d20", "d12", "d14", "d6", "s18"])
    args = parser.parse_args()
    run(REPO / "examples" / "d20.mp4", args.size, stage_fps=True)
    real = REPO.parent / "shared" / "data" / "real"
    for name in args.clips:
        path = real / f"{name}.mp4"
        if path.is_file():
            run(path, args.size, stage_fps=True)
        else:
            print(f"{path}: not found, skipped")


if __name__ == "__main__":
    main()
