"""Test helper: a fit's Trainer on a tracked subject, set up as ``run_fit`` sets it up."""

from __future__ import annotations

from pathlib import Path

import torch

from gafkit.heads import load_head_model
from gafkit.recon.config import FitConfig
from gafkit.recon.data import load_frames
from gafkit.recon.train import Trainer
from gafkit.trackers.sequence import load_sequence


def make_trainer(subject: Path, cfg: FitConfig, device: str = "cpu") -> Trainer:
    """Frames and head model on ``device`` (``run_fit`` moves both there); the sequence is ``trainer.seq``,
    its frames ``trainer.frames``."""
    seq = load_sequence(subject)
    frames = load_frames(seq.images, seq.masks, seq.cameras, device=device)
    return Trainer(cfg, load_head_model(seq.head_model).to(device), seq, frames, torch.device(device))
