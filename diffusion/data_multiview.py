"""``gafkit prior data multiview``: training examples from calibrated multi-view captures.

Layout of ``ROOT`` (NeRSemble-like; documented in docs/PRIOR.md, "Training data")::

    ROOT/<subject>/calibration.json     {"cameras": {"<cam>": {"K": 3x3, "w2c": 4x4 (OpenCV axes, metres),
                                         "width": W, "height": H}, ...}, "reference_camera": "<cam>"?}
    ROOT/<subject>/<timestep>/images/<cam>.png|.jpg
    ROOT/<subject>/<timestep>/masks/<cam>.png        optional foreground masks (else: full coverage)
    ROOT/<subject>/<timestep>/mesh.obj|mesh.ply      head mesh in world coordinates (e.g. a FLAME fit)

Each timestep gives ``examples_per_timestep`` examples: the reference camera (``reference_camera``, or
the camera whose viewing direction is closest to the mean of all cameras', i.e. the central one of a
frontal rig) and V other cameras drawn at random. Crops are centred on the mesh's bounding-box centre
with the synthetic data's framing; normal maps are rendered from the mesh.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from gafkit.artifact import write_artifact
from gafkit.console import log, track
from gafkit.diffusion.data_config import MultiviewDataConfig
from gafkit.diffusion.data_tracked import crop_views, pack_example, read_rgba
from gafkit.diffusion.shards import FORMAT_VERSION, KIND, ShardWriter, normal_maps
from gafkit.errors import GafkitError, InputError
from gafkit.render.camera import Cameras

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def read_mesh(path: Path) -> tuple[Float[Tensor, "V 3"], Int[Tensor, "F 3"]]:
    """Vertices and triangles of an ``.obj`` (polygons fan-triangulated) or ``.ply`` mesh."""
    try:
        if path.suffix == ".ply":
            from plyfile import PlyData

            ply = PlyData.read(str(path))
            v = np.stack([ply["vertex"][k] for k in ("x", "y", "z")], -1)
            polys = list(ply["face"]["vertex_indices"])
        else:
            v, polys = [], []
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.startswith("v "):
                    v.append([float(x) for x in line.split()[1:4]])
                elif line.startswith("f "):
                    polys.append([int(tok.split("/")[0]) - 1 for tok in line.split()[1:]])
        faces = [(p[0], p[k], p[k + 1]) for p in polys for k in range(1, len(p) - 1)]
        verts, tris = torch.tensor(np.asarray(v, dtype=np.float32)), torch.tensor(faces, dtype=torch.long)
    except (OSError, ValueError, KeyError, IndexError) as err:
        raise InputError(path, f"not a readable mesh ({err.__class__.__name__})") from None
    if verts.ndim != 2 or verts.shape[-1:] != (3,) or tris.ndim != 2 or len(tris) == 0 or int(tris.max()) >= len(verts):
        raise InputError(path, "mesh has no valid triangles")
    return verts, tris


def read_calibration(subject: Path) -> tuple[list[str], Cameras, list[tuple[int, int]], int]:
    """Camera names, cameras (each in its own image size; ``Cameras.width`` is a placeholder), their
    sizes and the reference camera's position in the list."""
    path = subject / "calibration.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        names = sorted(data["cameras"])
        cams = [data["cameras"][n] for n in names]
        K = torch.tensor([c["K"] for c in cams], dtype=torch.float32)
        w2c = torch.tensor([c["w2c"] for c in cams], dtype=torch.float32)
        sizes = [(int(c["width"]), int(c["height"])) for c in cams]
    except FileNotFoundError:
        raise InputError(path, "missing (each subject folder needs calibration.json)") from None
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(path, f"not a calibration file ({err.__class__.__name__}: {err})") from None
    if K.shape[1:] != (3, 3) or w2c.shape[1:] != (4, 4) or not names:
        raise InputError(path, "cameras need K 3x3 and w2c 4x4")
    cameras = Cameras(K=K, w2c=w2c, width=1, height=1)
    ref_name = data.get("reference_camera")
    if ref_name is not None:
        if ref_name not in names:
            raise InputError(path, f"reference_camera {ref_name!r} is not one of its cameras")
        ref = names.index(ref_name)
    else:
        axes = cameras.c2w[:, :3, 2]
        ref = int((axes @ torch.nn.functional.normalize(axes.mean(0), dim=0)).argmax())
    return names, cameras, sizes, ref


def _timesteps(subject: Path) -> list[Path]:
    return sorted(p for p in subject.iterdir() if p.is_dir() and (p / "images").is_dir())


def _find(folder: Path, stem: str) -> Path | None:
    return next((folder / f"{stem}{s}" for s in IMAGE_SUFFIXES if (folder / f"{stem}{s}").is_file()), None)


