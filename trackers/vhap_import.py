"""``gafkit import vhap``: a monocular FLAME sequence exported by VHAP -> a gafkit tracked sequence.

VHAP (github.com/ShenhanQian/VHAP, ``export_as_nerf_dataset.py``) writes a NeRF-style folder::

    transforms.json                    intrinsics (top level and per frame), frames
    transforms_{train,val,test}.json   the same frames, per split
    images/TTTTT_CC.png, fg_masks/TTTTT_CC.png
    flame_param/TTTTT.npz              rotation, translation, neck_pose, jaw_pose [1,3], eyes_pose [1,6],
                                       expr [1,E], shape [S], optional static_offset / dynamic_offset [1,V,3]
    canonical_flame_param.npz          the identity (shape, static_offset) with a neutral pose

Each frame entry has ``file_path``, ``fg_mask_path``, ``flame_param_path``, ``transform_matrix``
(OpenGL camera-to-world), ``fl_x, fl_y, cx, cy, w, h``, ``timestep_index``,
``timestep_index_original`` and ``camera_index``. gafkit's own tracked sequences use the same
files, so they import too.

Two conventions differ between VHAP's FLAME and gafkit's (see :mod:`gafkit.heads.flame`):

- VHAP puts ``rotation`` into FLAME's root joint, which turns the head about the root joint of the
  *shaped* mesh (identity, expression and offsets move it); gafkit turns it about the template's
  root joint (``pivot``). The vertices agree when ``translation`` gains ``(I - R)(J0 - pivot)``;
  that needs the FLAME model, so translations are converted only when one is given
  (:func:`gafkit.heads.flame.translation_from_vhap`);
- VHAP's FLAME has 120 teeth vertices appended after FLAME's own; offset rows beyond the model's
  vertex count (FLAME's 5023 without a model) are dropped.

Everything is checked before anything is written: a problem is one :class:`InputError` naming the
file, and no output is left.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from gafkit.artifact import write_artifact
from gafkit.console import log, track
from gafkit.errors import GafkitError, InputError
from gafkit.heads.base import HeadParams
from gafkit.render.camera import Cameras
from gafkit.trackers.sequence import KIND, SPLITS, VHAP_KEYS, contiguous_splits, write_sequence

FORMAT_VERSION = 1
FLAME_VERTICES = 5023
"""Vertices of every FLAME release (2020, 2023, 2023 Open); VHAP's teeth come after them."""
COPY_AS_IS = (".png", ".jpg", ".jpeg")
# Expected trailing shape of each per-frame array (after dropping a leading batch axis of 1); None:
# any length (the coefficient counts, checked for agreement across frames and with the model).
_SHAPES = {"rotation": (3,), "translation": (3,), "neck_pose": (3,), "jaw_pose": (3,), "eyes_pose": (6,),
           "expr": (None,), "shape": (None,)}


@dataclasses.dataclass
class VhapImportConfig:
    """``gafkit import vhap`` settings."""

    flame_model: Optional[Path] = None
    """FLAME .pkl (default: $GAFKIT_FLAME_MODEL). With it the coefficient counts are checked against
    the model and translations are converted exactly to gafkit's rotation centre; without it they
    are kept as exported."""
    fps: float = 25.0
    """Frame rate for timestamps (``timestep_index_original / fps``) when the export has none (VHAP
    stores no times; gafkit's own sequences do)."""


