"""Multiresolution hash-grid encoding: config, pure-PyTorch backend, factory.

Both backends take (N, 3) points in [0, 1] and return (N, n_levels *
n_features_per_level) features ordered level-major (all features of level 0
first), with the table laid out as tcnn lays out its parameters, so
``flat_params()`` of one backend can be loaded into the other.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from .gather import weighted_gather
from .hashgrid_cpu import compiled_kernel_built, encode_on_cpu, kernel_applies, level_table
from .hashgrid_math import HASH_PRIMES, LevelLayout, cell_position, level_layout, per_level_scale_for

INIT_RANGE = 1e-4  # tcnn initialises every table entry uniformly in +-1e-4


@dataclass(frozen=True)
class HashGridConfig:
    n_levels: int = 16
    n_features_per_level: int = 2
    log2_hashmap_size: int = 17  # CPU default; Instant-NGP uses 19
    base_resolution: int = 16
    max_resolution: int | None = 512
    # An explicit per_level_scale wins; otherwise it is derived from
    # max_resolution, and with neither it is tcnn's default 2.0.
    per_level_scale: float | None = None

    def __post_init__(self):
        if self.n_levels < 1 or self.n_features_per_level < 1 or self.base_resolution < 1:
            raise ValueError(f"hash grid sizes must be positive: {self}")
        # Indices are int32 (as in tcnn, which uses uint32 offsets).
        if not 1 <= self.log2_hashmap_size <= 26:
            raise ValueError(f"log2_hashmap_size must be in [1, 26], got {self.log2_hashmap_size}")

    def resolved_per_level_scale(self) -> float:
        if self.per_level_scale is not None:
            return float(self.per_level_scale)
        if self.max_resolution is not None:
            return per_level_scale_for(self.base_resolution, self.max_resolution, self.n_levels)
        return 2.0

    @property
    def out_dim(self) -> int:
        return self.n_levels * self.n_features_per_level

    def layout(self) -> LevelLayout:
        return level_layout(self.n_levels, self.base_resolution, self.resolved_per_level_scale(),
                            self.log2_hashmap_size)

    def tcnn_config(self) -> dict:
        return {
            "otype": "HashGrid",
            "n_levels": self.n_levels,
            "n_features_per_level": self.n_features_per_level,
            "log2_hashmap_size": self.log2_hashmap_size,
            "base_resolution": self.base_resolution,
            "per_level_scale": self.resolved_per_level_scale(),
            "interpolation": "Linear",
        }

    def to_dict(self) -> dict:
        return asdict(self)


def _axis_pairs(cell: torch.Tensor, dim: int) -> torch.Tensor:
    """(L, N, 3) cells -> (L, N, 2): lower and upper vertex along axis ``dim``."""
    c = cell[..., dim]
    return torch.stack([c, c + 1], dim=-1)


def _combine(t0, t1, t2, op, out=None):
    """Per-axis (L, N, 2) terms -> (L, N, 8) corner values. Corner
    k = 4*b0 + 2*b1 + b2, where bit b_d selects the upper vertex on axis d."""
    partial = op(t0[..., :, None, None], t1[..., None, :, None])
    if out is None:
        return op(partial, t2[..., None, None, :]).flatten(-3)
    op(partial, t2[..., None, None, :], out=out.unflatten(-1, (2, 2, 2)))
    return out


def corner_weights(frac: torch.Tensor) -> torch.Tensor:
    """(L, N, 3) fractional offsets -> (L, N, 8) trilinear weights (same corner order)."""
    w = torch.stack([1.0 - frac, frac], dim=-1)  # (L, N, 3, 2)
    return _combine(w[..., 0, :], w[..., 1, :], w[..., 2, :], torch.mul)


def corner_indices(cell: torch.Tensor, layout: LevelLayout) -> torch.Tensor:
    """(L, N, 3) int64 cells -> (L, N, 8) int32 row of each corner in the flat table.

    Terms are reduced per axis before the corners are combined, so the big
    (L, N, 8) arrays are int32: for the hashed levels the table size T is a
    power of two and (a ^ b ^ c) mod T == (a mod T) ^ (b mod T) ^ (c mod T);
    the dense levels' indices are below res**3 + res**2 + res < 2**31.
    """
    device, n_levels = cell.device, cell.shape[0]
    k = layout.n_dense
    idx = torch.empty(n_levels, cell.shape[1], 8, dtype=torch.int32, device=device)
    if k:  # coarse levels: x + y*res + z*res^2, then modulo the level size
        res = torch.tensor(layout.resolutions[:k], device=device)[:, None, None]
        c = cell[:k]
        t = [(_axis_pairs(c, d) * res**d).int() for d in range(3)]
        _combine(*t, torch.add, out=idx[:k])
        sizes = torch.tensor(layout.sizes[:k], dtype=torch.int32, device=device)[:, None, None]
        idx[:k] %= sizes
    if k < n_levels:  # fine levels: spatial hash modulo the (power-of-two) table size
        mask = layout.sizes[-1] - 1
        c = cell[k:]
        t = [((_axis_pairs(c, d) * HASH_PRIMES[d]) & mask).int() for d in range(3)]
        _combine(*t, torch.bitwise_xor, out=idx[k:])
    idx += torch.tensor(layout.offsets, dtype=torch.int32, device=device)[:, None, None]
    return idx


class TorchHashGrid(nn.Module):
    """PyTorch hash grid; runs anywhere, all levels in one batched gather.

    On the CPU it takes the compiled kernel where that is built and applies (``compiled``:
    None means whenever it can, False never); the results are the same.
    """

    backend = "torch"

    def __init__(self, config: HashGridConfig | None = None, compiled: bool | None = None):
        super().__init__()
        self.compiled = compiled_kernel_built() if compiled is None else bool(compiled)
        if self.compiled and not compiled_kernel_built():
            raise RuntimeError("the hash grid's compiled CPU kernel is not built "
                               "(reinstall fieldkd where a C compiler is available)")
        self.config = config or HashGridConfig()
        self.layout = self.config.layout()
        if self.layout.n_entries >= 2**31:
            raise ValueError("hash grid table too large for int32 indices")
        self.out_dim = self.config.out_dim
        # Derived from the config, so kept out of the state dict.
        self.register_buffer("scales", torch.tensor(self.layout.scales, dtype=torch.float32), persistent=False)
        self.register_buffer("levels", level_table(self.layout), persistent=False)
        table = torch.empty(self.layout.n_entries, self.config.n_features_per_level)
        self.table = nn.Parameter(table.uniform_(-INIT_RANGE, INIT_RANGE))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        if self.compiled and kernel_applies(u, self.table):
            return encode_on_cpu(u, self.table, self.scales, self.levels)
        cell, frac = cell_position(u.float(), self.scales)
        idx = corner_indices(cell, self.layout)
        w = corner_weights(frac)
        n_levels, n = idx.shape[:2]
        # Level-major rows keep each level's slice of the table hot in cache.
        out = weighted_gather(self.table, idx.reshape(n_levels * n, 8), w.reshape(n_levels * n, 8))
        return out.reshape(n_levels, n, -1).transpose(0, 1).reshape(n, self.out_dim)

    def flat_params(self) -> torch.Tensor:
        """The table in tcnn's flat parameter layout (entry-major, feature-minor)."""
        return self.table.reshape(-1)

    @torch.no_grad()
    def load_flat_params(self, flat: torch.Tensor) -> None:
        self.table.copy_(flat.reshape(self.table.shape).to(self.table))
