"""Named indoor scenes: a room interior with objects on the floor, in world units (metres).

The room is a negated box SDF (free space inside, solid beyond the walls), so
the cameras of :mod:`trajectory` can walk inside it; every pixel sees a
surface. Floor, ceiling and each wall have their own texture so that views of
different walls are told apart. A point light under the ceiling lights the
interior from inside. ``world_from_scene`` maps the normalised scene cube
[-1, 1]^3 onto a cube holding the room (MonoSDF's ``scale_mat``). Adding a room
means adding one function and one registry line.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import numpy as np
import torch

from . import sdf
from .sdf import Primitive, SceneSpec
from .similarity import cube_to_box
from .tracer import Light
from .trajectory import LoopPath

Tensor = torch.Tensor
Texture = Callable[[Tensor], Tensor]
# The walks cover four fifths of their ellipse: they never come back to where they
# began, so what an incremental run forgets of its first views is not re-learned at the end.
OPEN_TURN_DEG = 288.0


@dataclass(frozen=True)
class Room:
    """A room scene: the primitives (room first), its box, light and camera path, all in world units."""

    primitives: SceneSpec
    low: tuple[float, float, float]
    high: tuple[float, float, float]
    light: Light
    path: LoopPath
    margin: float = 1.1  # the normalised cube holds the room with this much room to spare

    @property
    def world_from_scene(self) -> np.ndarray:
        return cube_to_box(self.low, self.high, self.margin)

    def trace_box(self, pad: float = 0.05) -> list[list[float]]:
        """A box a little larger than the room: rays end beyond the walls they hit."""
        return [[v - pad for v in self.low], [v + pad for v in self.high]]


def inside_box(p: Tensor, half) -> Tensor:
    """Negated box: positive inside (distance to the nearest face), negative beyond the faces."""
    return -sdf.box(p, half)


def room_albedo(p: Tensor, half, floor: Texture, ceiling: Texture, walls: tuple[Texture, ...]) -> Tensor:
    """Texture of the nearest face of a room centred at the origin.

    ``walls`` are for -x, +x, -y, +y. Textures get the room-local point.
    """
    half_t = torch.as_tensor(half, dtype=p.dtype)
    gap = half_t - p.abs()  # distance to the face on each axis
    axis = gap.argmin(dim=-1)
    positive = torch.gather(p, 1, axis[:, None])[:, 0] > 0
    face = torch.where(axis == 2, 4 + positive.long(), 2 * axis + positive.long())
    out = torch.zeros_like(p)
    for k, texture in enumerate((*walls, floor, ceiling)):
        mask = face == k
        if mask.any():
            out[mask] = texture(p[mask])
    return out


def wainscot(p: Tensor, upper: Texture, lower: Texture, height: float) -> Tensor:
    """Wall texture with a band below local height ``height`` (room-local z)."""
    below = (p[:, 2] < height)[:, None]
    return torch.where(below, lower(p), upper(p))


def room(low, high, floor: Texture, ceiling: Texture, walls: tuple[Texture, ...]) -> Primitive:
    low_t, high_t = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    half = tuple((0.5 * (high_t - low_t)).tolist())
    centre = tuple((0.5 * (high_t + low_t)).tolist())
    return Primitive(partial(inside_box, half=half),
                     partial(room_albedo, half=half, floor=floor, ceiling=ceiling, walls=walls),
                     center=centre)


def _stripes(a, b, period, axis):
    return partial(sdf.stripes, color_a=a, color_b=b, period=period, axis=axis)


def _checker(a, b, size):
    return partial(sdf.checker, color_a=a, color_b=b, size=size)


def indoor_room() -> Room:
    """4 x 3.2 x 2.6 m room with its corner at the world origin; table, ball, column, cabinet, stool."""
    low, high = (0.0, 0.0, 0.0), (4.0, 3.2, 2.6)
    band = -1.3 + 0.8  # wainscot top, room-local z
    walls = (
        partial(wainscot, upper=_stripes((0.85, 0.78, 0.62), (0.72, 0.6, 0.45), 0.3, (0, 1, 0)),
                lower=_checker((0.35, 0.22, 0.15), (0.55, 0.4, 0.3), 0.25), height=band),
        partial(wainscot, upper=_stripes((0.55, 0.7, 0.85), (0.85, 0.9, 0.95), 0.35, (0, 1, 0)),
                lower=_checker((0.2, 0.3, 0.5), (0.4, 0.5, 0.7), 0.25), height=band),
        partial(wainscot, upper=_checker((0.6, 0.8, 0.6), (0.85, 0.95, 0.8), 0.4),
                lower=_stripes((0.2, 0.45, 0.25), (0.35, 0.6, 0.35), 0.2, (1, 0, 0)), height=band),
        partial(wainscot, upper=_stripes((0.9, 0.65, 0.65), (0.95, 0.85, 0.8), 0.25, (1, 0, 1)),
                lower=_checker((0.5, 0.2, 0.2), (0.7, 0.35, 0.3), 0.25), height=band),
    )
    shell = room(low, high, floor=_checker((0.55, 0.38, 0.22), (0.78, 0.6, 0.4), 0.4),
                 ceiling=_checker((0.95, 0.95, 0.9), (0.7, 0.72, 0.76), 0.6), walls=walls)
    return Room(
        primitives=[
            shell,
            Primitive(partial(sdf.rounded_box, half=(0.55, 0.35, 0.375), radius=0.03),
                      _checker((0.9, 0.5, 0.1), (0.95, 0.9, 0.8), 0.15),
                      center=(2.0, 1.6, 0.375), rotation=sdf.rotation(rz=15.0)),
            Primitive(partial(sdf.sphere, radius=0.2),
                      _stripes((0.15, 0.3, 0.85), (0.98, 0.85, 0.2), 0.1, (0.3, 0.2, 1.0)),
                      center=(2.15, 1.55, 0.95), specular=0.25),
            Primitive(partial(sdf.cylinder, radius=0.18, half_height=1.0),
                      _stripes((0.85, 0.15, 0.2), (0.95, 0.95, 0.9), 0.2, (0, 0, 1)),
                      center=(0.35, 2.85, 1.0)),
            Primitive(partial(sdf.box, half=(0.25, 0.4, 0.7)),
                      _checker((0.1, 0.55, 0.6), (0.9, 0.9, 0.7), 0.2),
                      center=(3.72, 0.45, 0.7)),
            Primitive(partial(sdf.cylinder, radius=0.22, half_height=0.25),
                      _checker((0.5, 0.25, 0.6), (0.9, 0.8, 0.95), 0.12),
                      center=(1.25, 1.05, 0.25)),
        ],
        low=low, high=high,
        light=Light(position=(2.0, 1.6, 2.3), ambient=0.35),
        path=LoopPath(centre=(2.0, 1.6), radii=(1.35, 1.0), height=1.45, look_height=1.0, look_swing=0.8,
                      turn_deg=OPEN_TURN_DEG),
    )


def indoor_b_room() -> Room:
    """A held-out room: 4.6 x 3.4 x 2.7 m centred elsewhere, other objects, colours and path."""
    low, high = (-2.8, -1.2, -0.1), (1.8, 2.2, 2.6)
    band = -1.35 + 1.0
    walls = (
        partial(wainscot, upper=_checker((0.75, 0.75, 0.55), (0.6, 0.6, 0.4), 0.3),
                lower=_stripes((0.3, 0.3, 0.3), (0.5, 0.5, 0.5), 0.15, (0, 1, 0)), height=band),
        partial(wainscot, upper=_stripes((0.6, 0.5, 0.8), (0.85, 0.8, 0.95), 0.4, (0, 1, 1)),
                lower=_checker((0.3, 0.2, 0.45), (0.5, 0.4, 0.6), 0.2), height=band),
        partial(wainscot, upper=_stripes((0.95, 0.8, 0.5), (0.8, 0.55, 0.3), 0.3, (1, 0, 0)),
                lower=_checker((0.45, 0.3, 0.1), (0.6, 0.45, 0.2), 0.3), height=band),
        partial(wainscot, upper=_checker((0.5, 0.75, 0.8), (0.75, 0.9, 0.9), 0.35),
                lower=_stripes((0.1, 0.35, 0.4), (0.2, 0.5, 0.55), 0.2, (1, 0, 0)), height=band),
    )
    shell = room(low, high, floor=_stripes((0.4, 0.4, 0.45), (0.6, 0.6, 0.62), 0.25, (1, 1, 0)),
                 ceiling=_stripes((0.92, 0.9, 0.85), (0.65, 0.68, 0.75), 0.5, (1, 0, 0)), walls=walls)
    floor = low[2]
    return Room(
        primitives=[
            shell,
            Primitive(partial(sdf.box, half=(0.8, 0.45, 0.22)),
                      _stripes((0.2, 0.6, 0.3), (0.9, 0.95, 0.85), 0.12, (1, 0, 0)),
                      center=(-0.5, 0.5, floor + 0.22), rotation=sdf.rotation(rz=-20.0)),
            Primitive(partial(sdf.capsule, a=(0.0, 0.0, -0.5), b=(0.0, 0.0, 0.5), radius=0.15),
                      _checker((0.9, 0.3, 0.5), (0.95, 0.95, 0.95), 0.1),
                      center=(1.2, -0.8, floor + 0.65), specular=0.2),
            Primitive(partial(sdf.torus, major=0.3, minor=0.1),
                      _checker((0.95, 0.7, 0.1), (0.3, 0.2, 0.1), 0.08),
                      center=(-0.5, 0.5, floor + 0.54)),
            Primitive(partial(sdf.sphere, radius=0.3),
                      _stripes((0.2, 0.3, 0.9), (0.9, 0.9, 0.3), 0.12, (1, 0.5, 0.2)),
                      center=(-2.3, 1.7, floor + 0.3), specular=0.3),
            Primitive(partial(sdf.rounded_box, half=(0.3, 0.3, 0.5), radius=0.05),
                      _checker((0.6, 0.1, 0.1), (0.85, 0.75, 0.7), 0.18),
                      center=(1.35, 1.75, floor + 0.5)),
        ],
        low=low, high=high,
        light=Light(position=(-0.3, 0.6, 2.35), ambient=0.3),
        path=LoopPath(centre=(-0.5, 0.5), radii=(1.55, 1.05), height=1.35, look_height=0.9,
                      look_swing=0.8, height_swing=0.12, yaw_swing_deg=15.0, phase_deg=100.0, clockwise=True,
                      turn_deg=OPEN_TURN_DEG),
    )


ROOMS: dict[str, Callable[[], Room]] = {
    "indoor": indoor_room,
    "indoor_b": indoor_b_room,
}
