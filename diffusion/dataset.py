"""Reading prior-data folders (written by ``gafkit prior data ...``; layout in :mod:`.shards`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from gafkit.artifact import read_manifest
from gafkit.diffusion.shards import FORMAT_VERSION, IMAGE_KEYS, INDEX, KIND
from gafkit.errors import GafkitError, InputError


def read_index(root: str | Path) -> dict[str, Any]:
    """``index.json`` of a prior-data folder, checked against the manifest kind and format version."""
    root = Path(root)
    read_manifest(root, KIND)
    try:
        index = json.loads((root / INDEX).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(root, f"not prior data ({INDEX} is missing)") from None
    except ValueError as err:
        raise InputError(root / INDEX, f"unreadable json ({err})") from None
    if index.get("format_version") != FORMAT_VERSION:
        raise InputError(root / INDEX, f"format_version {index.get('format_version')!r}, "
                                       f"this gafkit reads {FORMAT_VERSION}")
    return index


def _split_shards(root: Path, index: dict[str, Any], split: str) -> list[dict[str, Any]]:
    shards = [s for s in index["shards"] if s["split"] == split and s["count"] > 0]
    if not shards:
        raise GafkitError(f"{root}: prior data has no {split!r} examples")
    return shards


class PriorDataset(Dataset):
    """Examples of one split of a prior-data folder, read lazily from memory-mapped shards.

    ``dataset[i]`` is a dict of float tensors in [0, 1]: ``reference`` [3, S, S], ``reference_mask``
    [1, S, S], ``images`` [V, 3, S, S], ``normals`` [V, 3, S, S], ``masks`` [V, 1, S, S], plus
    ``subject`` (int, index into ``dataset.subjects``). Safe with DataLoader workers (each opens its own
    file handles).
    """

    def __init__(self, root: str | Path, split: str = "train"):
        self.root = Path(root)
        index = read_index(self.root)
        self.size, self.views, self.subjects = int(index["size"]), int(index["views"]), index["subjects"]
        self.split = split
        self.shards = _split_shards(self.root, index, split)
        missing = [s["file"] for s in self.shards if not (self.root / s["file"]).is_file()]
        if missing:
            raise InputError(self.root / missing[0], "shard listed in index.json is missing")
        self._starts = torch.cumsum(torch.tensor([0] + [s["count"] for s in self.shards]), 0)
        self._handles: dict[int, Any] = {}

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_handles": {}}  # open files do not pickle; workers reopen them

    def _handle(self, k: int) -> Any:
        if k not in self._handles:
            from safetensors import safe_open

            self._handles[k] = safe_open(str(self.root / self.shards[k]["file"]), framework="pt")
        return self._handles[k]

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"example {i} of {len(self)}")
        i = i % len(self)
        k = int(torch.searchsorted(self._starts, torch.tensor(i), right=True)) - 1
        f, j = self._handle(k), i - int(self._starts[k])
        out: dict[str, Any] = {key: f.get_slice(key)[j:j + 1][0].float() / 255 for key in IMAGE_KEYS}
        out["subject"] = int(f.get_slice("subject")[j:j + 1][0])
        return out


def load_split(roots: list[Path], split: str, device: torch.device | str = "cpu") -> dict[str, Tensor]:
    """All examples of ``split`` in the prior-data folders ``roots``, stacked as uint8 on ``device``.

    Returns ``reference`` [N, 3, S, S], ``reference_mask`` [N, 1, S, S], ``images`` [N, V, 3, S, S],
    ``normals`` [N, V, 3, S, S], ``masks`` [N, V, 1, S, S] (uint8) and ``subject`` [N] int64, numbered
    across the folders (folder k's subjects are offset by the subject counts of folders 0..k-1).
    Folders without examples of ``split`` are skipped; none at all, or folders of different S or V,
    are errors.
    """
    from safetensors.torch import load_file

    parts: dict[str, list[Tensor]] = {k: [] for k in (*IMAGE_KEYS, "subject")}
    shape: tuple[int, int] | None = None
    offset = 0
    for root in map(Path, roots):
        index = read_index(root)
        this = (int(index["size"]), int(index["views"]))
        if shape is not None and this != shape:
            raise GafkitError(f"{root}: size/views {this} differ from the other folders' {shape}")
        shape = this
        for shard in (s for s in index["shards"] if s["split"] == split):
            path = root / shard["file"]
            if not path.is_file():
                raise InputError(path, "shard listed in index.json is missing")
            data = load_file(str(path))
            for key in IMAGE_KEYS:
                parts[key].append(data[key].to(device))
            parts["subject"].append(data["subject"].to(device) + offset)
        offset += len(index["subjects"])
    if not parts["images"]:
        raise GafkitError(f"no {split!r} examples in {', '.join(map(str, roots))}")
    return {k: torch.cat(v) for k, v in parts.items()}
