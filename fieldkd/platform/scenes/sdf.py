"""Signed distance functions of analytic primitives, their albedo textures and unions.

Every shape function takes points ``p`` of shape (N, 3) in the primitive's local
frame and returns (N,) signed distances (negative inside). All of them are exact
distances (or lower bounds), so the min-union is safe for sphere tracing.
Albedo functions take the same local points and return (N, 3) RGB in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

Tensor = torch.Tensor


# --- shapes -----------------------------------------------------------------

def sphere(p: Tensor, radius: float) -> Tensor:
    return p.norm(dim=-1) - radius


def box(p: Tensor, half: Sequence[float]) -> Tensor:
    q = p.abs() - torch.as_tensor(half, dtype=p.dtype)
    return q.clamp(min=0).norm(dim=-1) + q.amax(dim=-1).clamp(max=0)


def rounded_box(p: Tensor, half: Sequence[float], radius: float) -> Tensor:
    return box(p, [h - radius for h in half]) - radius


def torus(p: Tensor, major: float, minor: float) -> Tensor:
    """Ring around the local z axis."""
    ring = p[:, :2].norm(dim=-1) - major
    return torch.stack([ring, p[:, 2]], dim=-1).norm(dim=-1) - minor


def capsule(p: Tensor, a: Sequence[float], b: Sequence[float], radius: float) -> Tensor:
    a = torch.as_tensor(a, dtype=p.dtype)
    ba = torch.as_tensor(b, dtype=p.dtype) - a
    pa = p - a
    h = ((pa @ ba) / (ba @ ba)).clamp(0.0, 1.0)
    return (pa - h[:, None] * ba).norm(dim=-1) - radius


def cylinder(p: Tensor, radius: float, half_height: float) -> Tensor:
    """Capped cylinder along the local z axis."""
    d = torch.stack([p[:, :2].norm(dim=-1) - radius, p[:, 2].abs() - half_height], dim=-1)
    return d.amax(dim=-1).clamp(max=0) + d.clamp(min=0).norm(dim=-1)


def plane(p: Tensor, height: float = 0.0) -> Tensor:
    """Ground plane z = height (z-up world); solid below."""
    return p[:, 2] - height


# --- albedo textures --------------------------------------------------------

def solid(p: Tensor, color: Sequence[float]) -> Tensor:
    return torch.as_tensor(color, dtype=p.dtype).expand(p.shape[0], 3)


def checker(p: Tensor, color_a, color_b, size: float, phase: float = 0.137) -> Tensor:
    # The phase keeps cell boundaries off flat faces, where floor() would flicker.
    cells = torch.floor(p / size + phase).sum(dim=-1)
    pick = torch.remainder(cells, 2.0)[:, None]
    a = torch.as_tensor(color_a, dtype=p.dtype)
    b = torch.as_tensor(color_b, dtype=p.dtype)
    return a * (1 - pick) + b * pick


def stripes(p: Tensor, color_a, color_b, period: float, axis=(0.0, 0.0, 1.0)) -> Tensor:
    axis = torch.as_tensor(axis, dtype=p.dtype)
    axis = axis / axis.norm()
    # Hard edges on purpose: high-frequency detail that rewards good fields.
    pick = (torch.remainder(p @ axis / period, 1.0) < 0.5).to(p.dtype)[:, None]
    a = torch.as_tensor(color_a, dtype=p.dtype)
    b = torch.as_tensor(color_b, dtype=p.dtype)
    return a * (1 - pick) + b * pick


def dots(p: Tensor, color_a, color_b, size: float, radius: float = 0.3, phase: float = 0.137) -> Tensor:
    """Spots of ``color_b`` on ``color_a``: balls of ``radius`` x ``size`` at the centres of the
    cubic cells of edge ``size`` (a surface shows them as small round dots)."""
    offset = torch.remainder(p / size + phase, 1.0) - 0.5  # from the cell's centre, in cells
    pick = (offset.norm(dim=-1) < radius).to(p.dtype)[:, None]
    a = torch.as_tensor(color_a, dtype=p.dtype)
    b = torch.as_tensor(color_b, dtype=p.dtype)
    return a * (1 - pick) + b * pick


# --- placement --------------------------------------------------------------

def rotation(rx: float = 0.0, ry: float = 0.0, rz: float = 0.0) -> Tensor:
    """Rotation matrix Rz @ Ry @ Rx from angles in degrees (columns: local axes in world)."""
    x, y, z = (math.radians(a) for a in (rx, ry, rz))
    cx, sx, cy, sy, cz, sz = math.cos(x), math.sin(x), math.cos(y), math.sin(y), math.cos(z), math.sin(z)
    rot_x = torch.tensor([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    rot_y = torch.tensor([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rot_z = torch.tensor([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return (rot_z @ rot_y @ rot_x).float()


@dataclass(frozen=True)
class Primitive:
    """A coloured shape placed in the world by a translation and a rotation."""

    shape: Callable[[Tensor], Tensor]  # local points -> signed distance
    albedo: Callable[[Tensor], Tensor]  # local points -> RGB
    center: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rotation: Tensor | None = None  # (3, 3), columns are the local axes in world
    specular: float = 0.0  # strength of the view-dependent highlight

    def local(self, p: Tensor) -> Tensor:
        q = p - torch.as_tensor(self.center, dtype=p.dtype)
        # Row vectors: q @ R applies R^T, world -> local.
        return q if self.rotation is None else q @ self.rotation.to(p.dtype)

    def distance(self, p: Tensor) -> Tensor:
        return self.shape(self.local(p))

    def color(self, p: Tensor) -> Tensor:
        return self.albedo(self.local(p))


SceneSpec = list[Primitive]


def union_distance(spec: SceneSpec, p: Tensor) -> Tensor:
    d = spec[0].distance(p)
    for prim in spec[1:]:
        d = torch.minimum(d, prim.distance(p))
    return d


def union(spec: SceneSpec, p: Tensor) -> tuple[Tensor, Tensor]:
    """Distance to the union and the index of the nearest primitive."""
    d, index = torch.stack([prim.distance(p) for prim in spec]).min(dim=0)
    return d, index


def normals(spec: SceneSpec, p: Tensor, h: float = 1e-3) -> Tensor:
    """Unit gradient of the union SDF by central differences."""
    offsets = torch.eye(3, dtype=p.dtype) * h
    grad = torch.stack(
        [union_distance(spec, p + o) - union_distance(spec, p - o) for o in offsets], dim=-1
    )
    return grad / grad.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def albedo(spec: SceneSpec, p: Tensor, index: Tensor) -> Tensor:
    """Albedo of the primitive ``index`` (per point) at points ``p``."""
    out = torch.zeros_like(p)
    for k, prim in enumerate(spec):
        mask = index == k
        if mask.any():
            out[mask] = prim.color(p[mask])
    return out


def specular(spec: SceneSpec, index: Tensor) -> Tensor:
    strengths = torch.tensor([prim.specular for prim in spec], dtype=torch.float32)
    return strengths[index]
