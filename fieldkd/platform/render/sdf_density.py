"""SDF -> volume density (VolSDF): sigma = (1 / beta) * Psi_beta(-sdf).

Psi_beta is the CDF of a zero-mean Laplace distribution with scale beta, so the
density is 1 / beta deep inside a solid (sdf << 0), exactly 1 / (2 beta) on
the surface and falls off as exp(-sdf / beta) outside it. A smaller beta is a
sharper surface; beta is learned.
"""

from __future__ import annotations

import torch


def laplace_cdf(s: torch.Tensor, beta: torch.Tensor | float) -> torch.Tensor:
    """CDF at ``s`` of a Laplace(0, beta) distribution.

    Written with exp(-|s| / beta) only, which never overflows, on either side.
    """
    half_tail = 0.5 * torch.exp(-s.abs() / beta)
    return torch.where(s <= 0, half_tail, 1.0 - half_tail)


def laplace_density(sdf: torch.Tensor, beta: torch.Tensor | float) -> torch.Tensor:
    """VolSDF density of signed distances ``sdf`` (negative inside) for scale ``beta``."""
    return laplace_cdf(-sdf, beta) / beta
