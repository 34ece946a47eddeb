"""Image metrics: masked PSNR split into the mask's interior and its edge band."""

from __future__ import annotations

import math

import pytest
import torch

from gafkit.recon.metrics import frame_metrics, image_metrics, mask_edge, psnr


def test_edge_band_isolates_errors_along_the_silhouette():
    gt = torch.full((1, 64, 64, 3), 0.5)
    mask = torch.zeros(1, 64, 64, 1)
    mask[:, 16:48, 16:48] = 1
    interior, edge = mask_edge(mask, 2)
    assert interior.sum() == 28 * 28 and edge.sum() == 32 * 32 - 28 * 28
    pred = gt.clone()
    pred[:, 16:48, 16] = 0.0  # a silhouette one pixel off on the left
    m = frame_metrics(pred, gt, mask)  # 64 px wide: a 1-pixel band (5 px at 512)
    assert m["psnr_mask_interior"] == math.inf
    assert m["psnr_mask_edge"] < m["psnr_masked"] < m["psnr"]
    assert m["psnr_mask_edge"] == pytest.approx(psnr(pred, gt, mask_edge(mask, 1)[1]))
    pred = gt + 0.1 * (torch.rand_like(gt) - 0.5)  # noise everywhere: both parts see it
    m = frame_metrics(pred, gt, mask)
    assert abs(m["psnr_mask_interior"] - m["psnr_mask_edge"]) < 1.5


def test_empty_parts_are_nan_and_skipped_in_the_mean():
    gt, pred = torch.zeros(2, 8, 8, 3), torch.full((2, 8, 8, 3), 0.1)
    mask = torch.zeros(2, 8, 8, 1)
    mask[1, 2:6, 2:6] = 1  # frame 0 has no mask at all
    m = image_metrics(pred, gt, mask)
    assert m["psnr_mask_edge"] == pytest.approx(20.0) and m["psnr"] == pytest.approx(20.0)
