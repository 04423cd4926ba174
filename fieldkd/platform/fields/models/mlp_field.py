"""NeRF style field: frequency encoding -> 8x256 MLP with a skip -> 16-d feature."""

from __future__ import annotations

from typing import Sequence

import torch

from ..encodings.frequency import FrequencyEncoding
from ..nets import SkipMLP
from ..output import FEATURE_DIM
from ..radiance import FeatureField, to_signed
from ..registry import register_field


@register_field("mlp")
class MLPField(FeatureField):
    def __init__(self, aabb, *, n_frequencies: int = 10, depth: int = 8, width: int = 256,
                 skips: Sequence[int] = (4,), **common):
        super().__init__(aabb, **common)
        self.encoding = FrequencyEncoding(3, n_frequencies)
        self.trunk = SkipMLP(self.encoding.out_dim, FEATURE_DIM, width, depth, tuple(skips))

    def encode_feature(self, u: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.encoding(to_signed(u)))
