"""World <-> scene similarity transforms (MonoSDF's ``scale_mat``).

A dataset may live in world units (metres) while the field works in a
normalised scene space. ``world_from_scene`` is a 4x4 similarity
``[s * Q | c; 0 0 0 1]`` (uniform scale ``s > 0``, rotation ``Q``,
translation ``c``) that maps scene points to world points. Poses keep
orthonormal rotations on both sides; lengths (depths) scale by ``s``.
"""

from __future__ import annotations

import numpy as np


def similarity_parts(m: np.ndarray, rtol: float = 1e-5) -> tuple[float, np.ndarray, np.ndarray]:
    """(s, Q (3, 3), c (3,)) of a 4x4 similarity; ValueError when ``m`` is none."""
    m = np.asarray(m, dtype=np.float64)
    if m.shape != (4, 4) or not np.isfinite(m).all():
        raise ValueError(f"need a finite 4x4 matrix, got shape {m.shape}")
    if not np.allclose(m[3], [0, 0, 0, 1], atol=1e-8):
        raise ValueError(f"last row must be 0 0 0 1, got {m[3].tolist()}")
    det = np.linalg.det(m[:3, :3])
    if det <= 0:
        raise ValueError(f"the 3x3 part must have a positive determinant (no reflection), got {det:.6g}")
    s = float(np.cbrt(det))
    q = m[:3, :3] / s
    if not np.allclose(q.T @ q, np.eye(3), atol=rtol):
        raise ValueError("the 3x3 part is not a uniform scale times a rotation")
    return s, q, m[:3, 3].copy()


def pose_to_world(c2w: np.ndarray, world_from_scene: np.ndarray) -> np.ndarray:
    """(..., 4, 4) camera-to-world poses in scene space -> world space (rotations stay orthonormal)."""
    s, _, _ = similarity_parts(world_from_scene)
    out = np.asarray(world_from_scene, dtype=np.float64) @ np.asarray(c2w, dtype=np.float64)
    out[..., :3, :3] /= s
    return out


def pose_from_world(c2w: np.ndarray, world_from_scene: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pose_to_world`."""
    s, _, _ = similarity_parts(world_from_scene)
    out = np.linalg.inv(np.asarray(world_from_scene, dtype=np.float64)) @ np.asarray(c2w, dtype=np.float64)
    out[..., :3, :3] *= s
    return out


def points_to_world(points: np.ndarray, world_from_scene: np.ndarray) -> np.ndarray:
    m = np.asarray(world_from_scene, dtype=np.float64)
    return np.asarray(points, dtype=np.float64) @ m[:3, :3].T + m[:3, 3]


def points_from_world(points: np.ndarray, world_from_scene: np.ndarray) -> np.ndarray:
    m = np.asarray(world_from_scene, dtype=np.float64)
    return (np.asarray(points, dtype=np.float64) - m[:3, 3]) @ np.linalg.inv(m[:3, :3]).T


def cube_to_box(low, high, margin: float = 1.1) -> np.ndarray:
    """``world_from_scene`` that maps the cube [-1, 1]^3 onto a cube around the box [low, high]:
    centred on it, half-size ``margin`` times its largest half-extent (MonoSDF's normalisation)."""
    low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    m = np.eye(4)
    m[:3, :3] *= margin * 0.5 * float((high - low).max())
    m[:3, 3] = 0.5 * (low + high)
    return m
