"""The colour head shared by all feature-based fields."""

from __future__ import annotations

import torch
from torch import nn

from .encodings.frequency import frequency_dim, frequency_encode
from .encodings.sh import sh_basis, sh_dim
from .nets import make_mlp


class DirectionEncoding(nn.Module):
    """"sh": real SH up to band ``degree`` ((degree+1)**2 values; 3 -> 16 as in
    Instant-NGP). "frequency": NeRF encoding with ``degree`` frequencies."""

    def __init__(self, kind: str = "sh", degree: int = 3):
        super().__init__()
        if kind == "sh":
            self.out_dim = sh_dim(degree)
        elif kind == "frequency":
            self.out_dim = frequency_dim(3, degree)
        else:
            raise ValueError(f"unknown dir_encoding {kind!r}; choose 'sh' or 'frequency'")
        self.kind, self.degree = kind, degree

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        if self.kind == "sh":
            return sh_basis(d, self.degree)
        return frequency_encode(d, self.degree)


class ColourHead(nn.Module):
    """MLP on concat(geometric features, encoded view direction) -> sigmoid RGB."""

    def __init__(self, geo_dim: int = 15, dir_encoding: str = "sh", dir_degree: int = 3,
                 n_layers: int = 3, hidden: int = 64):
        super().__init__()
        self.dir_encoding = DirectionEncoding(dir_encoding, dir_degree)
        self.mlp = make_mlp(geo_dim + self.dir_encoding.out_dim, 3, hidden, n_layers)

    def forward(self, geo: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        h = torch.cat([geo, self.dir_encoding(d).to(geo.dtype)], dim=-1)
        return torch.sigmoid(self.mlp(h))