@dataclasses.dataclass
class VhapExport:
    """A validated export in memory (N frames, time order). ``params`` are as exported (VHAP convention)."""

    root: Path
    params: HeadParams
    cameras: Cameras
    images: list[Path]
    masks: list[Path]
    frames: list[dict[str, Any]]
    """Per frame ``index`` (timestep_index_original) and ``timestamp`` (s)."""
    splits: dict[str, list[int]]
    param_files: list[Path]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise InputError(path, f"unreadable json ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("frames"), list):
        raise InputError(path, "not a transforms file (no 'frames' list)")
    return data


def _array(path: Path, data: dict[str, np.ndarray], key: str, trailing: tuple) -> np.ndarray:
    """``data[key]`` as float32 with a leading batch axis of 1 dropped, checked against ``trailing``."""
    stored = np.asarray(data[key])
    arr = stored[0] if stored.ndim == len(trailing) + 1 and stored.shape[0] == 1 else stored
    ok = arr.ndim == len(trailing) and all(t is None or t == s for t, s in zip(trailing, arr.shape))
    if not ok or not np.issubdtype(arr.dtype, np.number):
        want = ", ".join("N" if t is None else str(t) for t in trailing)
        raise InputError(path, f"{key} has shape {tuple(stored.shape)} ({stored.dtype}), expected [1, {want}] or [{want}]")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise InputError(path, f"{key} holds NaN or infinite values")
    return arr


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise InputError(path, "missing (referenced by transforms.json)")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as err:
        raise InputError(path, f"not a readable .npz file ({err.__class__.__name__}: {err})") from None


def _read_params(path: Path, canonical_path: Path, canonical: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    """One frame's parameters: VHAP keys -> float32 arrays without the batch axis."""
    data = _load_npz(path)
    missing = [k for k in VHAP_KEYS if k not in data]
    if "shape" not in data and (canonical is None or "shape" not in canonical):
        missing.append("shape (nor a canonical_flame_param.npz with one)")
    if missing:
        raise InputError(path, f"not a VHAP FLAME parameter file: missing {', '.join(missing)}")
    out = {key: _array(path, data, key, _SHAPES[key]) for key in VHAP_KEYS}
    # The identity lives in every frame file; the canonical file is the fallback for shape and offsets.
    fallback = canonical or {}
    for key, trailing in (("shape", _SHAPES["shape"]), ("static_offset", (None, 3))):
        if key in data:
            out[key] = _array(path, data, key, trailing)
        elif key in fallback:
            out[key] = _array(canonical_path, fallback, key, trailing)
    if "dynamic_offset" in data:
        out["dynamic_offset"] = _array(path, data, "dynamic_offset", (None, 3))
    if "static_offset" in out and "dynamic_offset" in out and out["static_offset"].shape != out["dynamic_offset"].shape:
        raise InputError(path, f"static_offset {out['static_offset'].shape} and dynamic_offset "
                               f"{out['dynamic_offset'].shape} have different sizes")
    return out


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.size
    except (UnidentifiedImageError, OSError) as err:
        raise InputError(path, f"not a readable image ({err.__class__.__name__})") from None


def _file(root: Path, entry: dict, key: str, i: int, transforms: Path) -> Path:
    name = entry.get(key)
    if not isinstance(name, str) or not name:
        raise InputError(transforms, f"frame {i} has no {key}")
    path = root / name
    if not path.is_file():
        raise InputError(path, f"missing (the {key} of frame {i} in transforms.json)")
    return path


def _splits(root: Path, keys: list[str]) -> dict[str, list[int]]:
    """Frame positions of each ``transforms_<split>.json``, matched by ``file_path``."""
    files = {name: root / f"transforms_{name}.json" for name in SPLITS}
    if not any(p.is_file() for p in files.values()):
        return contiguous_splits(len(keys))
    position = {k: i for i, k in enumerate(keys)}
    splits = {}
    for name, path in files.items():
        entries = _read_json(path)["frames"] if path.is_file() else []
        picked = []
        for entry in entries:
            key = entry.get("file_path") if isinstance(entry, dict) else None
            if key not in position:
                raise InputError(path, f"frame {key!r} is not in transforms.json")
            picked.append(position[key])
        splits[name] = sorted(set(picked))
    return splits


def read_vhap_export(root: Path, fps: float = 25.0) -> VhapExport:
    """Read and check a VHAP export (or any folder in its layout) without writing anything.

    Raises:
        InputError: naming the offending file: not an export, several cameras, missing or unreadable
            files, parameter files with missing keys or wrong shapes, counts that disagree.
    """
    root = Path(root)
    if not root.exists():
        raise InputError(root, "no such directory")
    if not root.is_dir():
        raise InputError(root, "not a folder (expected a VHAP export with transforms.json)")
    transforms_path = root / "transforms.json"
    if not transforms_path.is_file():
        raise InputError(root, "not a VHAP export (no transforms.json)")
    top = _read_json(transforms_path)
    entries = list(top["frames"])
    if not entries:
        raise InputError(transforms_path, "has no frames")
    if not all(isinstance(e, dict) for e in entries):
        raise InputError(transforms_path, "frames must be objects")
    if "flame_param_path" not in entries[0]:
        raise InputError(transforms_path, "frames have no flame_param_path: not a FLAME-parameter export "
                                          "(VHAP: export_as_nerf_dataset.py with --flame-mode param)")
    cameras_seen = sorted({int(e.get("camera_index", 0)) for e in entries})
    if len(cameras_seen) > 1:
        raise InputError(transforms_path, f"holds {len(cameras_seen)} cameras (camera_index "
                                          f"{', '.join(map(str, cameras_seen))}); only monocular "
                                          "exports can be imported")
    order = sorted(range(len(entries)), key=lambda i: int(entries[i].get("timestep_index", i)))
    entries = [entries[i] for i in order]
    steps = [int(e.get("timestep_index", i)) for i, e in enumerate(entries)]
    dupes = sorted({s for s in steps if steps.count(s) > 1})
    if dupes:
        raise InputError(transforms_path, f"timestep_index {dupes[0]} appears more than once")

    canonical_path = root / "canonical_flame_param.npz"
    canonical = _load_npz(canonical_path) if canonical_path.is_file() else None
    images, masks, param_files, per_frame = [], [], [], []
    for i, entry in enumerate(track(entries, "check export")):
        images.append(_file(root, entry, "file_path", i, transforms_path))
        masks.append(_file(root, entry, "fg_mask_path", i, transforms_path))
        param_files.append(_file(root, entry, "flame_param_path", i, transforms_path))
        per_frame.append(_read_params(param_files[-1], canonical_path, canonical))
    for files in (images, masks):
        names = [p.name for p in files]
        if len(set(names)) != len(names):
            raise InputError(transforms_path, f"two frames use files named {names[0]!r} alike "
                                              "(images and masks are kept by file name)")

    first = per_frame[0]
    for path, params in zip(param_files, per_frame):
        for key, value in params.items():
            if key not in first:
                raise InputError(path, f"has {key} but {param_files[0].name} has none")
            if value.shape != first[key].shape:
                raise InputError(path, f"{key} has shape {value.shape}, {param_files[0].name} has {first[key].shape}")
        absent = [k for k in first if k not in params]
        if absent:
            raise InputError(path, f"has no {absent[0]} but {param_files[0].name} has one")

    try:
        cameras = Cameras.from_nerf_frames(entries, top)
    except GafkitError as err:
        raise InputError(transforms_path, str(err).removeprefix("transforms.json: ")) from None
    for image, mask in zip(images, masks):
        for path in (image, mask):
            size = _image_size(path)
            if size != (cameras.width, cameras.height):
                raise InputError(path, f"is {size[0]}x{size[1]} but transforms.json says "
                                       f"{cameras.width}x{cameras.height}")

    stack = lambda key: torch.from_numpy(np.stack([p[key] for p in per_frame]))  # noqa: E731
    # gafkit has one offset field, applied where VHAP applies the sum of both.
    present = [stack(k) for k in ("static_offset", "dynamic_offset") if k in first]
    offsets = sum(present[1:], present[0]) if present else None
    params = HeadParams(shape=stack("shape"), expr=stack("expr"), rotation=stack("rotation"),
                        translation=stack("translation"), neck=stack("neck_pose"), jaw=stack("jaw_pose"),
                        eyes=stack("eyes_pose"), offsets=offsets)
    has_time = all(isinstance(e.get("timestamp"), (int, float)) for e in entries)
    frames = []
    for i, entry in enumerate(entries):
        index = int(entry.get("timestep_index_original", entry.get("timestep_index", i)))
        frames.append({"index": index, "timestamp": float(entry["timestamp"]) if has_time else index / fps})
    return VhapExport(root=root, params=params, cameras=cameras, images=images, masks=masks, frames=frames,
                      splits=_splits(root, [e["file_path"] for e in entries]), param_files=param_files)


def _fit_offsets(export: VhapExport, vertices: int | None) -> None:
    """Drop VHAP's teeth rows from the offsets; refuse offsets that cannot belong to the model."""
    offsets = export.params.offsets
    if offsets is None:
        return
    limit = vertices if vertices is not None else FLAME_VERTICES
    rows = offsets.shape[1]
    if rows > limit:
        log.info("offsets: keeping the first %d of %d vertices (VHAP appends its teeth after FLAME's)", limit, rows)
        export.params.offsets = offsets[:, :limit].contiguous()
    elif rows < limit and vertices is not None:
        raise InputError(export.param_files[0], f"static_offset has {rows} vertices, the FLAME model has {limit}")


def _check_model(export: VhapExport, flame_model: Path):
    from gafkit.heads.flame import FlameHead

    n_shape, n_expr = export.params.shape.shape[1], export.params.expr.shape[1]
    model = FlameHead.from_pickle(flame_model, n_shape=n_shape, n_expr=n_expr)
    if (model.n_shape, model.n_expr) != (n_shape, n_expr):
        raise InputError(export.param_files[0], f"has {n_shape} shape and {n_expr} expression coefficients, "
                                                f"but {flame_model} has {model.n_shape} and {model.n_expr}")
    return model


def _copy_image(src: Path, folder: Path, mask: bool) -> str:
    """Copy ``src`` into ``folder`` under its name, or convert it to PNG (same stem) where gafkit's
    layout needs that: images that are not PNG/JPEG, masks that are not 8-bit gray PNG (sequence
    masks are 8-bit, 255 = foreground). Returns the file name written."""
    from PIL import Image

    with Image.open(src) as img:
        keep = src.suffix.lower() == ".png" and img.mode == "L" if mask else src.suffix.lower() in COPY_AS_IS
        if keep:
            shutil.copyfile(src, folder / src.name)
            return src.name
        if mask and img.mode.startswith("I"):  # 16/32-bit masks: full scale is 65535
            img = Image.fromarray((np.asarray(img, dtype=np.float64) / 257).round().clip(0, 255).astype(np.uint8))
        converted = img.convert("L" if mask else "RGB")
        name = src.with_suffix(".png").name
        converted.save(folder / name, compress_level=3)
        return name


def import_vhap(cfg: VhapImportConfig, source: Path, out: Path, *, overwrite: bool = False) -> Path:
    """Import the VHAP export ``source`` as the tracked sequence ``out`` (head model ``flame``).

    Example::

        import_vhap(VhapImportConfig(flame_model=Path("flame2023.pkl")), Path("export/obama"), Path("obama"))
        load_sequence("obama").params.expr.shape  # [N, 100]
    """
    from gafkit.heads import flame_model_path

    source, out = Path(source), Path(out)
    if cfg.fps <= 0:
        raise GafkitError(f"fps must be positive, got {cfg.fps}")
    export = read_vhap_export(source, cfg.fps)
    model_path = flame_model_path(cfg.flame_model)
    model = _check_model(export, model_path) if model_path is not None else None
    _fit_offsets(export, model.num_vertices if model is not None else None)
    if model is not None:
        from gafkit.heads.flame import translation_from_vhap

        with torch.no_grad():
            export.params.translation = translation_from_vhap(model, export.params)
    else:
        log.warning("no FLAME model given: translations are kept in VHAP's convention (rotation about the "
                    "shaped root joint); pass --flame-model to convert them exactly")
    n = len(export.images)
    with write_artifact(out, KIND, config=cfg, inputs={"source": source}, overwrite=overwrite,
                        format_version=FORMAT_VERSION) as art:
        with art.timed("copy"):
            for d in ("images", "fg_masks"):
                (art.dir / d).mkdir()
            image_files, mask_files = [], []
            for image, mask in track(list(zip(export.images, export.masks)), "copy frames"):
                image_files.append("images/" + _copy_image(image, art.dir / "images", mask=False))
                mask_files.append("fg_masks/" + _copy_image(mask, art.dir / "fg_masks", mask=True))
        # With a model the flame_param files get VHAP's translations back; without one the params
        # still hold them, so they are written unconverted.
        write_sequence(art.dir, head_model="flame", params=export.params, cameras=export.cameras,
                       image_files=image_files, mask_files=mask_files, frames=export.frames, splits=export.splits,
                       model=model)
        art.manifest.extra = {"head_model": "flame", "imported_from": "vhap", "frames": n,
                              "flame_model_checked": model is not None,
                              "translation": "converted to gafkit's pivot" if model is not None else "as exported"}
    log.info("imported %d frames from %s", n, source)
    return out
