"""Pure volume-rendering math on padded (rays, samples) tensors."""

from __future__ import annotations

import torch


def alphas_from_densities(densities: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """Opacity of each sample interval: 1 - exp(-sigma * delta)."""
    return 1.0 - torch.exp(-densities * deltas)


def transmittance(alphas: torch.Tensor) -> torch.Tensor:
    """Light reaching the start of each interval: prod_{j<i} (1 - alpha_j)."""
    # A cumulative sum of log(1 - alpha) is more stable than a cumprod for long rays.
    log_keep = torch.log1p(-alphas.clamp(max=1.0 - 1e-7))
    exclusive = torch.cumsum(log_keep, dim=-1) - log_keep
    return torch.exp(exclusive)


def composite(
    densities: torch.Tensor,
    t_starts: torch.Tensor,
    t_ends: torch.Tensor,
    colors: torch.Tensor | None = None,
    background: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Alpha-composite samples along rays.

    densities, t_starts, t_ends: (R, S); colors: (R, S, C).
    Returns weights (R, S), opacity (R,), depth (R,) as the expected distance of
    the weights, normalised by opacity so that a partially transparent ray still
    gets the distance of what it hits, and rgb (R, C) composited on background.
    """
    alphas = alphas_from_densities(densities, t_ends - t_starts)
    weights = transmittance(alphas) * alphas
    opacity = weights.sum(dim=-1)
    mids = 0.5 * (t_starts + t_ends)
    depth = (weights * mids).sum(dim=-1) / opacity.clamp(min=1e-6)
    out = {"weights": weights, "opacity": opacity, "depth": depth}
    if colors is not None:
        rgb = (weights[..., None] * colors).sum(dim=-2)
        if background is not None:
            rgb = rgb + (1.0 - opacity[..., None]) * background
        out["rgb"] = rgb
    return out


def composite_values(weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Weighted sum along each ray of any per-sample quantity: sum_i w_i * v_i.

    weights (R, S); values (R, S) or (R, S, C) -> (R,) or (R, C). Nothing is
    renormalised: a composited unit normal is shorter where the ray is partly
    transparent, as the expected value over the ray's termination should be.
    """
    if values.dim() == weights.dim():
        return (weights * values).sum(dim=-1)
    return (weights[..., None] * values).sum(dim=-2)


def ray_aabb_intersect(origins, directions, aabb, eps: float = 1e-9):
    """Entry and exit distances of rays through an axis-aligned box (slab test).

    Returns (t_near, t_far), each (R,); t_far < t_near where the ray misses.
    """
    inv = 1.0 / torch.where(directions.abs() < eps, torch.full_like(directions, eps), directions)
    t0 = (aabb[0] - origins) * inv
    t1 = (aabb[1] - origins) * inv
    t_near = torch.minimum(t0, t1).amax(dim=-1)
    t_far = torch.maximum(t0, t1).amin(dim=-1)
    return t_near, t_far
