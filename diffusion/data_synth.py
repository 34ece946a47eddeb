"""``gafkit prior data synth``: multi-view training examples rendered from random subjects of the head
model, and ``gafkit prior appearances``: photo-based per-vertex colours for them.

Each subject has a random identity and appearance (procedural, or a photo appearance from an
``appearances`` file); each example a random expression and gaze, a key light fixed in world space
(so views agree) and ambient level, V target cameras orbiting the head centre (yaw over the full
circle) and a near-frontal reference camera that sees the same or (with ``other_expression``
probability) another expression. Examples are rendered ``batch`` at a time in one rasterizer call.
mediapipe is only imported to build an appearances file or where the procedural colours need it.
"""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from gafkit.artifact import atomic_write_bytes, write_artifact
from gafkit.console import log, track
from gafkit.diffusion.data_config import AppearancesConfig, SynthDataConfig
from gafkit.diffusion.shards import FORMAT_VERSION, KIND, ShardWriter, normal_maps, to_uint8
from gafkit.errors import GafkitError, InputError
from gafkit.heads import HeadModel, HeadParams, load_head_model
from gafkit.heads.base import head_center
from gafkit.render.camera import Cameras

APPEARANCES_VERSION = 1
# Up-tilt of the key light above the horizon (degrees) before jitter: light from the front-upper side.
KEY_LIGHT_ELEVATION = 25.0
# Probability that an expression coefficient is active, and that a _L/_R pair moves together.
EXPR_ACTIVE, EXPR_SYMMETRIC = 0.15, 0.7
# mediapipe face-mesh lip and brow edges (mediapipe, Apache-2.0), used by procedural_colors; copied so
# that a machine without mediapipe (the GPU trainer's) can still draw procedural appearances.
LIP_EDGES = [(0, 267), (13, 312), (14, 317), (17, 314), (37, 0), (39, 37), (40, 39), (61, 146), (61, 185),
             (78, 95), (78, 191), (80, 81), (81, 82), (82, 13), (84, 17), (87, 14), (88, 178), (91, 181),
             (95, 88), (146, 91), (178, 87), (181, 84), (185, 40), (191, 80), (267, 269), (269, 270),
             (270, 409), (310, 415), (311, 310), (312, 311), (314, 405), (317, 402), (318, 324), (321, 375),
             (324, 308), (375, 291), (402, 318), (405, 321), (409, 291), (415, 308)]
BROW_EDGES = [(46, 53), (52, 65), (53, 52), (63, 105), (65, 55), (66, 107), (70, 63), (105, 66), (276, 283),
              (282, 295), (283, 282), (293, 334), (295, 285), (296, 336), (300, 293), (334, 296)]


@contextmanager
def _feature_edges_without_mediapipe() -> Iterator[None]:
    """Let :func:`procedural_colors` run where mediapipe is not installed (its edges are constants)."""
    import importlib.util

    from gafkit.synth import appearance

    if importlib.util.find_spec("mediapipe") is not None:
        yield
        return
    original = appearance._feature_edges
    appearance._feature_edges = lambda: {"lips": LIP_EDGES, "brows": BROW_EDGES}
    try:
        yield
    finally:
        appearance._feature_edges = original


# ---- photo appearances ---------------------------------------------------------------------------


@dataclasses.dataclass
class Appearances:
    """Photo-based appearances. Shapes: colors [P, V, 3] albedo in [0, 1]; shape [P, n_shape]."""

    head: str
    colors: Float[np.ndarray, "P V 3"]
    shape: Float[np.ndarray, "P S"]
    names: list[str]


