"""The tracked-sequence artifact (kind ``tracked``): what ``gafkit track``, ``gafkit synth`` and
``gafkit import vhap`` write and what ``gafkit fit`` reads. Layout (documented in docs/TRACKING.md):

    manifest.json, config.yaml
    images/NNNNN.png            cropped frames, all the same size
    fg_masks/NNNNN.png          foreground alpha (8-bit, 255 = head, soft along the edge)
    transforms.json             NeRF/VHAP convention: intrinsics, per-frame OpenGL c2w, file paths
    transforms_{train,val,test}.json   the same, per split (GaussianAvatars reads these)
    head_params.npz             HeadParams of every frame, stacked [N, ...], plus ``head_model``
                                (gafkit's convention: the head turns about the model's ``pivot``)
    canonical_params.npz        the shared identity with neutral expression/pose
    flame_param/NNNNN.npz, canonical_flame_param.npz   (FLAME only) the same in VHAP's per-frame keys
                                and VHAP's convention (the head turns about the shaped root joint)
    frames.json                 (track) every decoded frame: original index, timestamp, status, reason
    tracking.json               (track) per-frame and summary fit metrics

Frames that failed tracking are not in ``transforms.json``; ``frames.json`` lists them with the reason.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from gafkit.artifact import read_manifest
from gafkit.errors import InputError
from gafkit.heads.base import HeadParams
from gafkit.render.camera import Cameras

if TYPE_CHECKING:
    from gafkit.heads.base import HeadModel

KIND = "tracked"
SPLITS = ("train", "val", "test")
# VHAP / GaussianAvatars per-frame FLAME parameter keys, and the HeadParams field each comes from.
VHAP_KEYS = {"rotation": "rotation", "translation": "translation", "neck_pose": "neck", "jaw_pose": "jaw",
             "eyes_pose": "eyes", "expr": "expr"}


@dataclasses.dataclass
class TrackedSequence:
    """A tracked sequence in memory. ``params`` and ``cameras`` have one entry per frame (N)."""

    root: Path
    head_model: str
    params: HeadParams
    cameras: Cameras
    images: list[Path]
    masks: list[Path]
    splits: dict[str, list[int]]
    """Split name -> frame positions (0..N-1)."""
    frames: list[dict[str, Any]]
    """Per kept frame: ``index`` (original frame index), ``timestamp`` (s)."""

    def __len__(self) -> int:
        return len(self.images)


def contiguous_splits(n: int, val_fraction: float = 0.1, test_fraction: float = 0.1) -> dict[str, list[int]]:
    """Train on the start of the clip, validate on the next part, test on the end (unseen expressions,
    as in the literature). Every split gets at least one frame when ``n >= 3``.

    >>> contiguous_splits(10)
    {'train': [0, 1, 2, 3, 4, 5, 6, 7], 'val': [8], 'test': [9]}
    """
    if n < 3:
        return {"train": list(range(n)), "val": list(range(n)), "test": list(range(n))}
    n_test = max(1, round(n * test_fraction))
    n_val = max(1, round(n * val_fraction))
    n_train = n - n_test - n_val
    return {"train": list(range(n_train)), "val": list(range(n_train, n_train + n_val)),
            "test": list(range(n_train + n_val, n))}


def write_sequence(
    root: Path,
    *,
    head_model: str,
    params: HeadParams,
    cameras: Cameras,
    image_files: Sequence[str],
    mask_files: Sequence[str],
    frames: Sequence[dict[str, Any]],
    splits: dict[str, list[int]],
    model: HeadModel | None = None,
) -> None:
    """Write the parameter and camera files of a tracked sequence into ``root`` (images and masks are
    written by the caller at ``image_files``/``mask_files``, relative to ``root``).

    ``params`` ([N, ...]) are in gafkit's convention and go to ``head_params.npz`` unchanged. For FLAME,
    ``model`` (the FLAME model of ``params``, any device) converts the translations of the VHAP-format
    files to VHAP's rotation centre (:func:`gafkit.heads.flame.translation_to_vhap`); without it they
    are written as given, which is right only when they already are VHAP's (an import without a model).
    """
    n = params.batch_size
    if not (len(cameras) == n == len(image_files) == len(mask_files) == len(frames)):
        raise ValueError("params, cameras, images, masks and frames must have one entry per frame")
    if model is not None and model.name != head_model:
        raise ValueError(f"model is {model.name!r} but the sequence is {head_model!r}")
    nerf = cameras.to_nerf_frames()
    entries = []
    for i in range(n):
        entry = {**nerf[i], "file_path": image_files[i], "fg_mask_path": mask_files[i], "timestep_index": i,
                 "timestep_index_original": int(frames[i].get("index", i)),
                 "timestamp": float(frames[i].get("timestamp", 0.0)), "camera_index": 0}
        if head_model == "flame":
            entry["flame_param_path"] = f"flame_param/{i:05d}.npz"
        entries.append(entry)
    first = {k: nerf[0][k] for k in ("fl_x", "fl_y", "cx", "cy", "w", "h")}
    _write_json(root / "transforms.json", {**first, "head_model": head_model, "frames": entries,
                                           "splits": splits})
    for name in SPLITS:
        _write_json(root / f"transforms_{name}.json",
                    {**first, "head_model": head_model, "frames": [entries[i] for i in splits[name]]})
    np.savez(root / "head_params.npz", head_model=np.array(head_model),
             **{k: v.detach().cpu().numpy().astype(np.float32) for k, v in params.tensors().items()})
    canonical = dataclasses.replace(params[0], expr=torch.zeros_like(params.expr[:1]),
                                    rotation=torch.zeros(1, 3), translation=torch.zeros(1, 3),
                                    neck=torch.zeros(1, 3), jaw=torch.zeros(1, 3), eyes=torch.zeros(1, 6))
    canonical.save_npz(root / "canonical_params.npz")
    if head_model == "flame":
        vhap = _to_vhap_translation(model, params)
        (root / "flame_param").mkdir(exist_ok=True)
        for i in range(n):
            np.savez(root / "flame_param" / f"{i:05d}.npz", **_vhap_dict(dataclasses.replace(params[i],
                                                                                         translation=vhap[i:i + 1])))
        # No rotation, so no shift: the canonical translation is the same in both conventions.
        np.savez(root / "canonical_flame_param.npz", **_vhap_dict(canonical))


def _to_vhap_translation(model: HeadModel | None, params: HeadParams) -> torch.Tensor:
    """``[N, 3]`` translations for the VHAP-format files (on the CPU), see :func:`write_sequence`."""
    if model is None:
        return params.translation.detach().cpu()
    from gafkit.heads.flame import translation_to_vhap

    with torch.no_grad():
        return translation_to_vhap(model, params.detach().to(model.pivot.device)).cpu()


def _vhap_dict(p: HeadParams) -> dict[str, np.ndarray]:
    out = {key: getattr(p, field).detach().cpu().numpy().astype(np.float32) for key, field in VHAP_KEYS.items()}
    out["shape"] = p.shape[0].detach().cpu().numpy().astype(np.float32)
    if p.offsets is not None:
        out["static_offset"] = p.offsets.detach().cpu().numpy().astype(np.float32)
    return out


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")


def load_sequence(root: str | Path, device: torch.device | str = "cpu") -> TrackedSequence:
    """Read a tracked sequence, checking that its files agree with each other."""
    root = Path(root)
    manifest = read_manifest(root, KIND)
    try:
        transforms = json.loads((root / "transforms.json").read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise InputError(root, f"incomplete tracked sequence: {Path(err.filename).name} is missing") from None
    except ValueError as err:
        raise InputError(root, f"unreadable json ({err})") from None
    entries = transforms.get("frames", [])
    if not entries:
        raise InputError(root, "tracked sequence has no usable frames")
    params = HeadParams.load_npz(root / "head_params.npz", device)
    images = [root / e["file_path"] for e in entries]
    masks = [root / e.get("fg_mask_path", "") for e in entries]
    if params.batch_size != len(entries):
        raise InputError(root, f"{len(entries)} frames in transforms.json but {params.batch_size} parameter sets")
    frames = [{"index": e.get("timestep_index_original", i), "timestamp": e.get("timestamp", 0.0)}
              for i, e in enumerate(entries)]
    missing = [p for p in images + masks if not p.is_file()]
    if missing:
        raise InputError(missing[0], f"missing ({len(missing)} image/mask files of the sequence are missing)")
    cameras = Cameras.from_nerf_frames(entries, transforms).to(device)
    splits = transforms.get("splits") or contiguous_splits(len(entries))
    head_model = str(transforms.get("head_model", manifest.config.get("head", "ict")))
    return TrackedSequence(root=root, head_model=head_model, params=params, cameras=cameras, images=images,
                           masks=masks, splits=splits, frames=frames)
