"""Plain PyTorch MLPs used by the fields."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn


def make_mlp(in_dim: int, out_dim: int, hidden: int = 64, n_layers: int = 2) -> nn.Sequential:
    """``n_layers`` Linear layers (so n_layers - 1 hidden ReLU layers), no output activation."""
    if n_layers < 1:
        raise ValueError("an MLP needs at least one layer")
    dims = [in_dim] + [hidden] * (n_layers - 1) + [out_dim]
    layers: list[nn.Module] = []
    for i in range(n_layers):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < n_layers - 1:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class _SmoothRelu(torch.autograd.Function):
    """softplus(beta x) / beta, twice differentiable: the backward is written in torch ops."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, beta: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.beta = beta
        bx = x * beta
        # relu(bx) + log(1 + e^-|bx|): the exponent is clamped where the term is below 1e-13, and
        # log(1 + .) replaces log1p; torch's CPU softplus and log1p take a slow path on those
        # tiny values (5-7x slower on a trained SDF trunk's activations).
        return (torch.relu(bx) + torch.log(1.0 + torch.exp(-bx.abs().clamp(max=30.0)))) / beta

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad * torch.sigmoid(x * ctx.beta), None


class SmoothRelu(nn.Module):
    """nn.Softplus(beta) to within 1e-7 / beta, faster on the CPU, with the same first and second
    derivatives (the normals of an SDF are an input gradient, and training differentiates them)."""

    def __init__(self, beta: float = 100.0):
        super().__init__()
        self.beta = float(beta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _SmoothRelu.apply(x, self.beta)


class SkipMLP(nn.Module):
    """NeRF's trunk: ``depth`` ReLU layers of ``width``; after each layer index
    in ``skips`` the network input is concatenated back in; then a linear
    output layer."""

    def __init__(self, in_dim: int, out_dim: int, width: int = 256, depth: int = 8,
                 skips: Sequence[int] = (4,)):
        super().__init__()
        self.skips = tuple(skips)
        layers = [nn.Linear(in_dim, width)]
        for i in range(1, depth):
            layers.append(nn.Linear(width + (in_dim if i - 1 in self.skips else 0), width))
        self.layers = nn.ModuleList(layers)
        self.out = nn.Linear(width, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for i, layer in enumerate(self.layers):
            h = torch.relu(layer(h))
            if i in self.skips and i < len(self.layers) - 1:
                h = torch.cat([x, h], dim=-1)
        return self.out(h)


class SDFMLP(nn.Module):
    """The geometry trunk of a neural SDF (IDR / VolSDF / MonoSDF style).

    ``depth`` layers of ``width`` with a smooth activation, softplus(100):
    the normal is the input gradient of the output, and ReLU would make it
    piecewise constant and its derivatives (eikonal, smoothness) zero. After
    each layer index in ``skips`` the input is concatenated back in, scaled
    by 1/sqrt(2) so that the skip keeps the activations' size.

    Geometric initialisation (Atzmon & Lipman's SAL): with the first
    ``n_xyz`` inputs the raw coordinates p and the rest an encoding of them,
    output 0 starts as ``|p| - radius`` (``radius - |p|`` with ``inside_out``).
    The encoding's weights start at zero, so high frequencies are learned
    only where the data asks for them.
    """

    def __init__(self, in_dim: int, out_dim: int, width: int = 256, depth: int = 8,
                 skips: Sequence[int] = (4,), radius: float = 0.5, inside_out: bool = False,
                 n_xyz: int = 3, softplus_beta: float = 100.0):
        super().__init__()
        if depth < 1:
            raise ValueError("the SDF trunk needs at least one layer")
        self.skips = tuple(i for i in skips if i < depth - 1)
        layers = [nn.Linear(in_dim, width)]
        for i in range(1, depth):
            layers.append(nn.Linear(width + (in_dim if i - 1 in self.skips else 0), width))
        self.layers = nn.ModuleList(layers)
        self.out = nn.Linear(width, out_dim)
        self.activation = SmoothRelu(softplus_beta)
        self._geometric_init(in_dim, width, radius, inside_out, n_xyz)

    @torch.no_grad()
    def _geometric_init(self, in_dim: int, width: int, radius: float, inside_out: bool, n_xyz: int) -> None:
        # Weights N(0, 2 / fan_out) keep |h| ~ |p| through the ReLU-like layers;
        # a last layer with mean sqrt(pi / width) then outputs ~ |p| (the
        # expected norm of a half-rectified Gaussian projection).
        std = math.sqrt(2.0 / width)
        for i, layer in enumerate(self.layers):
            nn.init.normal_(layer.weight, 0.0, std)
            nn.init.zeros_(layer.bias)
            if i == 0:
                layer.weight[:, n_xyz:] = 0.0
            elif i - 1 in self.skips:  # the re-fed input sits after the width hidden values
                layer.weight[:, width + n_xyz:] = 0.0
        sign = -1.0 if inside_out else 1.0
        nn.init.normal_(self.out.weight[:1], sign * math.sqrt(math.pi / width), 1e-4)
        self.out.bias.zero_()
        # Unlike ReLU, softplus(100) is log(2)/100 at 0, and the last layer sums
        # these offsets to ~0.1 for 64 units: centre the output at -radius.
        centre = torch.zeros(1, in_dim, device=self.out.bias.device)
        self.out.bias[0] = -sign * radius - self(centre)[0, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for i, layer in enumerate(self.layers):
            h = self.activation(layer(h))
            if i in self.skips:
                h = torch.cat([h, x], dim=-1) / math.sqrt(2.0)
        return self.out(h)
