"""What every radiance field returns."""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Width of the shared intermediate feature: raw density + 15 geometric features.
FEATURE_DIM = 16


@dataclass
class FieldOutput:
    raw_density: torch.Tensor  # (N,) pre-activation density
    density: torch.Tensor  # (N,) >= 0, zero outside the field's aabb
    rgb: torch.Tensor  # (N, 3) in [0, 1]
    feature: torch.Tensor | None  # (N, 16), or None for fields without one (grid)
