"""Pure index math of the multiresolution hash grid (Instant-NGP).

Mirrors tiny-cuda-nn's GridEncoding so that a table trained by one backend
means the same thing to the other:

* level l has scale s_l = base_resolution * per_level_scale**l - 1 and
  resolution ceil(s_l) + 1 vertices per axis (float32 arithmetic);
* a point u in [0, 1] sits at pos = u * s_l + 0.5 in grid units (the half
  offset staggers the levels); its cell is floor(pos);
* a level whose res**3 vertices fit in 2**log2_hashmap_size entries is
  indexed densely (x + y*res + z*res**2) and stores next_multiple(res**3, 8)
  entries; finer levels use the spatial hash x*1 ^ y*2654435761 ^ z*805459861
  (uint32 arithmetic) and store 2**log2_hashmap_size entries;
* either index is taken modulo the level's entry count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

HASH_PRIMES = (1, 2654435761, 805459861)
_UINT32_MASK = 0xFFFFFFFF


def per_level_scale_for(base_resolution: int, max_resolution: int, n_levels: int) -> float:
    """Growth factor b with base * b**(L-1) = max (1 for a single level)."""
    if n_levels <= 1:
        return 1.0
    return math.exp((math.log(max_resolution) - math.log(base_resolution)) / (n_levels - 1))


def level_scales(n_levels: int, base_resolution: int, per_level_scale: float) -> np.ndarray:
    """Float32 scales s_l, computed the way tcnn's kernels compute them."""
    log2_scale = np.float32(math.log2(np.float32(per_level_scale)))
    levels = np.arange(n_levels, dtype=np.float32)
    return (np.exp2(levels * log2_scale) * np.float32(base_resolution) - np.float32(1.0)).astype(np.float32)


def _next_multiple(value: int, multiple: int) -> int:
    return (value + multiple - 1) // multiple * multiple


@dataclass(frozen=True)
class LevelLayout:
    scales: tuple[float, ...]  # float32 values, stored as Python floats
    resolutions: tuple[int, ...]  # vertices per axis
    sizes: tuple[int, ...]  # table entries per level
    offsets: tuple[int, ...]  # first entry of each level in the flat table
    dense: tuple[bool, ...]  # True where the level is indexed without hashing

    @property
    def n_entries(self) -> int:
        return self.offsets[-1] + self.sizes[-1]

    @property
    def n_dense(self) -> int:
        # Resolutions grow with the level, so the dense levels form a prefix.
        return sum(self.dense)


def level_layout(n_levels: int, base_resolution: int, per_level_scale: float,
                 log2_hashmap_size: int) -> LevelLayout:
    scales = level_scales(n_levels, base_resolution, per_level_scale)
    table = 1 << log2_hashmap_size
    resolutions, sizes, offsets, dense = [], [], [], []
    offset = 0
    for s in scales:
        res = int(math.ceil(float(s))) + 1
        fits = res ** 3 <= table
        size = _next_multiple(res ** 3, 8) if fits else table
        resolutions.append(res)
        sizes.append(size)
        offsets.append(offset)
        dense.append(fits)
        offset += size
    return LevelLayout(tuple(float(s) for s in scales), tuple(resolutions), tuple(sizes),
                       tuple(offsets), tuple(dense))


def spatial_hash(coords: torch.Tensor) -> torch.Tensor:
    """(..., 3) non-negative integer vertex coords -> uint32 hash as int64."""
    coords = coords.long()
    h = coords[..., 0] * HASH_PRIMES[0]
    h = h ^ (coords[..., 1] * HASH_PRIMES[1])
    h = h ^ (coords[..., 2] * HASH_PRIMES[2])
    # int64 products of coords < 2**31 keep their low 32 bits exact, and the
    # low bits of an XOR only depend on the low bits of its operands.
    return h & _UINT32_MASK


def dense_index(coords: torch.Tensor, resolution: int) -> torch.Tensor:
    """(..., 3) vertex coords -> x + y*res + z*res**2 (x fastest)."""
    coords = coords.long()
    return coords[..., 0] + resolution * (coords[..., 1] + resolution * coords[..., 2])


def level_index(coords: torch.Tensor, layout: LevelLayout, level: int) -> torch.Tensor:
    """Entry (within the level) that stores vertex ``coords`` of ``level``."""
    if layout.dense[level]:
        idx = dense_index(coords, layout.resolutions[level])
    else:
        idx = spatial_hash(coords)
    return idx % layout.sizes[level]


def cell_position(u: torch.Tensor, scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3) points in [0, 1], (L,) scales -> level-major cell corner
    (L, N, 3) int64 and fractional offset (L, N, 3) in [0, 1) (with autograd)."""
    pos = u[None, :, :] * scales[:, None, None] + 0.5
    cell = torch.floor(pos)
    return cell.long(), pos - cell