def _sample_frames(path: Path, count: int) -> list[tuple[np.ndarray, str]]:
    """``count`` evenly spaced frames of a video, or the image itself, as ([H, W, 3] uint8, label)."""
    from gafkit.trackers.config import DecodeConfig
    from gafkit.trackers.video import IMAGE_EXTENSIONS, iter_frames, read_image

    if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
        return [(read_image(path, 2048)[0], str(path))]
    if path.is_dir():
        from gafkit.trackers.video import list_images

        images = list_images(path)
        if not images:
            raise InputError(path, "folder holds no images")
        return [(read_image(p, 2048)[0], str(p)) for p in images]
    if not path.is_file():
        raise InputError(path, "no such file or directory")
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            total = stream.frames or int(float(stream.duration * stream.time_base) * float(stream.average_rate))
    except (av.error.FFmpegError, IndexError, TypeError) as err:
        raise InputError(path, f"not a readable video ({err.__class__.__name__})") from None
    wanted = sorted({int(round(x)) for x in np.linspace(0, max(total - 1, 0), count + 2)[1:-1]}) or [0]
    frames = []
    for frame in iter_frames(path, DecodeConfig(max_frames=wanted[-1] + 1), 2048):
        if frame.source_index in wanted:
            frames.append((frame.image, f"{path}#{frame.source_index}"))
    if not frames:
        raise InputError(path, "no frames decoded")
    return frames


def collect_appearances(inputs: list[Path], out: str | Path, cfg: AppearancesConfig, *, overwrite: bool = False
                        ) -> Path:
    """Fit the head to faces in ``inputs`` (videos: a few evenly spaced frames; images; image folders)
    and save their photo colours and identities as an ``.npz`` for ``prior data synth --appearances``.
    Frames without a face are skipped with a warning; an input without any face is an error."""
    from gafkit.synth.appearance import photo_colors

    out = Path(out)
    if out.exists() and not overwrite:
        raise GafkitError(f"{out}: already exists (use --overwrite to replace it)")
    if cfg.frames_per_video < 1:
        raise GafkitError(f"appearances: frames per video must be >= 1, got {cfg.frames_per_video}")
    for path in inputs:
        if not Path(path).exists():
            raise InputError(path, "no such file or directory")
    head = load_head_model(cfg.head, cfg.flame_model)
    colors, shapes, names = [], [], []
    work = [(img, label) for path in inputs for img, label in _sample_frames(Path(path), cfg.frames_per_video)]
    for k, (image, label) in enumerate(track(work, "prior appearances: photos")):
        try:
            fit = photo_colors(head, image, label, cfg.seed + k)
        except GafkitError as err:
            log.warning("%s", err)
            continue
        colors.append(fit.colors.astype(np.float16))
        shapes.append(fit.params.shape[0].numpy())
        names.append(label)
    for path in inputs:
        if not any(n == str(path) or n.startswith(f"{path}#") or n.startswith(f"{path}/") for n in names):
            raise InputError(path, "mediapipe found no face in it")
    buf = io.BytesIO()
    np.savez(buf, format_version=np.array(APPEARANCES_VERSION), head=np.array(cfg.head),
             colors=np.stack(colors), shape=np.stack(shapes).astype(np.float32), names=np.array(names))
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, buf.getvalue())
    log.info("prior appearances: wrote %s (%d appearances)", out, len(names))
    return out


def load_appearances(path: str | Path, head: HeadModel) -> Appearances:
    """Read an appearances file and check that it belongs to ``head``."""
    path = Path(path)
    try:
        with np.load(path) as data:
            app = Appearances(head=str(data["head"]), colors=data["colors"].astype(np.float32),
                              shape=data["shape"].astype(np.float32), names=[str(n) for n in data["names"]])
            version = int(data["format_version"])
    except FileNotFoundError:
        raise InputError(path, "no such appearances file") from None
    except (OSError, ValueError, KeyError) as err:
        raise InputError(path, f"not an appearances file ({err.__class__.__name__})") from None
    if version != APPEARANCES_VERSION:
        raise InputError(path, f"appearances format {version}, this gafkit reads {APPEARANCES_VERSION}")
    if app.head != head.name or app.colors.shape[1:] != (head.num_vertices, 3) or app.shape.shape[1] != head.n_shape:
        raise InputError(path, f"appearances of a {app.head!r} head with {app.colors.shape[1]} vertices; "
                               f"this head is {head.name!r} with {head.num_vertices}")
    if len(app.names) == 0:
        raise InputError(path, "holds no appearances")
    return app


# ---- random subjects and examples ----------------------------------------------------------------


