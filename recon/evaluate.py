"""The avatar artifact on disk, its evaluation (``gafkit eval``) and its preview video.

Avatar layout (kind ``avatar``)::

    manifest.json, config.yaml
    avatar.json, gaussians.safetensors    the bound Gaussians (:class:`GaussianAvatar`)
    head_params.npz                       every source frame's parameters, tracking refinement applied
    canonical_params.npz                  the identity with neutral expression and pose
    cameras.npz                           the source sequence's cameras (K [N,3,3], w2c [N,4,4], width, height)
    splits.json                           train/val/test frame positions of the source sequence
    metrics.json                          held-out quality, speed and memory (see ``gafkit fit``)
    train_log.jsonl                       held-out metrics during training (when ``eval_every`` > 0)
    preview.mp4                           held-out frames: ground truth | render
    checkpoints/latest.pt                 the training state (resume, or continue with more iterations)

Evaluation renders each frame with its parameters and camera over the avatar's background and compares
it with the frame composited over the same background by its mask: PSNR/SSIM/L1 on the full frame and
inside the mask (:mod:`gafkit.recon.metrics`). For synthetic subjects (``gafkit synth``), the held-out
novel views in ``gt/novel`` are scored the same way.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from gafkit.artifact import read_manifest
from gafkit.errors import InputError
from gafkit.heads import load_head_model
from gafkit.heads.base import HeadModel, HeadParams
from gafkit.recon.avatar import GaussianAvatar, render_avatar, render_sequence
from gafkit.recon.data import FrameSet, load_frames
from gafkit.recon.metrics import frame_metrics, mean_metrics
from gafkit.render.camera import Cameras

AVATAR_KIND = "avatar"
BACKGROUNDS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0)}


def _to_uint8(x: Tensor) -> np.ndarray:
    return (x.clamp(0, 1) * 255 + 0.5).byte().cpu().numpy()


@torch.no_grad()
def evaluate_frames(avatar: GaussianAvatar, model: HeadModel, params: HeadParams, frames: FrameSet, ids: Sequence[int],
                    bg: Float[Tensor, " 3"], backend: str = "auto", frame_of: Sequence[int] | None = None) -> dict[str, float]:
    """Mean per-frame metrics over ``frames[ids]``; frame ``ids[j]`` is rendered with
    ``params[frame_of[j]]`` (default: the same index) and camera ``frames.cameras[ids[j]]``."""
    if not ids:
        raise InputError(Path("."), "no frames to evaluate")
    rows = []
    for j, i in enumerate(ids):
        p = params[frame_of[j] if frame_of is not None else i]
        out = render_avatar(avatar, model, p, frames.cameras[i], bg=bg, backend=backend)
        gt, mask = frames.target(i, bg)
        rows.append(frame_metrics(out.rgb, gt, mask))
    result = mean_metrics(rows)
    result["frames"] = len(rows)
    return result


@torch.no_grad()
def render_speed(avatar: GaussianAvatar, model: HeadModel, params: HeadParams, frames: FrameSet, ids: Sequence[int],
                 bg: Float[Tensor, " 3"], backend: str = "auto", seconds: float = 2.0, chunk: int = 16) -> float:
    """Frames per second of playback (posing and binding ``chunk`` frames at a time, rasterizing each;
    no disk, no encoding, as ``gafkit animate`` renders), over ``ids`` in a loop for about ``seconds``
    after a warm-up."""
    cuda = frames.images.is_cuda
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    index = torch.tensor(list(ids), dtype=torch.long)
    p, cams = params[index.to(params.shape.device)], frames.cameras[index.to(frames.cameras.device)]

    def play(limit: int | None = None) -> int:
        count = 0
        for _ in render_sequence(avatar, model, p[:limit] if limit else p, cams, bg=bg, backend=backend, chunk=chunk):
            count += 1
        return count

    play(min(chunk, len(index)))
    sync()
    count, start = 0, time.perf_counter()
    while True:
        count += play()
        sync()
        if time.perf_counter() - start >= seconds or not cuda:
            break
    return count / (time.perf_counter() - start)


@torch.no_grad()
def write_preview(path: Path, avatar: GaussianAvatar, model: HeadModel, params: HeadParams, frames: FrameSet,
                  ids: Sequence[int], bg: Float[Tensor, " 3"], backend: str, fps: float, max_frames: int = 150) -> int:
    """``preview.mp4``: ground truth (over the background) | render, for the held-out frames ``ids``."""
    from gafkit.media import write_video

    ids = list(ids)[:max_frames]

    def pictures():
        for i in ids:
            out = render_avatar(avatar, model, params[i], frames.cameras[i], bg=bg, backend=backend)
            gt, _ = frames.target(i, bg)
            yield np.concatenate([_to_uint8(gt[0]), _to_uint8(out.rgb[0])], axis=1)

    return write_video(path, pictures(), fps=fps)


def save_avatar_files(folder: Path, avatar: GaussianAvatar, head_model: str, params: HeadParams, seq, metrics: dict,
                      background: str) -> None:
    """Everything of the avatar layout except the manifest, config, checkpoints and preview."""
    avatar.save(folder, meta={"head_model": head_model, "background": background, "source": str(seq.root),
                              "frames": params.batch_size})
    params.to("cpu").save_npz(folder / "head_params.npz")
    canonical = dataclasses.replace(params[0], **{k: torch.zeros_like(getattr(params[0], k))
                                                  for k in ("expr", "rotation", "translation", "neck", "jaw", "eyes")})
    canonical.to("cpu").save_npz(folder / "canonical_params.npz")
    cams = seq.cameras
    np.savez(folder / "cameras.npz", K=cams.K.cpu().numpy(), w2c=cams.w2c.cpu().numpy(), width=cams.width,
             height=cams.height)
    (folder / "splits.json").write_text(json.dumps(seq.splits), encoding="utf-8")
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=1), encoding="utf-8")


@dataclasses.dataclass
class AvatarBundle:
    """A loaded avatar artifact: what animate, export, eval and the viewer need."""

    root: Path
    avatar: GaussianAvatar
    model: HeadModel
    params: HeadParams
    """Per source frame [N, ...]."""
    cameras: Cameras
    splits: dict[str, list[int]]
    info: dict
    """``avatar.json``: head_model, background, source, sh_degree, ..."""

    @property
    def background(self) -> Tensor:
        return torch.tensor(BACKGROUNDS.get(self.info.get("background", "white"), (1.0, 1.0, 1.0)),
                            device=self.params.expr.device)


def load_avatar(path: str | Path, device: torch.device | str = "cpu", flame_model: str | Path | None = None) -> AvatarBundle:
    """Read an avatar artifact (checking its kind and files) onto ``device``."""
    root = Path(path)
    manifest = read_manifest(root, AVATAR_KIND)
    avatar, info = GaussianAvatar.load(root)
    head = info.get("head_model", "ict")
    flame = flame_model or manifest.config.get("flame_model")
    model = load_head_model(head, flame).to(device)
    params = HeadParams.load_npz(root / "head_params.npz", device)
    try:
        with np.load(root / "cameras.npz") as c:
            cameras = Cameras(K=torch.from_numpy(c["K"]), w2c=torch.from_numpy(c["w2c"]), width=int(c["width"]),
                              height=int(c["height"])).to(device)
        splits = json.loads((root / "splits.json").read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise InputError(root, f"incomplete avatar ({Path(err.filename).name} is missing)") from None
    if int(avatar.faces.shape[0]) != int(model.faces.shape[0]):
        raise InputError(root, f"avatar is bound to {avatar.faces.shape[0]} triangles but the {head} model has "
                               f"{model.faces.shape[0]}")
    return AvatarBundle(root=root, avatar=avatar.to(device), model=model, params=params, cameras=cameras,
                        splits=splits, info=info)


def _same_path(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def run_eval(avatar_path: str | Path, data: str | Path | None = None, split: str = "test", device: str = "auto",
             resolution: int | None = None) -> dict:
    """Metrics of an avatar on ``split`` of a tracked sequence (default: the one it was fitted to) and,
    when ``data`` is a synthetic subject, on its ground-truth novel views."""
    from gafkit.device import resolve_device
    from gafkit.trackers.sequence import load_sequence

    dev = resolve_device(device)
    bundle = load_avatar(avatar_path, dev)
    source = Path(bundle.info.get("source", ""))
    data = Path(data) if data is not None else source
    seq = load_sequence(data, dev)
    if split not in seq.splits:
        raise InputError(data, f"no {split!r} split (has {', '.join(seq.splits)})")
    if seq.head_model != bundle.info.get("head_model"):
        raise InputError(data, f"tracked with {seq.head_model}, the avatar uses {bundle.info.get('head_model')}")
    if _same_path(data, source) and bundle.params.batch_size == len(seq):
        params = bundle.params
    else:
        # Another sequence of the same person: its motion, the avatar's identity.
        params = dataclasses.replace(seq.params, shape=bundle.params.shape[:1].expand_as(seq.params.shape))
    ids = list(seq.splits[split])
    frames = load_frames([seq.images[i] for i in ids], [seq.masks[i] for i in ids], seq.cameras[torch.tensor(ids, dtype=torch.long)],
                         resolution=resolution, device=dev, description="eval: load frames")
    bg = bundle.background
    result = {"avatar": str(avatar_path), "data": str(data), "split": split,
              **evaluate_frames(bundle.avatar, bundle.model, params, frames, list(range(len(ids))), bg, frame_of=ids),
              "lpips": None}
    novel = _novel_views(data, dev, resolution)
    if novel is not None:
        nframes, nparams_ids = novel
        result["novel_views"] = {**evaluate_frames(bundle.avatar, bundle.model, params, nframes,
                                                   list(range(len(nframes))), bg, frame_of=nparams_ids), "lpips": None}
    return result


def _novel_views(data: Path, device: torch.device, resolution: int | None) -> tuple[FrameSet, list[int]] | None:
    meta = data / "gt" / "novel" / "cameras.json"
    if not meta.is_file():
        return None
    entries = json.loads(meta.read_text(encoding="utf-8"))["frames"]
    if not entries:
        return None
    folder = meta.parent
    cams = Cameras.from_nerf_frames(entries)
    frames = load_frames([folder / e["file_path"] for e in entries], [folder / e["mask_path"] for e in entries], cams,
                         resolution=resolution, device=device, description="eval: load novel views")
    return frames, [int(e["frame"]) for e in entries]
