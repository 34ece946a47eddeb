"""``gafkit synth``: render a ground-truth subject into a tracked-sequence artifact plus ``gt/``.

Layout (``docs/SYNTH.md``): the tracked-sequence files of :mod:`gafkit.trackers.sequence` (the
parameters there are the true ones) and ``gt/`` with held-out novel views, normal maps, the true
parameters and the appearance.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from PIL import Image
from torch import Tensor

from gafkit.artifact import write_artifact
from gafkit.console import log, track
from gafkit.errors import GafkitError
from gafkit.heads import HeadModel, HeadParams, load_head_model
from gafkit.heads.base import head_center
from gafkit.render.camera import Cameras
from gafkit.synth.appearance import load_photo, photo_colors, procedural_colors
from gafkit.synth.config import SynthConfig
from gafkit.synth.motion import make_trajectory
from gafkit.trackers.sequence import KIND, contiguous_splits, write_sequence

FORMAT_VERSION = 1
BACKGROUNDS = {"white": 1.0, "black": 0.0}
PNG = {"compress_level": 3}  # lossless; level 3 writes ~3x faster than the default 6 for ~5 % more bytes


@dataclasses.dataclass
class Subject:
    """Everything that defines a synthetic subject before rendering.

    Shapes: params [N, ...] per training frame; colors [V, 3] albedo; camera: the fixed training camera.
    """

    head: HeadModel
    params: HeadParams
    colors: Float[Tensor, "V 3"]
    camera: Cameras
    rest_center: Float[Tensor, " 3"]
    """World position the head's centre rests at (the novel cameras orbit it)."""
    appearance: dict[str, np.ndarray]
    """Arrays for ``gt/appearance.npz``."""


def _check(cfg: SynthConfig) -> None:
    if cfg.frames < 1 or cfg.size < 16 or cfg.supersample < 1 or cfg.novel.every < 1:
        raise GafkitError(f"synth: need frames >= 1, size >= 16, supersample >= 1 and novel.every >= 1 "
                          f"(got {cfg.frames}, {cfg.size}, {cfg.supersample}, {cfg.novel.every})")
    if cfg.photo is not None and cfg.appearance != "photo":
        raise GafkitError("synth: --photo is only used with --appearance photo")


def make_subject(cfg: SynthConfig, head: HeadModel | None = None) -> Subject:
    """Identity, appearance, trajectory and training camera of ``cfg`` (no rendering)."""
    _check(cfg)
    head = head or load_head_model(cfg.head, cfg.flame_model)
    appearance: dict[str, np.ndarray] = {}
    if cfg.appearance == "photo":
        image, label = load_photo(None if cfg.photo is None else str(cfg.photo))
        fit = photo_colors(head, image, label, cfg.seed)
        shape = fit.params.shape
        colors = torch.from_numpy(fit.colors)
        appearance.update({"photo_weight": fit.weight, "photo_K": fit.camera.K[0].numpy(),
                           "photo_w2c": fit.camera.w2c[0].numpy(), "photo_size": np.array(image.shape[1::-1]),
                           **{f"photo_{k}": v.numpy() for k, v in fit.params.tensors().items()}})
    else:
        rng = np.random.default_rng([cfg.seed, 0])
        shape = torch.from_numpy(rng.normal(0.0, cfg.shape_std, (1, head.n_shape))).float()
        with torch.no_grad():
            neutral = head(dataclasses.replace(head.zero_params(1), shape=shape))[0]
        colors = torch.from_numpy(procedural_colors(head, neutral, cfg.seed))
    appearance["colors"] = colors.numpy()
    appearance["source"] = np.array(cfg.appearance)

    with torch.no_grad():
        neutral = head(dataclasses.replace(head.zero_params(1), shape=shape))[0]
    # Frame the head (face, scalp, eyes; not the neck) in the middle of the image.
    center = head_center(head, neutral)
    rest_center = torch.tensor([0.0, 0.0, -cfg.distance_m])
    params = make_trajectory(head, shape, cfg.frames, rest_center - center, cfg.motion, cfg.seed)
    from gafkit.trackers.fit import default_camera

    return Subject(head=head, params=params, colors=colors, camera=default_camera(cfg.size, cfg.size, cfg.fov_deg),
                   rest_center=rest_center, appearance=appearance)


def novel_cameras(camera: Cameras, center: Float[Tensor, " 3"], distance: float, cfg: SynthConfig
                  ) -> tuple[list[str], Cameras]:
    """Cameras orbiting ``center`` at ``distance`` with the training camera's intrinsics: yaw-only views,
    then pitch-only views (yaw = pitch = 0 would be the training camera)."""
    angles = [(y, 0.0) for y in cfg.novel.yaws_deg] + [(0.0, p) for p in cfg.novel.pitches_deg]
    names = [f"yaw{y:+g}" if p == 0 else f"pitch{p:+g}" for y, p in angles]
    yaw = torch.tensor([math.radians(y) for y, _ in angles])
    pitch = torch.tensor([math.radians(p) for _, p in angles])
    offset = torch.stack([torch.sin(yaw) * torch.cos(pitch), torch.sin(pitch), torch.cos(yaw) * torch.cos(pitch)], -1)
    eye = center + distance * offset
    cams = Cameras.look_at(eye, center.expand_as(eye), focal=float(camera.K[0, 0, 0]),
                           width=camera.width, height=camera.height)
    return names, cams


