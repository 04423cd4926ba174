"""Pose interpolation: rotations as unit quaternions, slerp between them.

Pure functions on (..., 3, 3) rotations and (..., 4, 4) camera-to-world
matrices; quaternions are (w, x, y, z) with w >= 0.
"""

from __future__ import annotations

import torch


def matrix_to_quaternion(rot: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotations -> (..., 4) unit quaternions (w, x, y, z), w >= 0.

    Each of the four standard formulas is exact where its pivot (4w², 4x², 4y²
    or 4z²) is large; the largest pivot is picked per rotation, so no branch
    divides by a small number.
    """
    m = rot.float()
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    pivots = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    candidates = torch.stack([
        torch.stack([pivots[..., 0], m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0],
                     m[..., 1, 0] - m[..., 0, 1]], -1),
        torch.stack([m[..., 2, 1] - m[..., 1, 2], pivots[..., 1], m[..., 0, 1] + m[..., 1, 0],
                     m[..., 0, 2] + m[..., 2, 0]], -1),
        torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0], pivots[..., 2],
                     m[..., 1, 2] + m[..., 2, 1]], -1),
        torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1],
                     pivots[..., 3]], -1),
    ], -2)  # (..., 4 formulas, 4 components), each proportional to the quaternion
    best = pivots.argmax(dim=-1)
    q = torch.gather(candidates, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """(..., 4) quaternions (w, x, y, z), any norm > 0 -> (..., 3, 3) rotations."""
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, -1).reshape(*q.shape[:-1], 3, 3)


def slerp(q0: torch.Tensor, q1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical linear interpolation of unit quaternions (..., 4) at t (...,) in [0, 1],
    along the shorter arc (q and -q are the same rotation)."""
    t = t[..., None]
    dot = (q0 * q1).sum(-1, keepdim=True)
    q1 = torch.where(dot < 0, -q1, q1)
    dot = dot.abs().clamp(max=1.0)
    angle = torch.acos(dot)
    sin = torch.sin(angle)
    # Nearly equal rotations: the slerp weights tend to the lerp ones (and sin -> 0).
    near = sin < 1e-6
    w0 = torch.where(near, 1 - t, torch.sin((1 - t) * angle) / sin.clamp(min=1e-12))
    w1 = torch.where(near, t, torch.sin(t * angle) / sin.clamp(min=1e-12))
    q = w0 * q0 + w1 * q1
    return q / q.norm(dim=-1, keepdim=True)


def interpolate_poses(c2w0: torch.Tensor, c2w1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Camera-to-world matrices (..., 4, 4) between two poses: slerp of the rotations,
    linear interpolation of the positions; t (...,) in [0, 1]."""
    rot = quaternion_to_matrix(slerp(matrix_to_quaternion(c2w0[..., :3, :3]),
                                     matrix_to_quaternion(c2w1[..., :3, :3]), t.float()))
    centre = (1 - t.float())[..., None] * c2w0[..., :3, 3].float() + t.float()[..., None] * c2w1[..., :3, 3].float()
    out = torch.zeros(*rot.shape[:-2], 4, 4, dtype=torch.float32, device=rot.device)
    out[..., :3, :3] = rot
    out[..., :3, 3] = centre
    out[..., 3, 3] = 1.0
    return out


def along_trajectory(c2w: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Poses at normalised positions u (n,) in [0, 1] along a trajectory of poses (N, 4, 4)
    in frame order: u picks a point between the two neighbouring frames, interpolated
    between them. Returns the poses (n, 4, 4) and the earlier neighbour of each (n,)."""
    n = c2w.shape[0]
    if n == 1:
        return c2w.float().expand(len(u), 4, 4).clone(), torch.zeros(len(u), dtype=torch.long)
    position = u.float().clamp(0.0, 1.0) * (n - 1)
    lower = position.floor().long().clamp(max=n - 2)
    return interpolate_poses(c2w[lower], c2w[lower + 1], position - lower), lower
