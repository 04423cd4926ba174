"""Volume rendering on packed samples: only the live samples, as one flat list.

Sample i belongs to ray ``ray_indices[i]``; the list is sorted by ray and, within
a ray, by distance (the row-major order of ``mask.nonzero()``). Sums along a ray
become sums over its segment of the list (``index_add``), and the transmittance's
running sum a cumulative sum restarted at each segment. Nothing of size
rays x samples_per_ray is touched, however few samples survive culling.
"""

from __future__ import annotations

import torch

from .composite import alphas_from_densities


def segment_sum(values: torch.Tensor, ray_indices: torch.Tensor, n_rays: int) -> torch.Tensor:
    """Sum of each ray's samples: values (N, ...) -> (n_rays, ...); a ray without samples gets 0."""
    return values.new_zeros((n_rays, *values.shape[1:])).index_add(0, ray_indices, values)


def segment_starts(ray_indices: torch.Tensor, n_rays: int) -> torch.Tensor:
    """Index in the list of the first sample of each sample's ray, (N,)."""
    counts = torch.bincount(ray_indices, minlength=n_rays)
    return (torch.cumsum(counts, 0) - counts)[ray_indices]


def exclusive_segment_cumsum(values: torch.Tensor, ray_indices: torch.Tensor, n_rays: int) -> torch.Tensor:
    """sum_{j < i, same ray} values_j for every sample i (N,).

    One running sum over the whole list, from which each ray subtracts the part
    before its segment. That running sum grows with every ray in the batch, so it
    is kept in float64: in float32, once it reaches 1e4 (a few hundred opaque
    samples, log-transmittance down to -16 each) its spacing is 1e-3, an error of
    0.1% in every later ray's transmittance.
    """
    wide = values.double()
    exclusive = torch.cumsum(wide, 0) - wide
    return (exclusive - exclusive[segment_starts(ray_indices, n_rays)]).to(values.dtype)


def segment_transmittance(alphas: torch.Tensor, ray_indices: torch.Tensor, n_rays: int) -> torch.Tensor:
    """Light reaching the start of each packed sample: prod of (1 - alpha) over the earlier samples
    of its ray (N,)."""
    log_keep = torch.log1p(-alphas.clamp(max=1.0 - 1e-7))
    return torch.exp(exclusive_segment_cumsum(log_keep, ray_indices, n_rays))


def composite_packed(
    densities: torch.Tensor,
    t_starts: torch.Tensor,
    t_ends: torch.Tensor,
    ray_indices: torch.Tensor,
    n_rays: int,
    colors: torch.Tensor | None = None,
    background: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """:func:`composite.composite` on packed samples.

    densities, t_starts, t_ends, ray_indices: (N,); colors (N, C). Returns
    weights (N,), and opacity (R,), depth (R,), rgb (R, C) for R = n_rays, with the
    same definitions (and the same clamps) as the padded version.
    """
    alphas = alphas_from_densities(densities, t_ends - t_starts)
    weights = segment_transmittance(alphas, ray_indices, n_rays) * alphas
    opacity = segment_sum(weights, ray_indices, n_rays)
    mids = 0.5 * (t_starts + t_ends)
    depth = segment_sum(weights * mids, ray_indices, n_rays) / opacity.clamp(min=1e-6)
    out = {"weights": weights, "opacity": opacity, "depth": depth}
    if colors is not None:
        rgb = segment_sum(weights[:, None] * colors, ray_indices, n_rays)
        if background is not None:
            rgb = rgb + (1.0 - opacity[:, None]) * background
        out["rgb"] = rgb
    return out


def composite_values_packed(weights: torch.Tensor, values: torch.Tensor, ray_indices: torch.Tensor,
                            n_rays: int) -> torch.Tensor:
    """:func:`composite.composite_values` on packed samples: (N,), (N[, C]) -> (R[, C])."""
    weighted = weights * values if values.dim() == 1 else weights[:, None] * values
    return segment_sum(weighted, ray_indices, n_rays)


def visible_samples(densities: torch.Tensor, t_starts: torch.Tensor, t_ends: torch.Tensor,
                    ray_indices: torch.Tensor, n_rays: int, min_alpha: float,
                    min_transmittance: float) -> torch.Tensor:
    """Which packed samples can change their pixel (N,) bool: opacity above ``min_alpha`` and
    transmittance at the sample's start above ``min_transmittance``.

    Dropping the others changes a pixel by at most ``min_transmittance`` plus the summed
    opacity of the dropped transparent samples.
    """
    alphas = alphas_from_densities(densities, t_ends - t_starts)
    keep = segment_transmittance(alphas, ray_indices, n_rays) > min_transmittance
    return keep & (alphas > min_alpha) if min_alpha > 0 else keep
