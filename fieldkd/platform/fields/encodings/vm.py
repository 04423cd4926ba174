"""TensoRF vector-matrix (VM) decomposition.

A 3D feature volume is approximated per component as a sum over the three
(plane, line) pairs: plane_xy(x, y) * line_z(z) + plane_xz * line_y +
plane_yz * line_x. Density and appearance use separate components.
"""

from __future__ import annotations

import torch
from torch import nn

from ..regularizers import l1, total_variation
from .sampling import sample_lines, sample_planes


class VMComponents(nn.Module):
    """``rank`` components per plane/line pair -> (N, 3 * rank) products."""

    def __init__(self, resolution: int, rank: int, init_scale: float = 0.1):
        super().__init__()
        self.planes = nn.Parameter(init_scale * torch.randn(3, rank, resolution, resolution))
        self.lines = nn.Parameter(init_scale * torch.randn(3, rank, resolution, 1))
        self.out_dim = 3 * rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prod = sample_planes(self.planes, x) * sample_lines(self.lines, x)  # (3, N, rank)
        return prod.transpose(0, 1).flatten(1)  # (N, 3 * rank), pair-major

    def l1(self) -> torch.Tensor:
        return l1(self.planes) + l1(self.lines)

    def tv(self) -> torch.Tensor:
        return total_variation(self.planes, 2) + total_variation(self.lines, 2)


class VMEncoding(nn.Module):
    """Density rank ``density_rank`` x 3 and appearance rank ``app_rank`` x 3."""

    def __init__(self, resolution: int = 128, density_rank: int = 16, app_rank: int = 48):
        super().__init__()
        self.density = VMComponents(resolution, density_rank)
        self.appearance = VMComponents(resolution, app_rank)

    def raw_density(self, x: torch.Tensor) -> torch.Tensor:
        """x in [-1, 1]^3 -> (N,) sum of all density components."""
        return self.density(x).sum(dim=-1)

    def app_features(self, x: torch.Tensor) -> torch.Tensor:
        """x in [-1, 1]^3 -> (N, 3 * app_rank) appearance components."""
        return self.appearance(x)
