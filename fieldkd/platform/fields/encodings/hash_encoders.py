"""The hash-grid encoder of a resolved backend: our torch one, or tiny-cuda-nn's (imported only then)."""

from __future__ import annotations

from torch import nn

from .hashgrid import HashGridConfig, TorchHashGrid


def make_hash_grid(config: HashGridConfig, backend: str) -> nn.Module:
    """Encoder for a resolved backend name ("torch" or "tcnn")."""
    if backend == "torch":
        return TorchHashGrid(config)
    if backend == "tcnn":
        from .hashgrid_tcnn import TcnnHashGrid  # imports tinycudann lazily

        return TcnnHashGrid(config)
    raise ValueError(f"unknown hash backend {backend!r}")
