"""Probabilistic pseudo-labels from a teacher's depth maps, by cross-view consistency (KD-MVS).

A reference pixel keeps a label when enough of its source views agree with its depth (see
:mod:`.consistency`) and the teacher is confident there. The label is a Gaussian: μ is the
mean of the reference depth and the agreeing reprojected depths, σ their (population)
standard deviation, so a pixel whose views scatter gets a wide, soft label.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .consistency import _np, agreeing_stats, agreement

__all__ = ["label_stats", "pseudo_labels"]


def pseudo_labels(ref_depth, ref_conf, ref_cam, sources: Sequence, *, max_px: float = 1.0,
                  max_rel: float = 0.005, min_views: int = 7, min_conf: float = 0.05,
                  depth_range: tuple[float, float] | None = None, mode: str = "bilinear") -> dict:
    """Labels for one reference view.

    ``ref_depth``, ``ref_conf``: the teacher's (H, W) depth and confidence (``ref_conf=None``
    skips the confidence test); ``ref_cam``: ``(K, E)``; ``sources``: ``(depth, (K, E))`` per
    paired source view. A pixel is kept when at least ``min_views`` sources agree (reprojection
    error < ``max_px`` pixels and relative depth difference < ``max_rel``), its confidence is
    > ``min_conf``, and μ lies inside ``depth_range`` (inclusive) when one is given.

    Returns float32 ``mu`` and ``sigma`` (0 outside the mask), bool ``mask`` and int32
    ``agreeing`` (the number of agreeing sources, before the other tests), all (H, W).
    """
    ref_depth = _np(ref_depth)
    agree, depths = agreement(ref_depth, ref_cam, sources, max_px=max_px, max_rel=max_rel, mode=mode)
    count, mu, sigma = agreeing_stats(ref_depth, agree, depths)
    mask = (count >= min_views) & np.isfinite(ref_depth) & (ref_depth > 0)
    if ref_conf is not None:
        conf = _np(ref_conf)
        if conf.shape != ref_depth.shape:
            raise ValueError(f"confidence shape {conf.shape} does not match depth shape {ref_depth.shape}")
        mask &= conf > min_conf
    if depth_range is not None:
        lo, hi = depth_range
        mask &= (mu >= lo) & (mu <= hi)
    return {
        "mu": np.where(mask, mu, 0.0).astype(np.float32),
        "sigma": np.where(mask, sigma, 0.0).astype(np.float32),
        "mask": mask,
        "agreeing": count.astype(np.int32),
    }


def label_stats(labels: dict, gt_depth=None) -> dict[str, float]:
    """``coverage`` (the labelled share of pixels) and, when any pixel is labelled,
    ``mean_sigma``; with ``gt_depth`` (0 = no ground truth) also ``abs_err``, the mean
    ``|mu - gt|`` over the labelled pixels that have a ground truth, when there are any.
    Keys without a defined value are left out rather than set to NaN, so averages over views
    stay finite."""
    mask = np.asarray(labels["mask"], dtype=bool)
    stats = {"coverage": float(mask.mean()) if mask.size else 0.0}
    if mask.any():
        stats["mean_sigma"] = float(_np(labels["sigma"])[mask].mean())
    if gt_depth is not None:
        gt = _np(gt_depth)
        if gt.shape != mask.shape:
            raise ValueError(f"gt depth shape {gt.shape} does not match label shape {mask.shape}")
        both = mask & np.isfinite(gt) & (gt > 0)
        if both.any():
            stats["abs_err"] = float(np.abs(_np(labels["mu"])[both] - gt[both]).mean())
    return stats
