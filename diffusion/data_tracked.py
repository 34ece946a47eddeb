"""``gafkit prior data tracked``: training examples from tracked sequences (``gafkit track`` output).

Frames of one person at different head poses serve as views. Per example: an anchor frame, the
``candidates`` frames nearest to it in expression, V targets picked greedily among them (anchor first)
so that the head rotations relative to the camera are as different as possible, and a reference: a
random one of the most frontal quarter of the other frames. Every frame is cropped around the tracked
head centre with the synthetic data's framing (:func:`crop_views`), composited over white with its
foreground mask, and the tracked mesh's normal maps are rendered with the crop's camera, without the
triangles that fall outside the sequence's foreground masks (the bust below the neck cut,
``foreground_faces``).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from PIL import Image
from torch import Tensor

from gafkit.artifact import write_artifact
from gafkit.console import log, track
from gafkit.diffusion.data_config import TrackedDataConfig
from gafkit.diffusion.shards import FORMAT_VERSION, KIND, ShardWriter, normal_maps, to_uint8
from gafkit.errors import GafkitError, InputError
from gafkit.heads import HeadModel, load_head_model
from gafkit.heads.base import axis_angle_to_matrix, head_center
from gafkit.recon.data import evenly_spaced
from gafkit.render.camera import Cameras
from gafkit.render.silhouette import carve_bust


def _read(path: Path, mode: str) -> Tensor:
    """An image file as a [C, H, W] uint8 tensor in PIL ``mode`` (``RGB`` or ``L``)."""
    try:
        with Image.open(path) as img:
            array = np.asarray(img.convert(mode)).copy()
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except OSError as err:
        raise InputError(path, f"not a readable image ({err.__class__.__name__})") from None
    return torch.from_numpy(array).reshape(*array.shape[:2], -1).permute(2, 0, 1)


def read_rgba(image: Path, mask: Path | None) -> Float[Tensor, "4 H W"]:
    """An image and its mask (or full coverage) as one float tensor in [0, 1]."""
    rgb = _read(image, "RGB")
    alpha = torch.full((1, *rgb.shape[1:]), 255, dtype=torch.uint8) if mask is None else _read(mask, "L")
    if alpha.shape[1:] != rgb.shape[1:]:
        raise InputError(mask, f"mask size {list(alpha.shape[1:])} differs from its image's {list(rgb.shape[1:])}")
    return torch.cat([rgb, alpha]).float() / 255


def framing_side(focal: Float[Tensor, " C"], depth: Float[Tensor, " C"], cfg_fov_deg: float, distance_m: float,
                 scale: float) -> Float[Tensor, " C"]:
    """Crop side (pixels) that shows the head like a synthetic render: the synth camera at ``distance_m``
    with field of view ``cfg_fov_deg`` sees a square of ``2 d tan(fov / 2)`` metres at the head."""
    return scale * focal * 2 * distance_m * math.tan(math.radians(cfg_fov_deg) / 2) / depth


def crop_views(frames: Float[Tensor, "C 4 H W"], cameras: Cameras, centers: Float[Tensor, "C 3"], size: int,
               fov_deg: float, distance_m: float, scale: float = 1.0
               ) -> tuple[Float[Tensor, "C 3 S S"], Float[Tensor, "C 1 S S"], Cameras]:
    """Square crops centred on the projection of the world points ``centers`` and sized by
    :func:`framing_side`, resampled to ``size``; RGB composited over white with the alpha channel
    (outside the frame: white, mask 0). Returns images, masks and the crops' cameras."""
    uv, depth = cameras.project(centers[:, None])
    uv, depth = uv[:, 0], depth[:, 0]
    if (depth <= 0).any():
        raise GafkitError("crop_views: the head centre is behind a camera")
    fx, fy = cameras.K[:, 0, 0], cameras.K[:, 1, 1]
    side = framing_side(fx, depth, fov_deg, distance_m, scale)  # [C] in pixels (x); y scales by fy / fx
    half = torch.stack([side, side * fy / fx], -1) / 2
    lo = uv - half  # crop's top-left corner in frame pixels
    # Pre-shrink by whole factors so that bilinear resampling does not alias when the crop is large.
    k = max(1, int((side.min() / size).floor()))
    src = F.avg_pool2d(frames, k) if k > 1 else frames
    h, w = src.shape[-2:]
    t = (torch.arange(size, dtype=frames.dtype, device=frames.device) + 0.5) / size  # pixel centres in 0..1
    px = (lo[:, 0, None] + t[None] * 2 * half[:, 0, None]) / k  # [C, S] source pixel coordinates
    py = (lo[:, 1, None] + t[None] * 2 * half[:, 1, None]) / k
    grid = torch.stack([(px / w * 2 - 1)[:, None, :].expand(-1, size, -1),
                        (py / h * 2 - 1)[:, :, None].expand(-1, -1, size)], -1)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    rgb, alpha = out[:, :3], out[:, 3:]
    image = rgb * alpha + (1 - alpha)
    K = cameras.K.clone()
    K[:, 0, 0], K[:, 1, 1] = fx * size / (2 * half[:, 0]), fy * size / (2 * half[:, 1])
    K[:, 0, 2] = (cameras.K[:, 0, 2] - lo[:, 0]) * size / (2 * half[:, 0])
    K[:, 1, 2] = (cameras.K[:, 1, 2] - lo[:, 1]) * size / (2 * half[:, 1])
    return image, alpha, Cameras(K=K, w2c=cameras.w2c, width=size, height=size)


