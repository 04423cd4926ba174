"""A multi-view sample whose geometry is known exactly: a textured fronto-parallel plane seen
by a reference camera and sources shifted beside it, rendered analytically. For tests and
smoke runs; the sample follows the multi-view sample contract."""

from __future__ import annotations

import math

import torch

# Source camera centres in units of the baseline: right, left, up, down, then further out.
_OFFSETS = [(1, 0), (-1, 0), (0, 1), (0, -1), (2, 0), (-2, 0), (0, 2), (0, -2)]


def plane_texture(x: torch.Tensor, y: torch.Tensor, scale: float, seed: int = 0,
                  wavelengths: tuple[float, float] = (12.0, 32.0)) -> torch.Tensor:
    """RGB in [0.1, 0.9] at plane coordinates (x, y): a sum of a few sinusoids with
    wavelengths between ``wavelengths`` times ``scale`` (smooth at the pixel level, and
    still smooth at the network's 1/4 level; textured everywhere)."""
    gen = torch.Generator().manual_seed(seed)
    lo, hi = wavelengths
    out = torch.zeros(3, *x.shape)
    for channel in range(3):
        for _ in range(3):
            angle = float(torch.rand((), generator=gen)) * math.pi
            wavelength = (lo + (hi - lo) * float(torch.rand((), generator=gen))) * scale
            phase = float(torch.rand((), generator=gen)) * 2 * math.pi
            u = x * math.cos(angle) + y * math.sin(angle)
            out[channel] += torch.sin(2 * math.pi * u / wavelength + phase)
    return 0.5 + 0.4 * out / 3


def plane_scene(height: int = 32, width: int = 64, n_src: int = 2, depth: float = 4.0,
                baseline: float = 0.25, depth_range: tuple[float, float] = (2.0, 8.0),
                seed: int = 0) -> dict:
    """One sample: the plane z = ``depth`` in the reference camera's frame (which is the world
    frame), sources translated by ``baseline`` (right, left, up, down, ...), all looking
    along +z with the same intrinsics (focal length = width)."""
    if n_src > len(_OFFSETS):
        raise ValueError(f"at most {len(_OFFSETS)} source views, got {n_src}")
    f = float(width)
    k = torch.tensor([[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]])
    centres = [(0.0, 0.0)] + [(baseline * ox, baseline * oy) for ox, oy in _OFFSETS[:n_src]]
    yy, xx = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                            indexing="ij")
    images, extrinsics = [], []
    for cx, cy in centres:
        # Where each pixel's ray meets the plane (the plane is fronto-parallel to every camera).
        px = cx + depth * (xx - k[0, 2]) / f
        py = cy + depth * (yy - k[1, 2]) / f
        images.append(plane_texture(px, py, scale=depth / f, seed=seed))
        e = torch.eye(4)
        e[0, 3], e[1, 3] = -cx, -cy  # world -> camera: subtract the centre
        extrinsics.append(e)
    return {"images": torch.stack(images), "intrinsics": k.expand(len(centres), 3, 3).clone(),
            "extrinsics": torch.stack(extrinsics), "depth_min": torch.tensor(depth_range[0]),
            "depth_max": torch.tensor(depth_range[1]), "depth": torch.full((height, width), depth),
            "mask": torch.ones(height, width, dtype=torch.bool), "scan": "plane", "view": 0,
            "source_views": torch.arange(1, n_src + 1)}


def collate(samples: list[dict]) -> dict:
    """Stack samples on a leading batch dimension (tensors stacked, other values listed)."""
    out = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        out[key] = torch.stack([torch.as_tensor(x) for x in values]) if torch.is_tensor(values[0]) else values
    return out
