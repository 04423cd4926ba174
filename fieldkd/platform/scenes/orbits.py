"""Deterministic camera placements for object-centric scenes (z-up world).

Cameras sit on a sphere around the origin and look at it. Train views follow a
golden-angle spiral over the elevation band (even coverage); val views lie on
a ring at mid elevation; test views are random in the band. Each split draws
from its own seed stream, so the splits never share a view. The radius and the
band (degrees above the xy plane) are options; ``RADIUS`` and ``ELEVATION_DEG``
are the defaults.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .cameras import look_at

GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))
SPLIT_STREAMS = {"train": 0, "val": 1, "test": 2}
RADIUS = 4.0
ELEVATION_DEG = (10.0, 60.0)


def _positions(elevation: np.ndarray, azimuth: np.ndarray, radius: float) -> np.ndarray:
    return radius * np.stack(
        [np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)],
        axis=-1,
    )


def spiral(n: int, elev_min: float, elev_max: float, phase: float) -> tuple[np.ndarray, np.ndarray]:
    """Golden-angle spiral; uniform in sin(elevation) gives equal area per view."""
    z = np.sin(elev_min) + (np.arange(n) + 0.5) / max(n, 1) * (np.sin(elev_max) - np.sin(elev_min))
    return np.arcsin(z), phase + GOLDEN_ANGLE * np.arange(n)


def ring(n: int, elevation: float, phase: float) -> tuple[np.ndarray, np.ndarray]:
    return np.full(n, elevation), phase + 2 * math.pi * np.arange(n) / max(n, 1)


def random_band(n: int, elev_min: float, elev_max: float, rng: np.random.Generator):
    z = rng.uniform(np.sin(elev_min), np.sin(elev_max), n)
    return np.arcsin(z), rng.uniform(0.0, 2 * math.pi, n)


def object_cameras(counts: dict[str, int], radius: float = RADIUS, elevation_deg=ELEVATION_DEG,
                   seed: int = 0) -> dict[str, torch.Tensor]:
    """(N, 4, 4) OpenGL camera-to-world matrices per split, looking at the origin."""
    lo, hi = (math.radians(e) for e in elevation_deg)
    poses = {}
    for split, n in counts.items():
        rng = np.random.default_rng([seed, SPLIT_STREAMS.get(split, len(SPLIT_STREAMS))])
        if split == "train":
            elev, azim = spiral(n, lo, hi, rng.uniform(0, 2 * math.pi))
        elif split == "val":
            elev, azim = ring(n, 0.5 * (lo + hi), rng.uniform(0, 2 * math.pi))
        else:
            elev, azim = random_band(n, lo, hi, rng)
        eyes = torch.from_numpy(_positions(elev, azim, radius)).float()
        poses[split] = torch.stack([look_at(e, torch.zeros(3)) for e in eyes]) if n else torch.zeros(0, 4, 4)
    return poses