def random_expressions(head: HeadModel, rng: np.random.Generator, n: int, scale: float, gaze_deg: float
                       ) -> dict[str, Float[np.ndarray, "N D"]]:
    """``expr`` [n, E], ``jaw`` [n, 3], ``eyes`` [n, 6] for ``n`` random expressions.

    Models with bounded blendshape weights (ICT/ARKit): each weight active with probability
    ``EXPR_ACTIVE`` at U(0, 0.8), left/right partners usually equal. Others (FLAME): normal
    coefficients decaying with their index, and a random jaw opening. Both eyes look the same way.
    """
    e = head.n_expr
    expr, jaw = np.zeros((n, e)), np.zeros((n, 3))
    if head.expr_bounds is not None:
        expr = rng.uniform(0, 0.8, (n, e)) * (rng.random((n, e)) < EXPR_ACTIVE)
        names = {name: i for i, name in enumerate(head.expression_names)}
        for name, i in names.items():
            partner = names.get(name[:-2] + "_R") if name.endswith("_L") else None
            if partner is not None:
                same = rng.random(n) < EXPR_SYMMETRIC
                expr[same, partner] = expr[same, i]
        expr = np.clip(expr * scale, *head.expr_bounds)
    else:
        k = min(10, e)
        expr[:, :k] = rng.normal(0, 1, (n, k)) * scale / np.sqrt(np.arange(1, k + 1))
        if head.has_jaw_joint:
            jaw[:, 0] = rng.uniform(0, 0.3, n) * scale
    gaze = np.radians(rng.uniform(-gaze_deg, gaze_deg, (n, 2)))
    eye = np.stack([gaze[:, 0], gaze[:, 1], np.zeros(n)], -1)
    return {"expr": expr, "jaw": jaw, "eyes": np.concatenate([eye, eye], -1)}


def orbit_eyes(yaw_deg: np.ndarray, pitch_deg: np.ndarray, distance: float) -> Float[np.ndarray, "N 3"]:
    """Camera positions on a sphere about the origin (yaw 0, pitch 0: in front of the face, +Z)."""
    yaw, pitch = np.radians(yaw_deg), np.radians(pitch_deg)
    return distance * np.stack([np.sin(yaw) * np.cos(pitch), np.sin(pitch), np.cos(yaw) * np.cos(pitch)], -1)


@dataclasses.dataclass
class SubjectSpec:
    """A subject and its examples, all random draws made (so batching cannot change the result).

    Shapes (K examples, V views): shape [n_shape]; colors [V_mesh, 3]; targets/reference: expression
    dicts of [K, ...]; eyes [K, V + 1, 3] camera positions (targets, then the reference); light [K, 3]
    world direction toward the key light; ambient [K].
    """

    name: str
    split: str
    shape: np.ndarray
    colors: np.ndarray
    source: str
    targets: dict[str, np.ndarray]
    reference: dict[str, np.ndarray]
    eyes: np.ndarray
    light: np.ndarray
    ambient: np.ndarray


def _subject_spec(head: HeadModel, cfg: SynthDataConfig, split: str, index: int, appearances: Appearances | None
                  ) -> SubjectSpec:
    # Held-out subjects draw from their own seed stream, so no training subject can share their seed.
    rng = np.random.default_rng([cfg.seed, SPLIT_STREAM[split], index])
    k, v = cfg.examples_per_subject, cfg.views
    if appearances is not None and rng.random() < cfg.photo_fraction:
        p = int(rng.integers(len(appearances.names)))
        shape, colors, source = appearances.shape[p], appearances.colors[p], f"photo:{appearances.names[p]}"
    else:
        from gafkit.synth.appearance import procedural_colors

        shape = rng.normal(0.0, cfg.shape_std, head.n_shape).astype(np.float32)
        with torch.no_grad():
            neutral = head(dataclasses.replace(head.zero_params(1), shape=torch.from_numpy(shape)[None]))[0]
        with _feature_edges_without_mediapipe():
            colors = procedural_colors(head, neutral.cpu(), int(rng.integers(2**31)))
        source = "procedural"
    targets = random_expressions(head, rng, k, cfg.expression, cfg.gaze_deg)
    others = random_expressions(head, rng, k, cfg.expression, cfg.gaze_deg)
    other = rng.random(k) < cfg.other_expression
    reference = {key: np.where(other[:, None], others[key], targets[key]) for key in targets}
    yaw = np.concatenate([rng.uniform(-180, 180, (k, v)), rng.uniform(-1, 1, (k, 1)) * cfg.reference_yaw_deg], 1)
    pitch = np.concatenate([rng.uniform(-1, 1, (k, v)) * cfg.target_pitch_deg,
                            rng.uniform(-1, 1, (k, 1)) * cfg.reference_pitch_deg], 1)
    jitter = math.radians(cfg.light_jitter_deg)
    light = orbit_eyes(np.degrees(rng.uniform(-jitter, jitter, k)),
                       KEY_LIGHT_ELEVATION + np.degrees(rng.uniform(-jitter, jitter, k)) / 2, 1.0)
    return SubjectSpec(name=f"synth-{split}-{index:05d}", split=split, shape=shape, colors=colors, source=source,
                       targets=targets, reference=reference, eyes=orbit_eyes(yaw, pitch, cfg.distance_m),
                       light=light, ambient=rng.uniform(*cfg.ambient, k))


