"""Image metrics of the fit and of ``gafkit eval``: PSNR, SSIM and L1, on full frames and inside masks.

All images are ``[B, H, W, 3]`` floats in 0..1, masks ``[B, H, W, 1]`` in 0..1. SSIM is the usual
11x11 Gaussian-window (sigma 1.5) SSIM of Wang et al. 2004 with ``C1 = 0.01^2``, ``C2 = 0.03^2``,
computed per channel; "inside the mask" averages a per-pixel quantity over pixels whose mask is
above one half (the SSIM map included). LPIPS needs backbone weights that are not shipped: it is
reported as ``None`` unless a user supplies them.

>>> import torch
>>> a = torch.rand(1, 32, 32, 3)
>>> round(psnr(a, a.clamp(0, 1) * 0 + a), 1), round(ssim(a, a), 4)
(inf, 1.0)
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

C1, C2 = 0.01**2, 0.03**2


@functools.lru_cache(maxsize=8)
def _window(size: int, sigma: float, device: torch.device, dtype: torch.dtype) -> Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return (g / g.sum()).to(device=device, dtype=dtype)


def _blur(x: Float[Tensor, "B C H W"], window: Tensor) -> Float[Tensor, "B C H W"]:
    """Separable Gaussian filter, zero-padded to keep the size (as 3DGS's training loss does)."""
    c, k = x.shape[1], window.shape[0]
    x = F.conv2d(x, window.view(1, 1, 1, k).expand(c, 1, 1, k), padding=(0, k // 2), groups=c)
    return F.conv2d(x, window.view(1, 1, k, 1).expand(c, 1, k, 1), padding=(k // 2, 0), groups=c)


def ssim_map(a: Float[Tensor, "B H W 3"], b: Float[Tensor, "B H W 3"], size: int = 11, sigma: float = 1.5) -> Float[Tensor, "B H W 3"]:
    """Per-pixel, per-channel SSIM."""
    x, y = a.permute(0, 3, 1, 2), b.permute(0, 3, 1, 2)
    w = _window(size, sigma, a.device, a.dtype)
    mx, my = _blur(x, w), _blur(y, w)
    sxx = _blur(x * x, w) - mx * mx
    syy = _blur(y * y, w) - my * my
    sxy = _blur(x * y, w) - mx * my
    s = ((2 * mx * my + C1) * (2 * sxy + C2)) / ((mx * mx + my * my + C1) * (sxx + syy + C2))
    return s.permute(0, 2, 3, 1)


def photometric_loss(rgb: Float[Tensor, "B H W 3"], gt: Float[Tensor, "B H W 3"], ssim_weight: float
                     ) -> tuple[Tensor, Tensor]:
    """The fit's image loss ``(1 - w) * L1 + w * (1 - SSIM)`` and its L1 term (both differentiable)."""
    l1 = (rgb - gt).abs().mean()
    return (1 - ssim_weight) * l1 + ssim_weight * (1 - ssim_map(rgb, gt).mean()), l1


def _mean(x: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return x.mean()
    m = (mask > 0.5).to(x.dtype).expand_as(x)
    return (x * m).sum() / m.sum().clamp_min(1)


def ssim(a: Tensor, b: Tensor, mask: Tensor | None = None) -> float:
    return float(_mean(ssim_map(a, b), mask))


def l1(a: Tensor, b: Tensor, mask: Tensor | None = None) -> float:
    return float(_mean((a - b).abs(), mask))


def psnr(a: Tensor, b: Tensor, mask: Tensor | None = None) -> float:
    """PSNR in dB for a peak of 1 (``inf`` for identical images)."""
    mse = float(_mean((a - b) ** 2, mask))
    return math.inf if mse == 0 else -10 * math.log10(mse)


def image_metrics(pred: Float[Tensor, "B H W 3"], gt: Float[Tensor, "B H W 3"], mask: Float[Tensor, "B H W 1"]) -> dict[str, float]:
    """PSNR/SSIM/L1 over full frames and inside ``mask``, each averaged over the B frames (per-frame
    PSNR first, then the mean, as papers report it)."""
    return mean_metrics([frame_metrics(pred[i : i + 1], gt[i : i + 1], mask[i : i + 1]) for i in range(pred.shape[0])])


def mean_metrics(rows: list[dict[str, float]]) -> dict[str, float | None]:
    """Each key's mean over the frames' ``frame_metrics`` rows, skipping frames where it is nan (an
    empty mask part); None when every frame skips it."""
    out: dict[str, float | None] = {}
    for k in rows[0]:
        kept = [r[k] for r in rows if not math.isnan(r[k])]
        out[k] = sum(kept) / len(kept) if kept else None
    return out


EDGE_PX = 5
"""Width of the mask's edge band at 512 px (scaled with the image width), for ``psnr_mask_edge``."""


def mask_edge(mask: Float[Tensor, "B H W 1"], width: int) -> tuple[Tensor, Tensor]:
    """``(interior, edge)`` of the hard mask (``mask > 0.5``), each ``[B, H, W, 1]`` 0/1: the mask
    eroded by ``width`` pixels, and the rest of the mask."""
    hard = (mask > 0.5).to(mask.dtype).permute(0, 3, 1, 2)
    interior = 1 - F.max_pool2d(1 - hard, 2 * width + 1, stride=1, padding=width)
    return interior.permute(0, 2, 3, 1), (hard - interior).permute(0, 2, 3, 1)


def frame_metrics(pred: Tensor, gt: Tensor, mask: Tensor) -> dict[str, float]:
    """Full-frame and masked PSNR/SSIM/L1, and the masked PSNR split into the interior and the band of
    ``EDGE_PX`` (at 512) along the mask's edge, where segmentation noise lands (nan where a part is empty)."""
    pred, gt = pred.clamp(0, 1), gt.clamp(0, 1)
    interior, edge = mask_edge(mask, max(1, round(EDGE_PX * mask.shape[2] / 512)))
    return {"psnr": psnr(pred, gt), "ssim": ssim(pred, gt), "l1": l1(pred, gt),
            "psnr_masked": psnr(pred, gt, mask), "ssim_masked": ssim(pred, gt, mask), "l1_masked": l1(pred, gt, mask),
            "psnr_mask_interior": psnr(pred, gt, interior) if interior.any() else math.nan,
            "psnr_mask_edge": psnr(pred, gt, edge) if edge.any() else math.nan}
