"""Scene box and near/far planes derived from camera poses.

Rule (explicit values always win, each on its own):

- aabb: if the optical axes of the cameras meet near a common point in front
  of every camera (object-centric capture), the box is a cube centred at the
  point of closest approach of the axes (least squares) with half-size
  ``half_size`` if given, else ``0.4 * mean camera distance`` to that point.
  Otherwise (e.g. forward-facing captures with near-parallel axes) the cube is
  centred at the camera centroid with half-size twice the camera spread
  (at least 1).
- near / far: with ``d`` the camera distances to the box centre and ``r`` the
  box's half-diagonal, ``near = max(min(d) - r, 0.05)`` and ``far = max(d) + r``.
"""

from __future__ import annotations

import numpy as np
import torch

MIN_NEAR = 0.05
HALF_SIZE_PER_DISTANCE = 0.4


def focus_point(c2w: np.ndarray) -> np.ndarray | None:
    """Least-squares closest point to all optical axes, or None when ill-posed."""
    centers = c2w[:, :3, 3]
    forward = -c2w[:, :3, 2]
    forward = forward / np.linalg.norm(forward, axis=-1, keepdims=True)
    # Sum of projectors orthogonal to each axis: sum (I - d d^T) p = sum (I - d d^T) c.
    proj = np.eye(3)[None] - forward[:, :, None] * forward[:, None, :]
    a, b = proj.sum(0), np.einsum("nij,nj->i", proj, centers)
    if len(c2w) < 2 or np.linalg.eigvalsh(a)[0] < 1e-3 * len(c2w):
        return None
    point = np.linalg.solve(a, b)
    in_front = ((point - centers) * forward).sum(-1) > 0
    return point if in_front.all() else None


def derive_bounds(c2w, aabb=None, near=None, far=None, half_size=None):
    """(aabb (2, 3) tensor, near, far) for (N, 4, 4) OpenGL camera-to-world poses."""
    c2w = np.asarray(c2w, dtype=np.float64)
    centers = c2w[:, :3, 3]
    if aabb is None:
        focus = focus_point(c2w)
        if focus is not None:
            half = half_size or HALF_SIZE_PER_DISTANCE * np.linalg.norm(centers - focus, axis=-1).mean()
        else:
            focus = centers.mean(0)
            half = half_size or max(1.0, 2.0 * np.linalg.norm(centers - focus, axis=-1).max())
        aabb = np.stack([focus - half, focus + half])
    aabb = np.asarray(aabb, dtype=np.float64).reshape(2, 3)
    mid, radius = aabb.mean(0), 0.5 * np.linalg.norm(aabb[1] - aabb[0])
    dist = np.linalg.norm(centers - mid, axis=-1)
    near = max(float(dist.min() - radius), MIN_NEAR) if near is None else float(near)
    far = float(dist.max() + radius) if far is None else float(far)
    return torch.tensor(aabb, dtype=torch.float32), near, far