SPLIT_STREAM = {"train": 0, "heldout": 1}


def render_batch(head: HeadModel, params: HeadParams, colors: Float[Tensor, "C V 3"], cameras: Cameras,
                 light: Float[Tensor, "C 3"], ambient: Float[Tensor, " C"], supersample: int
                 ) -> tuple[Float[Tensor, "C 3 H W"], Float[Tensor, "C 1 H W"], Float[Tensor, "C 3 H W"]]:
    """Images over white, coverage masks and normal maps of ``params`` (one head per camera) in [0, 1].

    Lambert shading with a per-camera world-space key light ``light`` (direction toward it) and
    ``ambient`` fraction; colours and masks are rendered ``supersample`` times larger and box-filtered.
    Normal maps come from :func:`~gafkit.diffusion.shards.normal_maps` (the fit's encoding).
    """
    from gafkit.render.mesh import interpolate, rasterize_mesh, vertex_normals

    verts = head(params)
    faces = head.faces
    big = cameras.scaled(supersample) if supersample > 1 else cameras
    raster = rasterize_mesh(verts, faces, big, backend="auto")
    rot = big.w2c[:, :3, :3]
    n = F.normalize(interpolate(vertex_normals(verts, faces) @ rot.transpose(1, 2), faces, raster), dim=-1)
    light_cam = (rot @ light[:, :, None])[:, None, None, :, 0]  # [C, 1, 1, 3]
    lambert = ambient[:, None, None, None] + (1 - ambient[:, None, None, None]) * (n * light_cam).sum(-1, True).clamp(min=0)
    rgb = torch.where(raster.mask[..., None], interpolate(colors, faces, raster) * lambert, 0.0).permute(0, 3, 1, 2)
    alpha = raster.mask[:, None].float()
    if supersample > 1:
        rgb, alpha = F.avg_pool2d(rgb, supersample), F.avg_pool2d(alpha, supersample)
    image = rgb + (1 - alpha)  # rgb is premultiplied by coverage: composite over white
    return image, alpha, normal_maps(verts, faces, cameras)


def _check(cfg: SynthDataConfig) -> None:
    if cfg.size < 16 or cfg.views < 1 or cfg.subjects < 1 or cfg.examples_per_subject < 1 or cfg.batch < 1:
        raise GafkitError(f"prior data synth: need size >= 16, views, subjects, examples per subject and batch "
                          f">= 1 (got {cfg.size}, {cfg.views}, {cfg.subjects}, {cfg.examples_per_subject}, "
                          f"{cfg.batch})")
    if not 0 <= cfg.heldout <= cfg.subjects:
        raise GafkitError(f"prior data synth: --heldout {cfg.heldout} must be in 0..--subjects {cfg.subjects}")
    if not 0.0 <= cfg.photo_fraction <= 1.0 or cfg.supersample < 1:
        raise GafkitError("prior data synth: photo fraction must be in 0..1 and supersample >= 1")


