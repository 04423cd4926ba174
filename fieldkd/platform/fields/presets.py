"""Tiny configurations of every field for tests and smoke runs (seconds on a
CPU, not meant to reach good quality)."""

from __future__ import annotations

TINY_CONFIGS: dict[str, dict] = {
    "mlp": dict(depth=4, width=64, n_frequencies=6),
    "hash": dict(backend="torch", n_levels=8, log2_hashmap_size=14, max_resolution=128),
    "kplanes": dict(resolutions=(16, 32), n_features=8),
    "vm": dict(resolution=32, density_rank=4, app_rank=8),
    "grid": dict(resolution=24),
}
