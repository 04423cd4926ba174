"""Handheld-scan-like camera paths inside a room (z-up world).

The camera walks along an ellipse parallel to the walls (``turn_deg`` of it) and
looks across the room, towards a point above the floor centre; its height and yaw
sway slowly, as a person's would. Consecutive frames differ by a few degrees,
so they overlap strongly, and the frame order is the path order. The tilt
sways too, so that floor, walls and ceiling are all seen. A walk that closes
its loop comes back to where it began, so the last chunk of an incremental run
would re-learn the first one's views: the bundled rooms stop short of that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .cameras import look_at


@dataclass(frozen=True)
class LoopPath:
    centre: tuple[float, float]  # ellipse centre (x, y), world units
    radii: tuple[float, float]  # semi-axes along x and y
    height: float  # mean camera height
    look_height: float  # height of the point the camera turns towards
    height_swing: float = 0.1  # amplitude of the height sway
    look_swing: float = 0.0  # amplitude of the sway of look_height (tilts the view up and down)
    yaw_swing_deg: float = 12.0  # amplitude of the yaw sway around "towards the centre"
    phase_deg: float = 0.0  # where on the ellipse frame 0 is
    clockwise: bool = False
    turn_deg: float = 360.0  # how much of the ellipse the walk covers


def path_angles(path: LoopPath, n: int) -> torch.Tensor:
    """Angle on the ellipse of each of ``n`` frames, evenly spaced over ``turn_deg``."""
    step = math.radians(path.turn_deg) / n * (-1.0 if path.clockwise else 1.0)
    return math.radians(path.phase_deg) + step * torch.arange(n, dtype=torch.float64)


def _yawed(direction: torch.Tensor, angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    x, y, z = direction.tolist()
    return torch.tensor([c * x - s * y, s * x + c * y, z])


def loop_poses(path: LoopPath, n: int) -> torch.Tensor:
    """(n, 4, 4) OpenGL camera-to-world poses along the path, in path order."""
    poses = []
    for theta in path_angles(path, n).tolist():
        eye = torch.tensor([
            path.centre[0] + path.radii[0] * math.cos(theta),
            path.centre[1] + path.radii[1] * math.sin(theta),
            path.height + path.height_swing * math.sin(3 * theta),
        ])
        look = path.look_height + path.look_swing * math.sin(2 * theta + 1.0)
        target = torch.tensor([path.centre[0], path.centre[1], look])
        yaw = math.radians(path.yaw_swing_deg) * math.sin(2 * theta + 0.5)
        poses.append(look_at(eye, eye + _yawed(target - eye, yaw)))
    return torch.stack(poses)
