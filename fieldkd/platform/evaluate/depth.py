"""Depth-map error against ground truth, on pixels that have a ground-truth depth."""

from __future__ import annotations

import numpy as np
import torch

from ..train.supervision import scale_shift_fit
from ._arrays import to_numpy

__all__ = ["depth_metrics", "align_scale_shift"]


def align_scale_shift(pred, gt) -> np.ndarray:
    """``pred`` mapped by the least-squares scale and shift onto ``gt`` over the pixels with
    ``gt > 0``: the alignment the ``ssi`` depth loss uses, for scale-free (monocular) depth."""
    p, g = to_numpy(pred).astype(np.float64), to_numpy(gt).astype(np.float64)
    valid = np.isfinite(g) & (g > 0) & np.isfinite(p)
    scale, shift = scale_shift_fit(torch.from_numpy(p), torch.from_numpy(np.where(valid, g, 0.0)),
                                   torch.from_numpy(valid))
    return (float(scale) * p + float(shift)).astype(np.float32)


def depth_metrics(pred, gt, mask=None) -> dict[str, float]:
    """``abs_rel``, ``rmse`` and ``mae`` of ``pred`` against ``gt`` (same shape).

    Only pixels with a finite ``gt > 0`` count (0 marks "no surface" in our
    scenes), further restricted by the boolean ``mask`` when given. Raises
    ValueError when no pixel is left, rather than returning NaN that would
    silently poison averages.
    """
    p, g = to_numpy(pred), to_numpy(gt)
    if p.shape != g.shape:
        raise ValueError(f"pred and gt depth shapes differ: {p.shape} vs {g.shape}")
    valid = np.isfinite(g) & (g > 0)
    if mask is not None:
        m = to_numpy(mask, dtype=bool)
        if m.shape != g.shape:
            raise ValueError(f"mask shape {m.shape} does not match depth shape {g.shape}")
        valid &= m
    if not valid.any():
        raise ValueError("depth_metrics: no pixel has a ground-truth depth (gt > 0) inside the mask")
    err = p[valid] - g[valid]
    return {
        "abs_rel": float(np.mean(np.abs(err) / g[valid])),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mae": float(np.mean(np.abs(err))),
    }
