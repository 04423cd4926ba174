"""Bilinear / trilinear lookups in stacks of planes, lines and volumes.

All take coordinates in [-1, 1] with ``align_corners=True``: -1 and +1 are
the centres of the first and last texels, so a resolution-R axis has R
vertices spanning the box exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# (u, v) axes of the three planes xy, xz, yz; the line of plane i runs along
# the remaining axis (z, y, x), as in TensoRF's VM decomposition.
PLANE_AXES = ((0, 1), (0, 2), (1, 2))
LINE_AXES = (2, 1, 0)


def sample_planes(planes: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """planes (3, C, R, R) indexed [.., v, u]; x (N, 3) -> (3, N, C)."""
    coords = torch.stack([x[:, list(ax)] for ax in PLANE_AXES])  # (3, N, 2) as (u, v)
    out = F.grid_sample(planes, coords[:, :, None, :], mode="bilinear", align_corners=True)
    return out[..., 0].transpose(1, 2)  # (3, C, N, 1) -> (3, N, C)


def sample_lines(lines: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """lines (3, C, R, 1) indexed [.., t, 0]; x (N, 3) -> (3, N, C)."""
    t = torch.stack([x[:, ax] for ax in LINE_AXES])  # (3, N)
    # A width-1 image: the u coordinate is irrelevant, v walks along the line.
    coords = torch.stack([torch.zeros_like(t), t], dim=-1)  # (3, N, 2)
    out = F.grid_sample(lines, coords[:, :, None, :], mode="bilinear", align_corners=True)
    return out[..., 0].transpose(1, 2)


def sample_volume(volume: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """volume (C, D, H, W) indexed [.., z, y, x]; x (N, 3) -> (N, C)."""
    out = F.grid_sample(volume[None], x[None, :, None, None, :], mode="bilinear", align_corners=True)
    return out[0, :, :, 0, 0].T