def render_views(subject: Subject, verts: Float[Tensor, "C V 3"], cameras: Cameras, cfg: SynthConfig
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Colour images over the background, coverage masks and camera-space normal maps, all [C, H, W(, 3)]
    uint8. Colours are rendered ``supersample`` times larger and box-filtered; the box-filtered
    coverage is the alpha that blends with the background and the mask."""
    from gafkit.render.mesh import normals_to_rgb, render_normals, render_shaded

    faces, ss = subject.head.faces, cfg.supersample
    rgb, cover = render_shaded(verts, faces, cameras.scaled(ss) if ss > 1 else cameras,
                               colors=subject.colors[None], light_dir=cfg.light_dir, ambient=cfg.ambient,
                               backend="torch")
    rgb = rgb.permute(0, 3, 1, 2)
    alpha = cover[:, None].float()
    if ss > 1:
        rgb, alpha = F.avg_pool2d(rgb, ss), F.avg_pool2d(alpha, ss)
    image = rgb + (1 - alpha) * BACKGROUNDS[cfg.background]  # rgb is premultiplied (black background)
    normals, _ = render_normals(verts, faces, cameras, backend="torch")
    to8 = lambda x: (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()  # noqa: E731
    return to8(image.permute(0, 2, 3, 1)), to8(alpha[:, 0]), to8(normals_to_rgb(normals))


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **PNG)


def run_synth(cfg: SynthConfig, out: str | Path, *, overwrite: bool = False) -> Path:
    """Create the subject of ``cfg`` at ``out`` (a ``tracked`` artifact with ``extra.synthetic``)."""
    _check(cfg)
    if cfg.appearance == "photo" and cfg.photo is not None and not Path(cfg.photo).is_file():
        from gafkit.errors import InputError

        raise InputError(cfg.photo, "no such photo")
    head = load_head_model(cfg.head, cfg.flame_model)  # fails before OUT.partial exists
    inputs = {"photo": cfg.photo} if cfg.appearance == "photo" and cfg.photo is not None else {}
    if cfg.head == "flame":
        from gafkit.heads import flame_model_path

        inputs["flame_model"] = flame_model_path(cfg.flame_model)
    out = Path(out)
    with write_artifact(out, KIND, config=cfg, inputs=inputs, overwrite=overwrite,
                        format_version=FORMAT_VERSION) as art:
        root = art.dir
        with art.timed("subject"):
            subject = make_subject(cfg, head)
        n = cfg.frames
        cams = Cameras(K=subject.camera.K.expand(n, 3, 3).clone(), w2c=subject.camera.w2c.expand(n, 4, 4).clone(),
                       width=cfg.size, height=cfg.size)
        with art.timed("train_frames"), torch.no_grad():
            for i in track(range(n), "synth: training frames"):
                verts = head(subject.params[i])
                image, mask, normal = render_views(subject, verts, cams[i], cfg)
                _save(root / "images" / f"{i:05d}.png", image[0])
                _save(root / "fg_masks" / f"{i:05d}.png", mask[0])
                _save(root / "gt" / "normals" / f"{i:05d}.png", normal[0])
        with art.timed("novel_views"), torch.no_grad():
            views = _render_novel(subject, root / "gt" / "novel", cfg)
        files = [f"images/{i:05d}.png" for i in range(n)]
        frames = [{"index": i, "timestamp": round(i / cfg.fps, 6), "status": "ok"} for i in range(n)]
        write_sequence(root, head_model=cfg.head, params=subject.params, cameras=cams, image_files=files,
                       mask_files=[f.replace("images/", "fg_masks/") for f in files], frames=frames,
                       splits=contiguous_splits(n), model=head)
        gt_params = {k: v.numpy().astype(np.float32) for k, v in subject.params.tensors().items()}
        np.savez(root / "gt" / "params.npz", head_model=np.array(cfg.head), K=subject.camera.K[0].numpy(),
                 w2c=subject.camera.w2c[0].numpy(), **gt_params)
        np.savez(root / "gt" / "appearance.npz", **subject.appearance)
        art.manifest.extra = {"synthetic": True, "frames": n, "size": cfg.size, "head": cfg.head,
                              "appearance": cfg.appearance, "novel_views": views}
    log.info("synth: wrote %s (%d frames, %d novel views)", out, n, views)
    return out


def _render_novel(subject: Subject, folder: Path, cfg: SynthConfig) -> int:
    """Held-out renders of every ``novel.every``-th frame; returns how many were written."""
    names, cams = novel_cameras(subject.camera, subject.rest_center, cfg.distance_m, cfg)
    entries = []
    for f in track(range(0, cfg.frames, cfg.novel.every), "synth: novel views"):
        verts = subject.head(subject.params[f]).expand(len(cams), -1, -1)
        for v0 in range(0, len(cams), 2):  # two views per batch bounds the rasterizer's memory
            image, mask, normal = render_views(subject, verts[v0:v0 + 2], cams[v0:v0 + 2], cfg)
            for k in range(image.shape[0]):
                v = v0 + k
                name = f"{f:05d}_{v:02d}.png"
                _save(folder / "images" / name, image[k])
                _save(folder / "masks" / name, mask[k])
                _save(folder / "normals" / name, normal[k])
                entries.append({"frame": f, "view": v, "name": names[v], "file_path": f"images/{name}",
                                "mask_path": f"masks/{name}", "normal_path": f"normals/{name}",
                                **cams[v].to_nerf_frames()[0]})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cameras.json").write_text(json.dumps({"views": names, "frames": entries}, indent=1),
                                         encoding="utf-8")
    return len(entries)
