"""What every radiance field returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

# Width of the shared intermediate feature: raw density + 15 geometric features.
FEATURE_DIM = 16


@dataclass
class FieldOutput:
    raw_density: torch.Tensor  # (N,) pre-activation density (for an SDF field: -sdf)
    density: torch.Tensor  # (N,) >= 0, zero outside the field's aabb
    rgb: torch.Tensor  # (N, 3) in [0, 1]
    feature: torch.Tensor | None  # (N, 16), or None for fields without one (grid)
    # Further per-sample quantities, composited by the renderer like the colour:
    # "normal" (N, 3) world-space unit normals, "uncertainty" (N,) >= 0.
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
