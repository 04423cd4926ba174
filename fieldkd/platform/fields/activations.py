"""Density activations applied to a field's raw (pre-activation) density."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

# exp(15) ~ 3.3e6 is far above any useful density, yet the gradient of a
# runaway raw density can no longer overflow to inf.
_GRAD_CLAMP = 15.0


class _TruncExp(torch.autograd.Function):
    """exp(x) forward; backward uses exp(clamp(x, -15, 15)) so one huge raw
    density cannot produce an inf/NaN gradient (Instant-NGP's trick)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(-_GRAD_CLAMP, _GRAD_CLAMP))


def trunc_exp(x: torch.Tensor) -> torch.Tensor:
    """exp with a clamped gradient; the default density activation."""
    return _TruncExp.apply(x)


DENSITY_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "trunc_exp": trunc_exp,
    "softplus": F.softplus,  # TensoRF-style
    "relu": F.relu,  # Plenoxels-style
}


def density_activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    try:
        return DENSITY_ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown density_activation {name!r}; choose one of {sorted(DENSITY_ACTIVATIONS)}"
        ) from None
