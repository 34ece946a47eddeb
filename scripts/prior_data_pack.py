"""Pack a prior-data folder into one small tar of JPEG/PNG files, and unpack it back into shards.

A prior-data folder keeps raw uint8 tensors (about 2 MB per 256-px example), too large to carry to
the GPU machine (64 MiB per call, repository included). Packed, an example is about 60 KB: views,
reference and normal maps as JPEG, masks as 1-bit PNG. JPEG is lossy, so a packed-then-unpacked
folder is close to, not equal to, the original; benchmarks/RESULTS.md says where packed data was used.

    python scripts/prior_data_pack.py pack DATA OUT.tar [--split train] [--limit N] [--no-masks] [--quality 90]
    python scripts/prior_data_pack.py unpack OUT.tar DATA

``--no-masks`` drops the masks (training does not read them; evaluation does): unpacking fills them
with 255. ``--limit`` keeps the first N examples of each subject, so a held-out subset stays balanced.
"""

from __future__ import annotations

import argparse
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

KEYS = ("reference", "reference_mask", "images", "normals", "masks")


def _encode(a: np.ndarray, key: str, quality: int) -> tuple[str, bytes]:
    buf = io.BytesIO()
    if a.shape[0] == 1:  # masks: 1-bit PNG
        Image.fromarray(a[0] > 127).save(buf, "PNG", optimize=True)
        return "png", buf.getvalue()
    Image.fromarray(a.transpose(1, 2, 0)).save(buf, "JPEG", quality=quality)
    return "jpg", buf.getvalue()


def _decode(data: bytes) -> np.ndarray:
    im = Image.open(io.BytesIO(data))
    if im.mode == "1" or im.mode == "L":
        return (np.asarray(im.convert("L")) > 127).astype(np.uint8)[None] * 255
    return np.asarray(im.convert("RGB")).transpose(2, 0, 1).copy()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def pack(src: Path, out: Path, split: str, limit: int | None, masks: bool, quality: int) -> None:
    index = json.loads((src / "index.json").read_text())
    kept: dict[int, int] = {}
    n = 0
    with tarfile.open(out, "w") as tar:
        for shard in index["shards"]:
            if shard["split"] != split:
                continue
            d = load_file(str(src / shard["file"]))
            for i in range(len(d["subject"])):
                s = int(d["subject"][i])
                if limit is not None and kept.get(s, 0) >= limit:
                    continue
                kept[s] = kept.get(s, 0) + 1
                for key in KEYS:
                    if not masks and key in ("reference_mask", "masks"):
                        continue
                    x = d[key][i].numpy()
                    frames = x if x.ndim == 4 else x[None]
                    for v, f in enumerate(frames):
                        ext, data = _encode(f, key, quality)
                        _add(tar, f"{n:06d}/{key}_{v}.{ext}", data)
                _add(tar, f"{n:06d}/subject.txt", str(s).encode())
                n += 1
        meta = {"size": index["size"], "views": index["views"], "split": split, "count": n, "masks": masks,
                "subjects": index["subjects"]}
        _add(tar, "meta.json", json.dumps(meta).encode())
        _add(tar, "manifest.json", (src / "manifest.json").read_bytes())
    print(f"{out}: {n} examples, {out.stat().st_size / 2**20:.1f} MiB")


def unpack(src: Path, out: Path) -> None:
    with tarfile.open(src) as tar:
        members = {m.name: m for m in tar.getmembers()}
        meta = json.loads(tar.extractfile(members["meta.json"]).read())
        manifest = json.loads(tar.extractfile(members["manifest.json"]).read())
        s, v, n = meta["size"], meta["views"], meta["count"]
        d = {"reference": torch.empty(n, 3, s, s, dtype=torch.uint8),
             "reference_mask": torch.full((n, 1, s, s), 255, dtype=torch.uint8),
             "images": torch.empty(n, v, 3, s, s, dtype=torch.uint8),
             "normals": torch.empty(n, v, 3, s, s, dtype=torch.uint8),
             "masks": torch.full((n, v, 1, s, s), 255, dtype=torch.uint8),
             "subject": torch.empty(n, dtype=torch.int64)}
        for name, m in members.items():
            if name in ("meta.json", "manifest.json") or not m.isfile():
                continue
            i, leaf = int(name.split("/")[0]), name.split("/")[1]
            data = tar.extractfile(m).read()
            if leaf == "subject.txt":
                d["subject"][i] = int(data)
                continue
            key, view = leaf.split(".")[0].rsplit("_", 1)
            a = torch.from_numpy(_decode(data))
            if d[key].ndim == 5:
                d[key][i, int(view)] = a
            else:
                d[key][i] = a
    (out / "shards").mkdir(parents=True, exist_ok=True)
    save_file(d, str(out / "shards" / "00000.safetensors"))
    index = {"format_version": 1, "size": s, "views": v,
             "shards": [{"file": "shards/00000.safetensors", "count": n, "split": meta["split"]}],
             "subjects": meta["subjects"]}
    (out / "index.json").write_text(json.dumps(index, indent=1))
    manifest["extra"] = {**manifest.get("extra", {}), "packed": {"split": meta["split"], "count": n}}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print(f"{out}: {n} {meta['split']} examples")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("src", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--split", default="train")
    p.add_argument("--limit", type=int)
    p.add_argument("--no-masks", dest="masks", action="store_false")
    p.add_argument("--quality", type=int, default=90)
    u = sub.add_parser("unpack")
    u.add_argument("src", type=Path)
    u.add_argument("out", type=Path)
    a = ap.parse_args()
    if a.cmd == "pack":
        pack(a.src, a.out, a.split, a.limit, a.masks, a.quality)
    else:
        unpack(a.src, a.out)


if __name__ == "__main__":
    main()
