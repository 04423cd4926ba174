"""K-Planes field: multiscale planes (Hadamard across planes, concat across
scales) -> small MLP -> 16-d feature."""

from __future__ import annotations

from typing import Sequence

import torch

from ..encodings.kplanes import KPlanesEncoding
from ..nets import make_mlp
from ..output import FEATURE_DIM
from ..radiance import FeatureField, to_signed
from ..registry import register_field


@register_field("kplanes")
class KPlanesField(FeatureField):
    def __init__(self, aabb, *, resolutions: Sequence[int] = (32, 64, 128), n_features: int = 16,
                 init_range: Sequence[float] = (0.1, 0.5), decoder_layers: int = 2,
                 decoder_hidden: int = 64, tv_weight: float = 1e-4, grid_lr_scale: float = 1.0,
                 **common):
        super().__init__(aabb, grid_lr_scale=grid_lr_scale, **common)
        self.encoding = KPlanesEncoding(tuple(resolutions), n_features, tuple(init_range))
        self.decoder = make_mlp(self.encoding.out_dim, FEATURE_DIM, decoder_hidden, decoder_layers)
        self.tv_weight = tv_weight

    def encode_feature(self, u: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoding(to_signed(u)))

    def grid_parameters(self):
        return list(self.encoding.parameters())

    def regularization(self) -> torch.Tensor:
        return self.tv_weight * self.encoding.tv()