def head_centers(head: HeadModel, params) -> Float[Tensor, "N 3"]:
    """World position of each frame's head centre: the centre of the neutral head's face, scalp and eyes
    (the point synthetic cameras orbit), moved with the frame's head pose."""
    neutral = head(dataclasses.replace(head.zero_params(1), shape=params.shape[:1]))
    center = head_center(head, neutral[0]).expand(params.batch_size, 1, 3)
    return head.pose(center, params)[:, 0]


def foreground_faces(seq, head: HeadModel, ids: list[int], min_fraction: float, limit: int = 32
                     ) -> Int[Tensor, "F 3"]:
    """The triangles of ``head`` but its bust outside the foreground masks of ``seq`` (a tracked
    sequence), judged on ``limit`` evenly spaced frames of ``ids`` (:func:`gafkit.render.silhouette.carve_bust`)."""
    if min_fraction <= 0:
        return head.faces
    ids = evenly_spaced(ids, limit)
    rows = torch.tensor(ids)
    masks = torch.stack([_read(seq.masks[i], "L")[0] for i in ids])
    return head.faces[carve_bust(head, seq.params[rows], seq.cameras[rows], masks, min_fraction)]


def _view_rotations(params, cameras: Cameras) -> Float[Tensor, "N 3 3"]:
    """Head-to-camera rotation of each frame (how the camera sees the head)."""
    return cameras.w2c[:, :3, :3] @ axis_angle_to_matrix(params.rotation)


def _angle(a: Tensor, b: Tensor) -> Tensor:
    """Rotation angles between ``a`` [N, 3, 3] and ``b`` [M, 3, 3] -> [N, M]."""
    cos = ((torch.einsum("nij,mij->nm", a, b) - 1) / 2).clamp(-1, 1)
    return torch.arccos(cos)


