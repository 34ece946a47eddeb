"""Writing prior-data folders: examples go into per-split shard files and ``index.json``.

Layout of a ``prior-data`` artifact (read by :mod:`gafkit.diffusion.dataset`)::

    manifest.json, config.yaml
    index.json                  format_version, size S, views V, shards (file, count, split), subjects
    shards/NNNNN.safetensors    uint8 reference [N,3,S,S], reference_mask [N,1,S,S], images [N,V,3,S,S],
                                normals [N,V,3,S,S], masks [N,V,1,S,S]; int64 subject [N]

Examples of different splits never share a shard, so a held-out subject's pixels cannot leak into
training by loading a shard.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from jaxtyping import Float, UInt8
from torch import Tensor

from gafkit.errors import GafkitError

KIND = "prior-data"
FORMAT_VERSION = 1
INDEX = "index.json"
SPLITS = ("train", "heldout")
IMAGE_KEYS = ("reference", "reference_mask", "images", "normals", "masks")


def to_uint8(x: Float[Tensor, "*shape"]) -> UInt8[Tensor, "*shape"]:
    """[0, 1] floats to uint8 (rounded, clamped), on the CPU."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).cpu()


def save_image(path: str | Path, image: Float[Tensor, "3 H W"], **pil_options) -> Path:
    """Write a [0, 1] RGB image (PNG, JPEG, ... by the suffix; ``pil_options`` go to Pillow)."""
    from PIL import Image

    Image.fromarray(to_uint8(image).permute(1, 2, 0).numpy()).save(path, **pil_options)
    return Path(path)


def example_shapes(size: int, views: int) -> dict[str, tuple[int, ...]]:
    """Per-example shape of each image key."""
    return {"reference": (3, size, size), "reference_mask": (1, size, size), "images": (views, 3, size, size),
            "normals": (views, 3, size, size), "masks": (views, 1, size, size)}


class ShardWriter:
    """Collects examples per split and writes a shard whenever ``shard_size`` of one split are ready.

    Usage::

        writer = ShardWriter(art.dir, size=256, views=4, shard_size=256)
        s = writer.add_subject("synth-00003", "synthetic", "train")
        writer.add(s, {"reference": ..., ...})   # uint8 tensors, batch dimension first (B examples)
        writer.close()                           # flushes and writes index.json
    """

    def __init__(self, root: Path, *, size: int, views: int, shard_size: int):
        if shard_size < 1:
            raise GafkitError(f"shard size must be >= 1, got {shard_size}")
        self.root, self.size, self.views, self.shard_size = Path(root), size, views, shard_size
        self.shapes = example_shapes(size, views)
        self.subjects: list[dict[str, str]] = []
        self.shards: list[dict[str, object]] = []
        self._pending: dict[str, list[dict[str, Tensor]]] = {s: [] for s in SPLITS}
        self._counts: dict[str, int] = {s: 0 for s in SPLITS}
        (self.root / "shards").mkdir(parents=True, exist_ok=True)

    def add_subject(self, name: str, source: str, split: str, **info: str) -> int:
        """Register a subject (``info``: extra string fields for index.json); returns its index (the
        ``subject`` value of its examples)."""
        if split not in SPLITS:
            raise GafkitError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
        self.subjects.append({"name": name, "source": source, "split": split, **info})
        return len(self.subjects) - 1

    def add(self, subject: int, batch: dict[str, UInt8[Tensor, "B ..."]]) -> None:
        """Add B examples of ``subject`` (uint8 CPU tensors with the shapes of :func:`example_shapes`)."""
        split = self.subjects[subject]["split"]
        n = batch["images"].shape[0]
        for key, shape in self.shapes.items():
            t = batch[key]
            if t.dtype != torch.uint8 or tuple(t.shape) != (n, *shape):
                raise AssertionError(f"{key}: expected uint8 {[n, *shape]}, got {t.dtype} {list(t.shape)}")
        item = {k: batch[k].cpu() for k in self.shapes}
        item["subject"] = torch.full((n,), subject, dtype=torch.int64)
        self._pending[split].append(item)
        self._counts[split] += n
        if self._counts[split] >= self.shard_size:
            self._flush(split, final=False)

    def _flush(self, split: str, final: bool) -> None:
        from safetensors.torch import save_file

        if not self._pending[split]:
            return
        merged = {k: torch.cat([p[k] for p in self._pending[split]]) for k in self._pending[split][0]}
        total = merged["subject"].shape[0]
        cut = total if final else total - total % self.shard_size
        for start in range(0, cut, self.shard_size):
            part = {k: v[start:start + self.shard_size].contiguous() for k, v in merged.items()}
            name = f"shards/{len(self.shards):05d}.safetensors"
            save_file(part, str(self.root / name))
            self.shards.append({"file": name, "count": int(part["subject"].shape[0]), "split": split})
        rest = {k: v[cut:] for k, v in merged.items()}
        self._pending[split] = [rest] if cut < total else []
        self._counts[split] = total - cut

    def close(self) -> dict[str, int]:
        """Write the remaining examples and ``index.json``; returns examples per split."""
        for split in SPLITS:
            self._flush(split, final=True)
        index = {"format_version": FORMAT_VERSION, "size": self.size, "views": self.views,
                 "shards": self.shards, "subjects": self.subjects}
        (self.root / INDEX).write_text(json.dumps(index, indent=1), encoding="utf-8")
        return {s: sum(int(sh["count"]) for sh in self.shards if sh["split"] == s) for s in SPLITS}


def normal_maps(vertices: Float[Tensor, "C V 3"] | Float[Tensor, "V 3"], faces: Tensor, cameras, *,
                cull_back: bool = False, backend: str = "auto") -> Float[Tensor, "C 3 H W"]:
    """The prior's normal condition, in training data and in the fit alike: camera-space normal maps
    as RGB in [0, 1] (``normals_to_rgb``; background black), channels first. One mesh [V, 3] is seen
    by every camera. ``cull_back``: the inside of a mesh carved by the foreground masks is background,
    as it is in the person's images (:func:`gafkit.render.mesh.render_normals`)."""
    from gafkit.render.mesh import normals_to_rgb, render_normals

    if vertices.dim() == 2:
        vertices = vertices.expand(len(cameras), -1, -1)
    normals, _ = render_normals(vertices, faces, cameras, cull_back=cull_back, backend=backend)
    return normals_to_rgb(normals).permute(0, 3, 1, 2)
