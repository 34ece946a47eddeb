"""Seeded, smooth head-motion and expression trajectories for synthetic subjects."""

from __future__ import annotations

import math

import numpy as np
import torch
from jaxtyping import Float

from gafkit.heads.base import HeadModel, HeadParams
from gafkit.synth.config import MotionConfig

# ICT (ARKit) expression channels: (shape names driven together, peak weight). Symmetric pairs share
# one signal so the face stays plausible; only the positive half of each signal is used (weights >= 0).
ICT_CHANNELS: tuple[tuple[tuple[str, ...], float], ...] = (
    (("jawOpen",), 0.45),
    (("mouthSmile_L", "mouthSmile_R"), 0.7),
    (("browInnerUp_L", "browInnerUp_R"), 0.6),
    (("browDown_L", "browDown_R"), 0.4),
    (("mouthPucker",), 0.5),
    (("mouthFunnel",), 0.3),
    (("eyeSquint_L", "eyeSquint_R"), 0.3),
)
BLINK = ("eyeBlink_L", "eyeBlink_R")
# Models with anonymous expression coefficients (FLAME): how many to drive, peak magnitude, jaw opening.
GENERIC_EXPR = 10
GENERIC_EXPR_PEAK = 1.5
JAW_OPEN_RAD = 0.25


def smooth_signals(rng: np.random.Generator, count: int, n: int) -> Float[np.ndarray, "K N"]:
    """``count`` smooth signals over ``n`` frames, each a sum of three sinusoids of 0.5 to 2 cycles per
    sequence with random phases, scaled so that max |signal| = 1.

    >>> s = smooth_signals(np.random.default_rng(0), 2, 30)
    >>> s.shape, float(np.abs(s).max(1).min())
    ((2, 30), 1.0)
    """
    t = np.linspace(0.0, 1.0, n)
    freq = rng.uniform(0.5, 2.0, (count, 3, 1))
    phase = rng.uniform(0.0, 2 * math.pi, (count, 3, 1))
    amp = rng.uniform(0.3, 1.0, (count, 3, 1))
    sig = (amp * np.sin(2 * math.pi * freq * t + phase)).sum(1)
    peak = np.abs(sig).max(1, keepdims=True)
    return sig / np.where(peak > 1e-9, peak, 1.0)


def euler_to_axis_angle(yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray) -> Float[np.ndarray, "N 3"]:
    """Axis-angle of ``Ry(yaw) @ Rx(pitch) @ Rz(roll)`` (radians, model axes: Y up, Z toward the face).

    >>> euler_to_axis_angle(np.array([0.3]), np.zeros(1), np.zeros(1)).round(6).tolist()
    [[0.0, 0.3, 0.0]]
    """
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    one, zero = np.ones_like(yaw), np.zeros_like(yaw)
    ry = np.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).reshape(-1, 3, 3)
    rx = np.stack([one, zero, zero, zero, cp, -sp, zero, sp, cp], -1).reshape(-1, 3, 3)
    rz = np.stack([cr, -sr, zero, sr, cr, zero, zero, zero, one], -1).reshape(-1, 3, 3)
    return matrix_to_axis_angle(ry @ rx @ rz)


def matrix_to_axis_angle(rot: Float[np.ndarray, "N 3 3"]) -> Float[np.ndarray, "N 3"]:
    """Axis-angle vectors of rotation matrices with angles below pi (enough for head poses)."""
    cos = np.clip((np.trace(rot, axis1=1, axis2=2) - 1) / 2, -1.0, 1.0)
    angle = np.arccos(cos)
    vec = np.stack([rot[:, 2, 1] - rot[:, 1, 2], rot[:, 0, 2] - rot[:, 2, 0], rot[:, 1, 0] - rot[:, 0, 1]], -1)
    sin = np.sin(angle)
    # angle / (2 sin angle) -> 1/2 as the angle goes to zero.
    scale = np.where(sin > 1e-8, angle / (2 * np.where(sin > 1e-8, sin, 1.0)), 0.5)
    return vec * scale[:, None]


def make_trajectory(
    head: HeadModel, shape: Float[torch.Tensor, "1 S"], n: int, rest_translation: Float[torch.Tensor, " 3"],
    cfg: MotionConfig, seed: int,
) -> HeadParams:
    """Per-frame parameters [n, ...]: the fixed identity ``shape``, smooth head pose about the rest
    position ``rest_translation``, gaze, expressions (ICT: a few ARKit shapes and blinks; other models:
    the first expression coefficients and the jaw joint).

    >>> from gafkit.heads import load_head_model
    >>> head = load_head_model("ict")
    >>> p = make_trajectory(head, torch.zeros(1, head.n_shape), 8, torch.zeros(3), MotionConfig(), 0)
    >>> p.expr.shape, round(float(p.rotation[:, 1].abs().max()), 3) <= round(math.radians(25), 3)
    (torch.Size([8, 53]), True)
    """
    rng = np.random.default_rng([seed, 1])
    pose = smooth_signals(rng, 6, n)
    deg = np.radians
    rotation = euler_to_axis_angle(deg(cfg.yaw_deg) * pose[0], deg(cfg.pitch_deg) * pose[1], deg(cfg.roll_deg) * pose[2])
    translation = rest_translation.numpy()[None] + cfg.drift_m * pose[3:6].T
    gaze = smooth_signals(rng, 2, n) * deg(cfg.gaze_deg)
    eye = np.stack([gaze[1], gaze[0], np.zeros(n)], -1)  # pitch about x, yaw about y
    eyes = np.concatenate([eye, eye], -1)

    params = head.zero_params(n)
    expr = np.zeros((n, head.n_expr))
    jaw = np.zeros((n, 3))
    names = {name: i for i, name in enumerate(head.expression_names)}
    if all(name in names for chan, _ in ICT_CHANNELS for name in chan):
        signals = np.clip(smooth_signals(rng, len(ICT_CHANNELS), n), 0.0, None)
        for (chan, peak), sig in zip(ICT_CHANNELS, signals, strict=True):
            for name in chan:
                expr[:, names[name]] = peak * sig
        if all(name in names for name in BLINK):
            blink = _blinks(rng, n, cfg.blinks_per_100_frames)
            for name in BLINK:
                expr[:, names[name]] = np.maximum(expr[:, names[name]], blink)
        expr *= cfg.expression
    else:
        k = min(GENERIC_EXPR, head.n_expr)
        expr[:, :k] = GENERIC_EXPR_PEAK * cfg.expression * smooth_signals(rng, k, n).T / np.arange(1, k + 1) ** 0.5
        if head.has_jaw_joint:
            jaw[:, 0] = JAW_OPEN_RAD * cfg.expression * np.clip(smooth_signals(rng, 1, n)[0], 0.0, None)

    as_t = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    params.shape = shape.expand(n, -1).clone()
    params.expr, params.rotation, params.translation = as_t(expr), as_t(rotation), as_t(translation)
    params.eyes, params.jaw = as_t(eyes), as_t(jaw)
    return params


def _blinks(rng: np.random.Generator, n: int, per_100: float) -> Float[np.ndarray, " N"]:
    """Blink weights: Gaussian pulses (about 3 frames wide) at random frames."""
    count = rng.poisson(per_100 * n / 100.0)
    centers = rng.uniform(0, n - 1, count)
    frames = np.arange(n)[:, None]
    return np.exp(-(((frames - centers[None]) / 1.5) ** 2)).max(1, initial=0.0)
