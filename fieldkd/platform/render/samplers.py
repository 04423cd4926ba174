"""Where along each ray the field is evaluated."""

from __future__ import annotations

import torch

from .composite import ray_aabb_intersect


def ray_bounds(origins, directions, aabb, near: float, far: float):
    """Clip [near, far] to the part of each ray inside the scene box.

    Rays that miss the box get an empty interval (t_far == t_near).
    """
    t_in, t_out = ray_aabb_intersect(origins, directions, aabb)
    t_near = t_in.clamp(min=near)
    t_far = t_out.clamp(max=far)
    return t_near, torch.maximum(t_far, t_near)


def stratified(t_near, t_far, n_samples: int, jitter: bool):
    """n_samples intervals evenly splitting [t_near, t_far]; each interval's
    sample point is jittered uniformly within it while training (stratified
    sampling), or sits at the interval's middle otherwise.

    Returns t_starts, t_ends, t_points: (R, S).
    """
    u = torch.linspace(0.0, 1.0, n_samples + 1, device=t_near.device)
    edges = t_near[:, None] + (t_far - t_near)[:, None] * u
    t_starts, t_ends = edges[:, :-1], edges[:, 1:]
    frac = torch.rand_like(t_starts) if jitter else torch.full_like(t_starts, 0.5)
    return t_starts, t_ends, t_starts + frac * (t_ends - t_starts)
