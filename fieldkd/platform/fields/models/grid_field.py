"""Plenoxels-like field: a dense voxel grid of raw density and SH colour
coefficients, trilinearly interpolated; no intermediate feature."""

from __future__ import annotations

import torch

from ..encodings.grid import DenseGrid
from ..encodings.sh import sh_basis, sh_dim
from ..radiance import RadianceField, to_signed
from ..registry import register_field


@register_field("grid")
class GridField(RadianceField):
    has_feature = False

    def __init__(self, aabb, *, resolution: int = 96, sh_degree: int = 2, density_init: float = 0.0,
                 tv_weight_density: float = 1e-5, tv_weight_sh: float = 1e-3,
                 tv_samples: int | None = 16384, grid_lr_scale: float = 10.0, density_activation: str = "trunc_exp"):
        # trunc_exp (not Plenoxels' ReLU) by default so raw densities mean the
        # same as in the other fields, which distillation compares.
        super().__init__(aabb, density_activation=density_activation, grid_lr_scale=grid_lr_scale)
        self.sh_degree = sh_degree
        self.n_coeffs = sh_dim(sh_degree)
        # Separate grids so density() interpolates one channel, not 1 + 3 * n_coeffs.
        self.density_grid = DenseGrid(resolution, 1, density_init)
        self.sh_grid = DenseGrid(resolution, 3 * self.n_coeffs, 0.0)  # rgb = sigmoid(0) = 0.5
        self.tv_weight_density, self.tv_weight_sh = tv_weight_density, tv_weight_sh
        self.tv_samples = tv_samples  # None: exact TV over every voxel (slow for big grids)

    def _raw_density(self, u: torch.Tensor) -> torch.Tensor:
        return self.density_grid(to_signed(u))[:, 0]

    def _evaluate(self, u: torch.Tensor, d: torch.Tensor):
        x = to_signed(u)
        coeffs = self.sh_grid(x).reshape(-1, 3, self.n_coeffs)
        rgb = torch.sigmoid((coeffs * sh_basis(d, self.sh_degree)[:, None, :]).sum(-1))
        return self.density_grid(x)[:, 0], rgb, None

    def grid_parameters(self):
        return list(self.parameters())

    def regularization(self) -> torch.Tensor:
        return (self.tv_weight_density * self.density_grid.tv(self.tv_samples)
                + self.tv_weight_sh * self.sh_grid.tv(self.tv_samples))
