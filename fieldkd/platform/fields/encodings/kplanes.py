"""Multiscale K-Planes encoding for static scenes (three planes xy, xz, yz)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..regularizers import total_variation
from .sampling import sample_planes


class KPlanesEncoding(nn.Module):
    """Per scale: bilinear features of three planes multiplied elementwise
    (Hadamard); scales are concatenated -> (N, len(resolutions) * n_features)."""

    def __init__(self, resolutions: Sequence[int] = (32, 64, 128), n_features: int = 16,
                 init_range: tuple[float, float] = (0.1, 0.5)):
        super().__init__()
        lo, hi = init_range
        # Positive init keeps the product of three planes away from zero at
        # the start (K-Planes' choice); a zero-mean init would make it ~0.
        self.planes = nn.ParameterList(
            nn.Parameter(torch.empty(3, n_features, r, r).uniform_(lo, hi)) for r in resolutions
        )
        self.out_dim = len(resolutions) * n_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x in [-1, 1]^3, (N, 3) -> (N, out_dim)."""
        return torch.cat([sample_planes(p, x).prod(dim=0) for p in self.planes], dim=-1)

    def tv(self) -> torch.Tensor:
        return sum(total_variation(p, 2) for p in self.planes)
