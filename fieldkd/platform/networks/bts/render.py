"""Volume rendering of the BTS density field: expected depth, and colour by image-based
rendering (each sample takes the colour other frames see at its projection)."""

from __future__ import annotations

import torch

from .geometry import project, sample_maps, to_camera


def ray_weights(density: torch.Tensor, z: torch.Tensor, ray_scale: torch.Tensor | None = None) -> torch.Tensor:
    """Termination weights [..., S] of densities at depths z [..., S] (sorted).

    The interval after sample i is z[i+1] - z[i] (times ``ray_scale``, the length of
    a unit-depth step along the ray, so that density is per metre). The last sample
    is opaque: every ray ends at the far plane at the latest, and the weights sum to 1."""
    deltas = z[..., 1:] - z[..., :-1]
    if ray_scale is not None:
        deltas = deltas * ray_scale.unsqueeze(-1)
    alphas = 1.0 - torch.exp(-density[..., :-1] * deltas)
    alphas = torch.cat([alphas, torch.ones_like(alphas[..., :1])], dim=-1)
    log_keep = torch.log1p(-alphas[..., :-1].clamp(max=1.0 - 1e-7))
    trans = torch.exp(torch.cat([torch.zeros_like(log_keep[..., :1]), torch.cumsum(log_keep, dim=-1)], dim=-1))
    return alphas * trans


def expected_depth(weights: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return (weights * z).sum(dim=-1)


def sample_colours(images: torch.Tensor, intrinsics: torch.Tensor, cam_to_world: torch.Tensor,
                   points: torch.Tensor):
    """Colours frames see at world points: images [F, 3, H, W], intrinsics [F, 3, 3],
    cam_to_world [F, 4, 4], points [N, 3] -> (colours [F, N, 3], valid [F, N]).

    valid: the point is in front of that frame and projects inside its image."""
    h, w = images.shape[-2:]
    cam = to_camera(points.unsqueeze(0), cam_to_world)
    uv, _, valid = project(cam, intrinsics, h, w)
    return sample_maps(images, uv), valid


def render_colours(weights: torch.Tensor, colours: torch.Tensor, colour_valid: torch.Tensor,
                   density_valid: torch.Tensor | None = None):
    """Composite per-frame sample colours along rays.

    weights [R, S]; colours [F, R, S, 3]; colour_valid [F, R, S]; density_valid [R, S].
    Returns rgb [F, R, 3] and invalid_share [F, R]: the weight on samples whose
    colour (in that frame) or density is undefined."""
    rgb = (weights.unsqueeze(0).unsqueeze(-1) * colours).sum(dim=-2)
    valid = colour_valid if density_valid is None else colour_valid & density_valid.unsqueeze(0)
    invalid_share = (weights.unsqueeze(0) * (~valid).to(weights.dtype)).sum(dim=-1)
    return rgb, invalid_share
