"""The hash-grid encoder of a resolved backend: our torch one, or tiny-cuda-nn's (imported only then)."""

from __future__ import annotations

from torch import nn

from .hashgrid import HashGridConfig, TorchHashGrid


HASH_KERNELS = ("auto", "compiled", "torch")


def make_hash_grid(config: HashGridConfig, backend: str, kernel: str = "auto") -> nn.Module:
    """Encoder for a resolved backend name ("torch" or "tcnn"). ``kernel`` picks what the torch
    backend runs on the CPU: "auto" the compiled kernel where it is built, "compiled" that kernel
    (an error where it is not built), "torch" torch operations only."""
    if kernel not in HASH_KERNELS:
        raise ValueError(f"unknown hash kernel {kernel!r}; choose one of {HASH_KERNELS}")
    if backend == "torch":
        return TorchHashGrid(config, compiled={"auto": None, "compiled": True, "torch": False}[kernel])
    if backend == "tcnn":
        from .hashgrid_tcnn import TcnnHashGrid  # imports tinycudann lazily

        return TcnnHashGrid(config)
    raise ValueError(f"unknown hash backend {backend!r}")
