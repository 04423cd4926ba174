"""TensoRF VM field: density components give feature[0]; appearance
components (3 x app_rank) go through a basis matrix to the 15 geo features."""

from __future__ import annotations

import torch
from torch import nn

from ..encodings.vm import VMEncoding
from ..output import FEATURE_DIM
from ..radiance import FeatureField, to_signed
from ..registry import register_field


@register_field("vm")
class VMField(FeatureField):
    def __init__(self, aabb, *, resolution: int = 128, density_rank: int = 16, app_rank: int = 48,
                 l1_weight: float = 8e-5, tv_weight: float = 0.0, grid_lr_scale: float = 20.0,
                 **common):
        # grid_lr_scale 20: TensoRF trains its tensors at 0.02 and its basis/MLP at 1e-3.
        super().__init__(aabb, grid_lr_scale=grid_lr_scale, **common)
        self.encoding = VMEncoding(resolution, density_rank, app_rank)
        self.basis = nn.Linear(3 * app_rank, FEATURE_DIM - 1, bias=False)
        self.l1_weight, self.tv_weight = l1_weight, tv_weight

    def encode_feature(self, u: torch.Tensor) -> torch.Tensor:
        x = to_signed(u)
        raw = self.encoding.raw_density(x)
        return torch.cat([raw[:, None], self.basis(self.encoding.app_features(x))], dim=-1)

    def _raw_density(self, u: torch.Tensor) -> torch.Tensor:
        # Density needs only the density components: skip appearance entirely.
        return self.encoding.raw_density(to_signed(u)) + self.feature_offset[0]

    def grid_parameters(self):
        return list(self.encoding.parameters())

    def regularization(self) -> torch.Tensor:
        enc = self.encoding
        reg = self.l1_weight * enc.density.l1()
        if self.tv_weight:
            reg = reg + self.tv_weight * (enc.density.tv() + enc.appearance.tv())
        return reg
