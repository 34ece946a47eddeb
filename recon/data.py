"""Frames of a tracked sequence in memory, at the resolution the fit trains at.

Images and masks stay uint8 (300 frames at 512x512 are 300 MB with masks) on the training device;
:meth:`FrameSet.target` turns one frame into float RGB composited over the background, which is what
the avatar's render (with the same background) is compared with.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float, UInt8
from PIL import Image
from torch import Tensor

from gafkit.console import track
from gafkit.errors import InputError
from gafkit.render.camera import Cameras


@dataclasses.dataclass
class FrameSet:
    """N frames of one size.

    Shapes:
        images: [N, H, W, 3] uint8
        masks:  [N, H, W, 1] uint8 (255 = foreground)
        cameras: N cameras for H x W images
        foreground: [N, H, W, 3] uint8 or None: the images' foreground colour at the mask's soft edge
            (:meth:`add_foreground`)
    """

    images: UInt8[Tensor, "N H W 3"]
    masks: UInt8[Tensor, "N H W 1"]
    cameras: Cameras
    foreground: UInt8[Tensor, "N H W 3"] | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)"""
        return self.images.shape[1], self.images.shape[2]

    def add_foreground(self, ids: list[int] | None = None, chunk: int = 4) -> None:
        """Estimate the foreground colour (:func:`gafkit.recon.foreground.estimate_foreground`) of frames
        ``ids`` (default: all); the others keep the frame itself (the fit trains on its training frames
        only)."""
        from gafkit.recon.foreground import estimate_foreground

        ids = list(range(len(self))) if ids is None else list(ids)
        out = self.images.clone()
        for a in range(0, len(ids), chunk):
            rows = torch.tensor(ids[a:a + chunk], device=self.images.device)
            rgb = self.images[rows].permute(0, 3, 1, 2).float() / 255
            alpha = self.masks[rows].permute(0, 3, 1, 2).float() / 255
            out[rows] = estimate_foreground(rgb, alpha).mul(255).round().byte().permute(0, 2, 3, 1)
        self.foreground = out

    def target(self, index: int | Tensor, bg: Float[Tensor, " 3"], *, foreground: bool = False
               ) -> tuple[Float[Tensor, "B H W 3"], Float[Tensor, "B H W 1"]]:
        """Frames ``index`` as float RGB over ``bg``, and their masks in 0..1. With ``foreground`` the
        estimated foreground colour (:meth:`add_foreground`) is composited instead of the frame."""
        if isinstance(index, int):
            index = torch.tensor([index])
        index = index.to(self.images.device)
        if foreground and self.foreground is None:
            raise ValueError("FrameSet.target(foreground=True) needs add_foreground() first")
        rgb = (self.foreground if foreground else self.images)[index].float() / 255
        mask = self.masks[index].float() / 255
        return rgb * mask + bg.to(rgb) * (1 - mask), mask


def evenly_spaced(ids: Sequence[int], limit: int) -> list[int]:
    """At most ``limit`` of ``ids``, evenly spaced from the first to the last (all of them when they fit).

    >>> evenly_spaced(list(range(10)), 4)
    [0, 3, 6, 9]
    """
    ids = list(ids)
    if len(ids) <= limit:
        return ids
    if limit < 2:
        return ids[:limit]
    return [ids[round(j * (len(ids) - 1) / (limit - 1))] for j in range(limit)]


def _read(path: Path, mode: str, expect: tuple[int, int], size: tuple[int, int] | None) -> np.ndarray:
    try:
        with Image.open(path) as im:
            if im.size != expect:
                raise InputError(path, f"is {im.size[0]}x{im.size[1]}, the sequence's frames are {expect[0]}x{expect[1]}")
            im = im.convert(mode)
            if size is not None and im.size != size:
                im = im.resize(size, Image.Resampling.BOX if size[0] < im.size[0] else Image.Resampling.BILINEAR)
            return np.asarray(im)
    except FileNotFoundError:
        raise InputError(path, "missing") from None
    except OSError as err:
        raise InputError(path, f"unreadable image ({err})") from None


def load_frames(images: Sequence[Path], masks: Sequence[Path], cameras: Cameras, *, resolution: int | None = None,
                device: torch.device | str = "cpu", description: str = "load frames") -> FrameSet:
    """Read images and masks, resized so the longer side is ``resolution`` (``None`` = as stored).

    The cameras are scaled to match. All frames must share the first frame's size.
    """
    if len(images) != len(masks) or len(images) != len(cameras):
        raise InputError(Path(images[0]).parent if images else Path("."),
                         f"{len(images)} images, {len(masks)} masks and {len(cameras)} cameras do not match")
    with Image.open(images[0]) as im:
        w0, h0 = im.size
    if (w0, h0) != (cameras.width, cameras.height):
        raise InputError(images[0], f"is {w0}x{h0} but the sequence's cameras are {cameras.width}x{cameras.height}")
    factor = 1.0 if resolution is None else resolution / max(w0, h0)
    size = None if resolution is None else (round(w0 * factor), round(h0 * factor))
    rgb, alpha = [], []
    for img, msk in track(list(zip(images, masks)), description):
        rgb.append(_read(Path(img), "RGB", (w0, h0), size))
        alpha.append(_read(Path(msk), "L", (w0, h0), size)[..., None])
    cams = cameras if factor == 1.0 else cameras.scaled(factor)
    return FrameSet(images=torch.from_numpy(np.stack(rgb)).to(device), masks=torch.from_numpy(np.stack(alpha)).to(device),
                    cameras=cams.to(device))
