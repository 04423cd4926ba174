"""Depth hypotheses, cost aggregation and the read-out of a probability volume.

Pure functions: volumes are [B,D,h,w] (D hypotheses per pixel), depths [B,h,w].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def uniform_hypotheses(depth_min: torch.Tensor, depth_max: torch.Tensor, count: int,
                       height: int, width: int) -> torch.Tensor:
    """``count`` fronto-parallel planes evenly over [depth_min, depth_max] (per sample [B]):
    [B,count,h,w]; one plane sits in the middle of the range."""
    steps = torch.linspace(0.0, 1.0, count, device=depth_min.device, dtype=torch.float32)
    if count == 1:
        steps = torch.full_like(steps, 0.5)
    lo, hi = depth_min.float().reshape(-1, 1), depth_max.float().reshape(-1, 1)
    planes = lo + (hi - lo) * steps  # [B,count]
    return planes[:, :, None, None].expand(-1, -1, height, width).contiguous()


def centred_hypotheses(depth: torch.Tensor, count: int, spacing: torch.Tensor) -> torch.Tensor:
    """``count`` per-pixel hypotheses around ``depth`` [B,h,w], ``spacing`` apart ([B] or
    scalar), symmetric about it: [B,count,h,w]."""
    offsets = torch.arange(count, device=depth.device, dtype=torch.float32) - (count - 1) / 2
    spacing = torch.as_tensor(spacing, device=depth.device, dtype=torch.float32).reshape(-1, 1, 1, 1)
    return depth.float().unsqueeze(1) + offsets.reshape(1, -1, 1, 1) * spacing


def upsample_depth(depth: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A coarser stage's depth [B,h,w] at the next stage's size (bilinear)."""
    if depth.shape[-2:] == (height, width):
        return depth
    return F.interpolate(depth.unsqueeze(1), size=(height, width), mode="bilinear",
                         align_corners=False).squeeze(1)


def variance_volume(reference: torch.Tensor, warped_sources: list[torch.Tensor]) -> torch.Tensor:
    """Variance over views of the reference features [B,C,h,w] (the same on every plane)
    and the sources warped onto the planes, each [B,C,D,h,w]: [B,C,D,h,w]."""
    views = 1 + len(warped_sources)
    total = reference.unsqueeze(2)
    squares = total.square()
    for warped in warped_sources:
        total = total + warped
        squares = squares + warped.square()
    mean = total / views
    return squares / views - mean.square()


def soft_argmin(prob_volume: torch.Tensor, hypotheses: torch.Tensor) -> torch.Tensor:
    """Expected depth under the per-pixel distribution over hypotheses: [B,h,w]."""
    return (prob_volume * hypotheses).sum(dim=1)


def probability_mass(prob_volume: torch.Tensor, below: int = 1, above: int = 2) -> torch.Tensor:
    """Probability mass of the hypotheses around each pixel's expected index i: those from
    floor(i) - ``below`` to floor(i) + ``above`` (the official four-hypothesis window),
    clipped to the volume: [B,h,w]. Not differentiated (a confidence, not a loss)."""
    with torch.no_grad():
        d = prob_volume.shape[1]
        index = torch.arange(d, device=prob_volume.device, dtype=prob_volume.dtype).reshape(1, -1, 1, 1)
        expected = (prob_volume * index).sum(dim=1, keepdim=True).floor().clamp(0, d - 1)
        window = (index >= expected - below) & (index <= expected + above)
        return (prob_volume * window).sum(dim=1)


def combined_confidence(confidences: list[torch.Tensor], height: int, width: int) -> torch.Tensor:
    """Product of every stage's confidence, each upsampled (bilinear) to [B,height,width]."""
    out = None
    for conf in confidences:
        up = upsample_depth(conf, height, width)
        out = up if out is None else out * up
    return out
