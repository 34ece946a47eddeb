"""Foreground colour estimation (blur fusion): recovers F on a soft edge where the frame holds the room."""

from __future__ import annotations

import torch

from gafkit.recon.data import FrameSet
from gafkit.recon.foreground import box_mean, estimate_foreground


def test_box_mean_matches_average_pooling_inside_and_clips_at_the_border():
    x = torch.rand(2, 3, 20, 24)
    ref = torch.nn.functional.avg_pool2d(x, 5, stride=1)
    assert torch.allclose(box_mean(x, 2)[:, :, 2:-2, 2:-2], ref, atol=1e-5)
    assert torch.allclose(box_mean(x, 2)[:, :, 0, 0], x[:, :, :3, :3].mean((-1, -2)), atol=1e-5)


def _edge_scene(size: int = 128, width: float = 0.04) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A reddish person (left) on a blue-green room (right), a soft edge of ``width`` of the image between them."""
    xs = torch.linspace(0, 1, size)
    alpha = ((0.6 - xs) / width + 0.5).clamp(0, 1).expand(size, size)[None, None]
    fg = torch.tensor([0.8, 0.45, 0.35])[None, :, None, None] * (1 + 0.05 * torch.sin(xs * 9))
    room = torch.tensor([0.1, 0.5, 0.7])[None, :, None, None].expand(1, 3, size, size)
    image = alpha * fg + (1 - alpha) * room
    return image, alpha, fg.expand(1, 3, size, size)


def test_estimate_foreground_removes_the_rooms_share_on_the_edge():
    image, alpha, fg = _edge_scene()
    est = estimate_foreground(image, alpha)
    edge = (alpha > 0.1) & (alpha < 0.9)
    err_frame = ((image - fg).abs() * alpha).expand_as(fg)[edge.expand_as(fg)].mean()
    err_est = ((est - fg).abs() * alpha).expand_as(fg)[edge.expand_as(fg)].mean()
    assert err_est < 0.25 * err_frame
    solid = (alpha > 0.999).expand_as(fg)
    assert torch.allclose(est[solid], image[solid], atol=1e-3)  # opaque pixels are the frame


def test_frameset_composites_the_foreground_only_when_asked():
    image, alpha, _ = _edge_scene(64, 0.1)
    to_u8 = lambda t: t.mul(255).round().byte().permute(0, 2, 3, 1)  # noqa: E731
    frames = FrameSet(images=to_u8(image), masks=to_u8(alpha), cameras=None)  # target() needs no cameras
    white = torch.ones(3)
    plain, _ = frames.target(0, white)
    frames.add_foreground()
    fg, mask = frames.target(0, white, foreground=True)
    assert torch.equal(frames.target(0, white)[0], plain)
    edge = ((mask > 0.1) & (mask < 0.9)).expand_as(fg)
    # The room is blue-green: its share on the edge shows as less red than the foreground composite.
    assert float(fg[..., 0][edge[..., 0]].mean()) > float(plain[..., 0][edge[..., 0]].mean()) + 0.02
    # Frames left out keep the frame itself.
    two = FrameSet(images=to_u8(image).repeat(2, 1, 1, 1), masks=to_u8(alpha).repeat(2, 1, 1, 1), cameras=None)
    two.add_foreground([1])
    assert torch.equal(two.foreground[0], two.images[0]) and torch.equal(two.foreground[1], frames.foreground[0])
