"""Contact sheets of synthetic subjects (``docs/img/synth_subject.png``): training frames in one row,
the novel views of one held-out frame in the next."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def contact_sheet(root: str | Path, *, count: int = 4, tile: int = 256) -> np.ndarray:
    """[2 * tile, max(count, views) * tile, 3] uint8: ``count`` training frames spread over the clip,
    then the first held-out frame from every novel camera (white where a row is shorter)."""
    root = Path(root)
    train = sorted((root / "images").glob("*.png"))
    picks = [train[round(i)] for i in np.linspace(0, len(train) - 1, min(count, len(train)))]
    novel = json.loads((root / "gt" / "novel" / "cameras.json").read_text(encoding="utf-8"))["frames"]
    first = [root / "gt" / "novel" / e["file_path"] for e in novel if e["frame"] == novel[0]["frame"]]
    width = max(len(picks), len(first))
    sheet = np.full((2 * tile, width * tile, 3), 255, dtype=np.uint8)
    for row, paths in enumerate((picks, first)):
        for col, path in enumerate(paths):
            with Image.open(path) as img:
                tile_img = img.convert("RGB").resize((tile, tile), Image.Resampling.LANCZOS)
            sheet[row * tile:(row + 1) * tile, col * tile:(col + 1) * tile] = np.asarray(tile_img)
    return sheet
