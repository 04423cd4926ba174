"""Thin wrapper over ``tinycudann.Encoding`` with the same config and the
same flat-parameter interface as :class:`TorchHashGrid` (CUDA only)."""

from __future__ import annotations

import torch
from torch import nn

from .hashgrid import HashGridConfig

_TCNN_FEATURES_PER_LEVEL = (1, 2, 4, 8)


class TcnnHashGrid(nn.Module):
    backend = "tcnn"

    def __init__(self, config: HashGridConfig | None = None, seed: int = 1337):
        super().__init__()
        import tinycudann as tcnn

        self.config = config or HashGridConfig()
        if self.config.n_features_per_level not in _TCNN_FEATURES_PER_LEVEL:
            raise ValueError(
                f"tcnn needs n_features_per_level in {_TCNN_FEATURES_PER_LEVEL}, "
                f"got {self.config.n_features_per_level}"
            )
        self.layout = self.config.layout()
        self.out_dim = self.config.out_dim
        # fp32 parameters and outputs keep the two backends numerically comparable.
        try:
            self.encoding = tcnn.Encoding(3, self.config.tcnn_config(), seed=seed, dtype=torch.float32)
        except TypeError:  # tinycudann releases before the dtype argument
            self.encoding = tcnn.Encoding(3, self.config.tcnn_config(), seed=seed)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.encoding(u.float().contiguous()).float()

    def flat_params(self) -> torch.Tensor:
        return self.encoding.params

    @torch.no_grad()
    def load_flat_params(self, flat: torch.Tensor) -> None:
        self.encoding.params.copy_(flat.reshape(-1).to(self.encoding.params))
