"""Heads shared by the fields: colour, and the uncertainty of UNIKD."""

from __future__ import annotations

import torch
import torch.nn.functional as F
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


class UncertaintyHead(nn.Module):
    """MLP on a field's feature -> softplus -> beta >= 0 per sample (UNIKD).

    beta is volume-rendered with the colour's weights; a large rendered beta
    marks views the field is unsure of. The head reads the feature detached,
    and the renderer composites beta with detached weights: the loss's log
    term then trains the head alone instead of emptying the field to make
    beta small (measured on the indoor room, SDF, 150 steps: 18.8 dB test
    PSNR with both, 14.9 dB with the weights detached only, 15.2 dB with
    neither; 19.5 dB without a head).
    """

    @classmethod
    def optional(cls, enabled: bool, in_dim: int) -> "UncertaintyHead | None":
        """The head, or None. It is initialised from a fork of the global RNG, so
        switching it on leaves every other parameter of a seeded field unchanged."""
        if not enabled:
            return None
        with torch.random.fork_rng(devices=[]):
            return cls(in_dim)

    def __init__(self, in_dim: int, n_layers: int = 2, hidden: int = 64):
        super().__init__()
        self.mlp = make_mlp(in_dim, 1, hidden, n_layers)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return F.softplus(self.mlp(feature.detach())[..., 0])