def scan(root: Path, views: int) -> list[tuple[Path, list[Path]]]:
    """Subjects (in name order) and their timesteps, with the layout checked before anything is written."""
    if not root.is_dir():
        raise InputError(root, "no such directory")
    subjects = sorted(p for p in root.iterdir() if p.is_dir())
    if not subjects:
        raise InputError(root, "no subject folders (expected ROOT/<subject>/calibration.json)")
    out = []
    for subject in subjects:
        names, _, _, _ = read_calibration(subject)
        if len(names) < views + 1:
            raise InputError(subject / "calibration.json", f"{len(names)} cameras, an example needs {views + 1}")
        steps = _timesteps(subject)
        if not steps:
            raise InputError(subject, "no timestep folders with images/")
        for step in steps:
            if _mesh_path(step) is None:
                raise InputError(step, "no mesh.obj or mesh.ply")
            missing = [n for n in names if _find(step / "images", n) is None]
            if missing:
                raise InputError(step / "images", f"no image of camera {missing[0]!r}")
        out.append((subject, steps))
    return out


def _mesh_path(step: Path) -> Path | None:
    return next((step / f"mesh{s}" for s in (".obj", ".ply") if (step / f"mesh{s}").is_file()), None)


def run_multiview_data(cfg: MultiviewDataConfig, root: str | Path, out: str | Path, *, device: str = "auto",
                       overwrite: bool = False) -> dict[str, int]:
    """Write a ``prior-data`` folder of examples from the multi-view captures under ``root``."""
    from gafkit.device import resolve_device

    if cfg.size < 16 or cfg.views < 1 or cfg.examples_per_timestep < 1:
        raise GafkitError(f"prior data multiview: need size >= 16, views >= 1 and examples per timestep >= 1 "
                          f"(got {cfg.size}, {cfg.views}, {cfg.examples_per_timestep})")
    dev = resolve_device(device)
    subjects = scan(Path(root), cfg.views)
    if not 0 <= cfg.heldout <= len(subjects):
        raise GafkitError(f"prior data multiview: --heldout {cfg.heldout} must be in 0..{len(subjects)} (subjects)")
    with write_artifact(out, KIND, config=cfg, inputs={"root": root}, overwrite=overwrite,
                        format_version=FORMAT_VERSION) as art:
        writer = ShardWriter(art.dir, size=cfg.size, views=cfg.views, shard_size=cfg.shard_size)
        for i, (subject, steps) in enumerate(subjects):
            split = "heldout" if i >= len(subjects) - cfg.heldout else "train"
            sid = writer.add_subject(subject.name, "multiview", split)
            names, cameras, sizes, ref = read_calibration(subject)
            rng = np.random.default_rng([cfg.seed, i])
            others = [k for k in range(len(names)) if k != ref]
            for step in track(steps, f"prior data multiview: {subject.name}"):
                with art.timed("examples"), torch.no_grad():
                    verts, faces = read_mesh(_mesh_path(step))
                    verts, faces = verts.to(dev), faces.to(dev)
                    center = (verts.amin(0) + verts.amax(0)) / 2
                    for _ in range(cfg.examples_per_timestep):
                        idx = [others[k] for k in rng.choice(len(others), cfg.views, replace=False)] + [ref]
                        writer.add(sid, _example(step, names, cameras, sizes, idx, verts, faces, center, cfg, dev))
        counts = writer.close()
        art.manifest.extra = {"examples": counts, "subjects": len(subjects), "size": cfg.size, "views": cfg.views}
    log.info("prior data multiview: wrote %s (%d train, %d held-out examples)", out, counts["train"],
             counts["heldout"])
    return counts


def _example(step: Path, names: list[str], cameras: Cameras, sizes: list[tuple[int, int]], idx: list[int],
             verts: Tensor, faces: Tensor, center: Tensor, cfg: MultiviewDataConfig, dev: torch.device
             ) -> dict[str, Tensor]:
    """One example (targets ``idx[:-1]``, reference ``idx[-1]``); cameras may differ in image size, so
    each view is cropped on its own."""
    images, masks, normals = [], [], []
    for k in idx:
        image_path = _find(step / "images", names[k])
        mask_path = _find(step / "masks", names[k]) if (step / "masks").is_dir() else None
        rgba = read_rgba(image_path, mask_path).to(dev)
        if tuple(rgba.shape[1:]) != (sizes[k][1], sizes[k][0]):
            raise InputError(image_path, f"size {rgba.shape[2]}x{rgba.shape[1]}, calibration says "
                                         f"{sizes[k][0]}x{sizes[k][1]}")
        cam = Cameras(K=cameras.K[k:k + 1], w2c=cameras.w2c[k:k + 1], width=sizes[k][0], height=sizes[k][1]).to(dev)
        image, alpha, crop = crop_views(rgba[None], cam, center[None], cfg.size, cfg.fov_deg, cfg.distance_m,
                                        cfg.crop_scale)
        images.append(image)
        masks.append(alpha)
        normals.append(normal_maps(verts[None], faces, crop))
    return pack_example(torch.cat(images), torch.cat(masks), torch.cat(normals), cfg.views, cfg.size)
