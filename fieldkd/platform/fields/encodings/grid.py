"""Dense voxel grid with trilinear interpolation (Plenoxels without sparsity)."""

from __future__ import annotations

import torch
from torch import nn

from ..regularizers import sampled_total_variation, total_variation
from .sampling import sample_volume


class DenseGrid(nn.Module):
    """``channels`` values at each of resolution**3 vertices spanning [-1, 1]^3."""

    def __init__(self, resolution: int = 96, channels: int = 1, init: float = 0.0):
        super().__init__()
        self.values = nn.Parameter(torch.full((channels, resolution, resolution, resolution), init))
        self.out_dim = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x in [-1, 1]^3, (N, 3) -> (N, channels)."""
        return sample_volume(self.values, x)

    def tv(self, n_samples: int | None = None) -> torch.Tensor:
        """Exact TV, or a random-voxel estimate from ``n_samples`` voxels."""
        if n_samples is None:
            return total_variation(self.values, 3)
        return sampled_total_variation(self.values, n_samples)
