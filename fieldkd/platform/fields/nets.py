"""Plain PyTorch MLPs used by the fields."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def make_mlp(in_dim: int, out_dim: int, hidden: int = 64, n_layers: int = 2) -> nn.Sequential:
    """``n_layers`` Linear layers (so n_layers - 1 hidden ReLU layers), no output activation."""
    if n_layers < 1:
        raise ValueError("an MLP needs at least one layer")
    dims = [in_dim] + [hidden] * (n_layers - 1) + [out_dim]
    layers: list[nn.Module] = []
    for i in range(n_layers):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < n_layers - 1:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class SkipMLP(nn.Module):
    """NeRF's trunk: ``depth`` ReLU layers of ``width``; after each layer index
    in ``skips`` the network input is concatenated back in; then a linear
    output layer."""

    def __init__(self, in_dim: int, out_dim: int, width: int = 256, depth: int = 8,
                 skips: Sequence[int] = (4,)):
        super().__init__()
        self.skips = tuple(skips)
        layers = [nn.Linear(in_dim, width)]
        for i in range(1, depth):
            layers.append(nn.Linear(width + (in_dim if i - 1 in self.skips else 0), width))
        self.layers = nn.ModuleList(layers)
        self.out = nn.Linear(width, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for i, layer in enumerate(self.layers):
            h = torch.relu(layer(h))
            if i in self.skips and i < len(self.layers) - 1:
                h = torch.cat([x, h], dim=-1)
        return self.out(h)
