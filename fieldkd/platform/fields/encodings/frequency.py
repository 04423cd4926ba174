"""NeRF's positional (frequency) encoding."""

from __future__ import annotations

import torch


def frequency_dim(in_dim: int, n_frequencies: int, include_input: bool = True) -> int:
    return in_dim * (2 * n_frequencies + int(include_input))


def frequency_encode(x: torch.Tensor, n_frequencies: int, include_input: bool = True) -> torch.Tensor:
    """(..., D) -> (..., D * (2F + include_input)): [x, sin(2^k x), cos(2^k x)].

    Frequencies are 2^0 .. 2^(F-1) without a factor of pi, as in the reference
    NeRF code; inputs are expected in about [-1, 1].
    """
    freqs = 2.0 ** torch.arange(n_frequencies, dtype=x.dtype, device=x.device)
    scaled = (x[..., None, :] * freqs[:, None]).flatten(-2)  # (..., F*D)
    parts = [x] if include_input else []
    parts += [torch.sin(scaled), torch.cos(scaled)]
    return torch.cat(parts, dim=-1)


class FrequencyEncoding(torch.nn.Module):
    def __init__(self, in_dim: int = 3, n_frequencies: int = 10, include_input: bool = True):
        super().__init__()
        self.n_frequencies = n_frequencies
        self.include_input = include_input
        self.out_dim = frequency_dim(in_dim, n_frequencies, include_input)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return frequency_encode(x, self.n_frequencies, self.include_input)
