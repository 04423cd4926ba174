"""Instant-NGP style field: hash grid -> sigma net (raw density + 15 geo features)."""

from __future__ import annotations

import torch

from ..backend import pick_hash_backend
from ..encodings.hash_encoders import make_hash_grid
from ..encodings.hashgrid import HashGridConfig
from ..nets import make_mlp
from ..output import FEATURE_DIM
from ..radiance import FeatureField
from ..registry import register_field


@register_field("hash")
class HashField(FeatureField):
    def __init__(self, aabb, *, backend: str = "auto", n_levels: int = 16,
                 n_features_per_level: int = 2, log2_hashmap_size: int = 17,
                 base_resolution: int = 16, max_resolution: int | None = 512,
                 per_level_scale: float | None = None, sigma_layers: int = 2,
                 sigma_hidden: int = 64, grid_lr_scale: float = 1.0, hash_kernel: str = "auto", **common):
        super().__init__(aabb, grid_lr_scale=grid_lr_scale, **common)
        self.backend = pick_hash_backend(backend)
        self.grid_config = HashGridConfig(n_levels, n_features_per_level, log2_hashmap_size,
                                          base_resolution, max_resolution, per_level_scale)
        self.encoding = make_hash_grid(self.grid_config, self.backend, hash_kernel)
        self.sigma_net = make_mlp(self.grid_config.out_dim, FEATURE_DIM, sigma_hidden, sigma_layers)

    def encode_feature(self, u: torch.Tensor) -> torch.Tensor:
        return self.sigma_net(self.encoding(u))

    def grid_parameters(self):
        return list(self.encoding.parameters())
