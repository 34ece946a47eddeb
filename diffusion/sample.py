"""``gafkit prior sample``: generate a person's views around a tracked head from one reference image.

Writes ``OUT/reference.png``, per view ``view_NN.png`` next to ``normal_NN.png``, a contact sheet
``sheet.jpg`` (normals above generated views) and ``views.json`` (angles, frame, settings).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from gafkit.artifact import write_artifact
from gafkit.device import resolve_device
from gafkit.diffusion.data_tracked import foreground_faces
from gafkit.diffusion.pipeline import MultiViewPrior
from gafkit.diffusion.shards import normal_maps, save_image
from gafkit.diffusion.views import frame_orbit
from gafkit.errors import GafkitError, InputError

SAMPLES_KIND = "prior-samples"


@dataclasses.dataclass
class SampleConfig:
    """What ``gafkit prior sample`` generates."""

    yaw_deg: tuple[float, ...] = (0.0, 90.0, 180.0, 270.0)
    """Yaw of each view in the head frame (0 = front, 180 = back)."""
    pitch_deg: tuple[float, ...] = (0.0,)
    """Pitch of each view (one value applies to all)."""
    frame: int | None = None
    """Tracked frame whose expression and pose are used (None: the most frontal training frame)."""
    steps: int = 30
    size: int | None = None
    """Output image size (None: the prior's); larger sizes go through the prior's upsampler, if any."""
    guidance_scale: float = 2.0
    seed: int = 0
    foreground_faces: float = 0.5
    """Normal maps leave out the triangles outside the sequence's foreground masks (the bust below the
    neck cut; :func:`gafkit.render.silhouette.carve_bust`) and cull back faces; 0 keeps the whole mesh."""


def _to_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).float().permute(2, 0, 1) / 255


def load_reference(path: Path, size: int) -> torch.Tensor:
    """[3, size, size] in [0, 1]: the image's centred square crop, resized (alpha composited on white)."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGBA")
            side = min(im.size)
            left, top = (im.width - side) // 2, (im.height - side) // 2
            im = im.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS)
            white = Image.new("RGBA", im.size, (255, 255, 255, 255))
            return _to_tensor(np.asarray(Image.alpha_composite(white, im).convert("RGB")))
    except FileNotFoundError:
        raise InputError(path, "no such image") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(path, f"not a readable image ({exc.__class__.__name__})") from None


def run_sample(cfg: SampleConfig, prior_path: str | Path, tracked: str | Path, out: str | Path, *,
               reference: str | Path | None = None, device: str = "auto", overwrite: bool = False) -> Path:
    """Generate the views of ``cfg`` around frame ``cfg.frame`` of ``tracked`` with the prior."""
    from gafkit.heads import load_head_model
    from gafkit.recon.data import load_frames
    from gafkit.recon.prior_guidance import frontal_frame, head_crop
    from gafkit.trackers.sequence import load_sequence

    if len(cfg.pitch_deg) not in (1, len(cfg.yaw_deg)):
        raise GafkitError(f"prior sample: give one pitch or one per yaw ({len(cfg.yaw_deg)} yaws, "
                          f"{len(cfg.pitch_deg)} pitches)")
    if not 0 <= cfg.foreground_faces <= 1:
        raise GafkitError(f"prior sample: --foreground-faces {cfg.foreground_faces} must be in [0, 1] (0 turns it off)")
    if cfg.size is not None and cfg.size < 16:
        raise GafkitError(f"prior sample: size {cfg.size} is too small (>= 16)")
    dev = resolve_device(device)
    seq = load_sequence(Path(tracked))
    if cfg.frame is not None and not 0 <= cfg.frame < seq.params.batch_size:
        raise GafkitError(f"{tracked}: frame {cfg.frame} is out of range (0..{seq.params.batch_size - 1})")
    prior = MultiViewPrior.from_pretrained(prior_path, device=dev)
    ref_image = None if reference is None else load_reference(Path(reference), prior.size)
    model = load_head_model(seq.head_model).to(dev)
    params = seq.params.to(dev)
    train = list(seq.splits.get("train") or range(params.batch_size))
    frame = cfg.frame if cfg.frame is not None else frontal_frame(model, params, seq.cameras.to(dev), train)
    yaw = torch.tensor(cfg.yaw_deg, dtype=torch.float32)
    pitch = torch.tensor(cfg.pitch_deg, dtype=torch.float32).expand_as(yaw)
    cams, verts = frame_orbit(model, params[frame], seq.cameras[frame].to(dev), yaw, pitch, cfg.size or prior.size)
    faces = foreground_faces(seq, model, train, cfg.foreground_faces)
    normals = normal_maps(verts, faces, cams.to(dev), cull_back=cfg.foreground_faces > 0)
    inputs = {"tracked": Path(tracked) / "manifest.json"} | ({"reference": reference} if reference else {})
    with write_artifact(out, SAMPLES_KIND, config=cfg, inputs=inputs, overwrite=overwrite) as art:
        if ref_image is None:
            frames = load_frames(seq.images[frame:frame + 1], seq.masks[frame:frame + 1], seq.cameras[frame:frame + 1],
                                 device=dev)
            image = frames.target(0, torch.ones(3, device=dev))[0][0].permute(2, 0, 1)
            ref_image = head_crop(image, model, params[frame], seq.cameras[frame].to(dev), prior.size)
        g = torch.Generator(device=prior.device).manual_seed(cfg.seed)
        views = prior(ref_image[None].to(prior.device), normals[None].to(prior.device),
                      num_inference_steps=cfg.steps, guidance_scale=cfg.guidance_scale, generator=g)[0]
        save_image(art.dir / "reference.png", ref_image)
        for i in range(len(yaw)):
            save_image(art.dir / f"view_{i:02d}.png", views[i])
            save_image(art.dir / f"normal_{i:02d}.png", normals[i])
        sheet = torch.cat([torch.cat(list(normals.cpu()), -1), torch.cat(list(views.cpu()), -1)], -2)
        save_image(art.dir / "sheet.jpg", sheet, quality=90)
        (art.dir / "views.json").write_text(json.dumps({
            "frame": frame, "yaw_deg": yaw.tolist(), "pitch_deg": pitch.tolist(), "prior": str(prior_path),
            "reference": str(reference) if reference else f"frame {frame}", "steps": cfg.steps,
            "guidance_scale": cfg.guidance_scale, "seed": cfg.seed, "size": int(views.shape[-1]),
            "upsampler": prior.upsampler is not None and views.shape[-1] > prior.size}, indent=1), encoding="utf-8")
    return Path(out)
