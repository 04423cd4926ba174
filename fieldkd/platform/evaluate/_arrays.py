"""Turn torch tensors or array-likes into numpy, and check image shapes."""

from __future__ import annotations

import numpy as np


def to_numpy(x, dtype=np.float64) -> np.ndarray:
    """A numpy copy-or-view of ``x`` (torch tensor, numpy array or nested list).

    Metrics are computed in float64 so that sums over millions of pixels or
    points do not lose precision.
    """
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def as_image(x, name: str) -> np.ndarray:
    """``x`` as a float64 (H, W, 3) array; raises ValueError on other shapes."""
    img = to_numpy(x)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"{name}: expected an (H, W, 3) image, got shape {img.shape}")
    return img


def as_image_pair(pred, gt) -> tuple[np.ndarray, np.ndarray]:
    """Both images as float64 (H, W, 3) arrays of the same shape."""
    p, g = as_image(pred, "pred"), as_image(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred and gt shapes differ: {p.shape} vs {g.shape}")
    return p, g
