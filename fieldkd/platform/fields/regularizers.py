"""Pure regularisers: total variation and L1 for grid-like parameters, eikonal
and smoothness terms for SDFs. They are means, so a weight means the same at
any resolution."""

from __future__ import annotations

import torch


def total_variation(t: torch.Tensor, n_spatial: int) -> torch.Tensor:
    """Sum over the last ``n_spatial`` dims of the mean squared difference
    between neighbours along that dim."""
    total = t.new_zeros(())
    for dim in range(t.dim() - n_spatial, t.dim()):
        if t.shape[dim] > 1:
            total = total + torch.diff(t, dim=dim).square().mean()
    return total


def sampled_total_variation(volume: torch.Tensor, n_samples: int,
                            generator: torch.Generator | None = None) -> torch.Tensor:
    """Unbiased estimate of ``total_variation(volume, 3)`` for a (C, D, H, W)
    volume from ``n_samples`` random voxels per axis (Plenoxels' trick:
    an exact pass over a large grid costs more than the rest of a step).
    Exact when ``n_samples`` is at least the number of voxels."""
    c, *shape = volume.shape
    if n_samples >= shape[0] * shape[1] * shape[2] or min(shape) < 2:
        return total_variation(volume, 3)
    flat = volume.reshape(c, -1)
    strides = (shape[1] * shape[2], shape[2], 1)
    total = volume.new_zeros(())
    for axis, stride in enumerate(strides):
        # Base voxels with room for a +1 neighbour along ``axis``.
        coords = [torch.randint(0, s - (a == axis), (n_samples,), generator=generator)
                  for a, s in enumerate(shape)]
        idx = sum(k * s for k, s in zip(coords, strides)).to(volume.device)
        # index_select's backward is an index_add_, much cheaper than indexing's index_put_.
        diff = flat.index_select(1, idx + stride) - flat.index_select(1, idx)
        total = total + diff.square().mean()
    return total


def l1(t: torch.Tensor) -> torch.Tensor:
    return t.abs().mean()


def eikonal_loss(grad: torch.Tensor) -> torch.Tensor:
    """mean (|grad f| - 1)^2 over (N, 3) gradients: a signed distance has unit gradient."""
    return (grad.norm(dim=-1) - 1.0).square().mean()


def smoothness_loss(normals: torch.Tensor, neighbour_normals: torch.Tensor) -> torch.Tensor:
    """mean |n(x) - n(x')| over pairs of nearby points (MonoSDF's smoothness term)."""
    return (normals - neighbour_normals).norm(dim=-1).mean()
