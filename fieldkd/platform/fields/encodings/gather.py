"""Weighted gather of table rows, the inner loop of grid encodings.

``out[b] = sum_k w[b, k] * table[idx[b, k]]``. The forward pass uses
``embedding_bag`` (a fused CPU/GPU kernel, no (B, K, F) intermediate); the
backward pass scatters with ``index_add_`` on int64 indices, which on CPU
is several times faster than embedding_bag's own backward (and than
index_add_ with int32 indices, which misses the vectorised path).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class _WeightedGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, table: torch.Tensor, idx: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(table, idx, weights)
        return F.embedding_bag(idx, table, per_sample_weights=weights, mode="sum")

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        table, idx, weights = ctx.saved_tensors
        grad_table = grad_weights = None
        if ctx.needs_input_grad[0]:
            contrib = (grad[:, None, :] * weights[..., None]).reshape(-1, table.shape[1])
            grad_table = torch.zeros_like(table).index_add_(0, idx.reshape(-1).long(), contrib.to(table.dtype))
        if ctx.needs_input_grad[2]:  # only when input positions need gradients
            grad_weights = (table[idx] * grad[:, None, :]).sum(-1)
        return grad_table, None, grad_weights


def weighted_gather(table: torch.Tensor, idx: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """table (E, F), idx (B, K) int32/int64, weights (B, K) -> (B, F)."""
    return _WeightedGather.apply(table, idx, weights.to(table.dtype))