def choose_frames(expr: Float[Tensor, "N E"], rot: Float[Tensor, "N 3 3"], views: int, candidates: int,
                  rng: np.random.Generator) -> tuple[list[int], int]:
    """V target frames (expression-matched, rotation-diverse) and a near-frontal reference frame."""
    n = expr.shape[0]
    anchor = int(rng.integers(n))
    near = torch.cdist(expr[anchor:anchor + 1], expr)[0].argsort().tolist()
    pool = [anchor] + [int(i) for i in rng.permutation(near[1:candidates + 1])]
    targets = [anchor]
    angles = _angle(rot, rot)
    while len(targets) < views:
        rest = [i for i in pool if i not in targets] or [i for i in range(n) if i not in targets]
        gap = angles[rest][:, targets].min(1).values
        targets.append(rest[int(gap.argmax())])
    # Frontal: the head's forward axis (+Z) points at the camera (-Z in OpenCV camera space).
    frontal = -rot[:, 2, 2]
    others = [i for i in range(n) if i not in targets] or list(range(n))
    order = sorted(others, key=lambda i: -float(frontal[i]))
    reference = order[int(rng.integers(max(1, len(order) // 4)))]
    return targets, reference


def _check(cfg: TrackedDataConfig, sources: list[Path]) -> None:
    if cfg.size < 16 or cfg.views < 1 or cfg.examples_per_sequence < 1 or cfg.candidates < 1:
        raise GafkitError(f"prior data tracked: need size >= 16 and views, examples per sequence and candidates "
                          f">= 1 (got {cfg.size}, {cfg.views}, {cfg.examples_per_sequence}, {cfg.candidates})")
    if not 0 <= cfg.foreground_faces <= 1:
        raise GafkitError(f"prior data tracked: foreground_faces {cfg.foreground_faces} must be in [0, 1] (0 turns it off)")
    if not 0 <= cfg.heldout <= len(sources):
        raise GafkitError(f"prior data tracked: --heldout {cfg.heldout} must be in 0..{len(sources)} (sequences)")
    if not sources:
        raise GafkitError("prior data tracked: give at least one tracked sequence")


def run_tracked_data(cfg: TrackedDataConfig, sources: list[Path], out: str | Path, *, device: str = "auto",
                     overwrite: bool = False) -> dict[str, int]:
    """Write a ``prior-data`` folder of examples from the tracked sequences ``sources``."""
    from gafkit.device import resolve_device
    from gafkit.trackers.sequence import load_sequence

    _check(cfg, sources)
    dev = resolve_device(device)
    sequences = [load_sequence(p) for p in sources]  # every input is checked before OUT.partial exists
    heads: dict[str, HeadModel] = {}
    for seq in sequences:
        if seq.head_model not in heads:
            heads[seq.head_model] = load_head_model(seq.head_model, cfg.flame_model).to(dev)
    inputs = {f"tracked_{i}": p for i, p in enumerate(sources)}
    with write_artifact(out, KIND, config=cfg, inputs=inputs, overwrite=overwrite,
                        format_version=FORMAT_VERSION) as art:
        writer = ShardWriter(art.dir, size=cfg.size, views=cfg.views, shard_size=cfg.shard_size)
        for i, seq in enumerate(sequences):
            split = "heldout" if i >= len(sequences) - cfg.heldout else "train"
            if len(seq) < cfg.views + 1:
                log.warning("%s: %d frames, fewer than views + 1 = %d; skipped", seq.root, len(seq), cfg.views + 1)
                continue
            sid = writer.add_subject(seq.root.name, "tracked", split)
            with art.timed("examples"), torch.no_grad():
                _sequence_examples(seq, heads[seq.head_model], cfg, np.random.default_rng([cfg.seed, i]),
                                   writer, sid, dev)
        counts = writer.close()
        if not sum(counts.values()):
            raise GafkitError(f"prior data tracked: no sequence has the {cfg.views + 1} frames an example needs")
        art.manifest.extra = {"examples": counts, "subjects": len(writer.subjects), "size": cfg.size,
                              "views": cfg.views}
    log.info("prior data tracked: wrote %s (%d train, %d held-out examples)", out, counts["train"],
             counts["heldout"])
    return counts


def _sequence_examples(seq, head: HeadModel, cfg: TrackedDataConfig, rng: np.random.Generator,
                       writer: ShardWriter, sid: int, dev: torch.device) -> None:
    params, cameras = seq.params.to(dev), seq.cameras.to(dev)
    if params.shape.shape[1] != head.n_shape or params.expr.shape[1] != head.n_expr:
        raise InputError(seq.root, f"head parameters do not fit the {head.name} head model")
    verts = head(params)
    centers = head_centers(head, params)
    expr = torch.cat([params.expr, params.jaw], 1)
    rot = _view_rotations(params, cameras)
    faces = foreground_faces(seq, head, list(range(len(seq))), cfg.foreground_faces)
    cache: dict[int, Tensor] = {}
    for _ in track(range(cfg.examples_per_sequence), f"prior data tracked: {seq.root.name}"):
        targets, reference = choose_frames(expr, rot, cfg.views, cfg.candidates, rng)
        idx = [*targets, reference]
        for f in idx:
            if f not in cache:
                cache[f] = read_rgba(seq.images[f], seq.masks[f]).to(dev)
        sizes = {tuple(cache[f].shape) for f in idx}
        if len(sizes) > 1:
            raise InputError(seq.root, f"frames of different sizes {sorted(sizes)}")
        sel = torch.tensor(idx, device=dev)
        image, alpha, crop = crop_views(torch.stack([cache[f] for f in idx]), cameras[sel], centers[sel], cfg.size,
                                        cfg.fov_deg, cfg.distance_m, cfg.crop_scale)
        normals = normal_maps(verts[sel], faces, crop, cull_back=cfg.foreground_faces > 0)
        writer.add(sid, pack_example(image, alpha, normals, cfg.views, cfg.size))


def pack_example(image: Tensor, alpha: Tensor, normals: Tensor, views: int, size: int) -> dict[str, Tensor]:
    """One example from V + 1 views (targets, then the reference) of images [V+1, 3, S, S], masks
    [V+1, 1, S, S] and normals [V+1, 3, S, S] in [0, 1] -> uint8 tensors with a batch of 1."""
    image, alpha, normals = to_uint8(image)[None], to_uint8(alpha)[None], to_uint8(normals)[None]
    return {"images": image[:, :views].contiguous(), "masks": alpha[:, :views].contiguous(),
            "normals": normals[:, :views].contiguous(), "reference": image[:, views].contiguous(),
            "reference_mask": alpha[:, views].contiguous()}