def run_synth_data(cfg: SynthDataConfig, out: str | Path, *, device: str = "auto", overwrite: bool = False
                   ) -> dict[str, int]:
    """Write a ``prior-data`` folder of synthetic examples at ``out``; returns examples per split."""
    from gafkit.device import resolve_device

    _check(cfg)
    dev = resolve_device(device)
    head = load_head_model(cfg.head, cfg.flame_model)
    appearances = None if cfg.appearances is None else load_appearances(cfg.appearances, head)
    inputs = {"appearances": cfg.appearances} if cfg.appearances is not None else {}
    s, v = cfg.size, cfg.views
    with write_artifact(out, KIND, config=cfg, inputs=inputs, overwrite=overwrite,
                        format_version=FORMAT_VERSION) as art:
        writer = ShardWriter(art.dir, size=s, views=v, shard_size=cfg.shard_size)
        splits = ["train"] * (cfg.subjects - cfg.heldout) + ["heldout"] * cfg.heldout
        order = {"train": 0, "heldout": 0}
        # nn.Module.to moves in place: the subject draws keep a CPU copy of the head.
        head_dev = load_head_model(cfg.head, cfg.flame_model).to(dev)
        with torch.no_grad():
            for split in track(splits, "prior data synth: subjects"):
                with art.timed("subjects"):
                    spec = _subject_spec(head, cfg, split, order[split], appearances)
                order[split] += 1
                sid = writer.add_subject(spec.name, "synthetic", split, appearance=spec.source)
                with art.timed("render"):
                    for start in range(0, cfg.examples_per_subject, cfg.batch):
                        batch = _render_examples(head_dev, spec, range(start, min(start + cfg.batch,
                                                                                   cfg.examples_per_subject)),
                                                 cfg, dev)
                        writer.add(sid, batch)
        counts = writer.close()
        art.manifest.extra = {"examples": counts, "subjects": len(splits), "size": s, "views": v,
                              "photo_subjects": sum(sub["appearance"].startswith("photo") for sub in writer.subjects)}
    log.info("prior data synth: wrote %s (%d train, %d held-out examples)", out, counts["train"], counts["heldout"])
    return counts


def _render_examples(head: HeadModel, spec: SubjectSpec, examples: range, cfg: SynthDataConfig,
                     dev: torch.device) -> dict[str, Tensor]:
    """Render ``examples`` of ``spec`` (B examples, V + 1 cameras each) into uint8 example tensors."""
    b, v, c = len(examples), cfg.views, cfg.views + 1
    ex = np.asarray(examples)
    as_t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32, device=dev)  # noqa: E731
    # One parameter set per camera: the example's targets V times, then its reference.
    per_cam = {key: np.concatenate([np.repeat(spec.targets[key][ex][:, None], v, 1),
                                    spec.reference[key][ex][:, None]], 1).reshape(b * c, -1)
               for key in spec.targets}
    shape = as_t(spec.shape)[None].expand(b * c, -1)
    params = dataclasses.replace(head.zero_params(b * c, dev), shape=shape, expr=as_t(per_cam["expr"]),
                                 jaw=as_t(per_cam["jaw"]), eyes=as_t(per_cam["eyes"]))
    # Put the head centre (face, scalp and eyes of the neutral head) at the origin the cameras orbit.
    neutral = head(dataclasses.replace(head.zero_params(1, dev), shape=shape[:1]))[0]
    params.translation = -head_center(head, neutral).expand(b * c, 3)
    eyes = as_t(spec.eyes[ex].reshape(b * c, 3))
    cams = Cameras.look_at(eyes, torch.zeros_like(eyes), fov_deg=cfg.fov_deg, width=cfg.size, height=cfg.size)
    light = as_t(np.repeat(spec.light[ex], c, 0))
    ambient = as_t(np.repeat(spec.ambient[ex], c))
    colors = as_t(spec.colors)[None].expand(b * c, -1, -1)
    image, alpha, normals = render_batch(head, params, colors, cams, light, ambient, cfg.supersample)
    s = cfg.size
    image, alpha, normals = (to_uint8(x).view(b, c, -1, s, s) for x in (image, alpha, normals))
    return {"images": image[:, :v].contiguous(), "masks": alpha[:, :v].contiguous(),
            "normals": normals[:, :v].contiguous(), "reference": image[:, v].contiguous(),
            "reference_mask": alpha[:, v].contiguous()}
