"""Small uint8 images for logging: prediction next to ground truth, error maps, depth."""

from __future__ import annotations

import numpy as np

from ._arrays import as_image_pair, to_numpy

__all__ = ["side_by_side", "error_map", "colorize", "to_uint8"]


def to_uint8(img) -> np.ndarray:
    """An image with values in [0, 1] (clipped) as uint8; uint8 input is kept as is."""
    if isinstance(img, np.ndarray) and img.dtype == np.uint8:
        return img
    return np.round(np.clip(to_numpy(img), 0.0, 1.0) * 255.0).astype(np.uint8)


def colorize(values, vmin: float, vmax: float, cmap: str = "turbo", valid=None) -> np.ndarray:
    """(H, W) values mapped through a matplotlib colormap to uint8 (H, W, 3).

    Pixels outside ``valid`` (and non-finite ones) are black, so missing depth
    is not mistaken for the colour of the near plane.
    """
    from matplotlib import colormaps  # only needed when images are actually made

    v = to_numpy(values)
    ok = np.isfinite(v) if valid is None else np.isfinite(v) & to_numpy(valid, bool)
    span = vmax - vmin if vmax > vmin else 1.0
    unit = np.clip(np.where(ok, v - vmin, 0.0) / span, 0.0, 1.0)
    rgb = colormaps[cmap](unit)[..., :3]
    rgb[~ok] = 0.0
    return to_uint8(rgb)


def _depth_valid(depth: np.ndarray) -> np.ndarray:
    # 0 marks "no surface", as in scene depth maps and depth_metrics.
    return np.isfinite(depth) & (depth > 0)


def _shared_range(maps: list[np.ndarray]) -> tuple[float, float]:
    """Min and max over the valid pixels of all maps, so colours mean the same depth."""
    vals = np.concatenate([m[_depth_valid(m)] for m in maps])
    if vals.size == 0:
        return 0.0, 1.0
    return float(vals.min()), float(vals.max())


def error_map(pred, gt, cmap: str = "inferno", vmax: float | None = None) -> np.ndarray:
    """Per-pixel mean absolute colour error as a uint8 (H, W, 3) heat map.

    ``vmax`` fixes the top of the colour scale (use it to compare maps across
    steps); by default the largest error in this image is used.
    """
    p, g = as_image_pair(pred, gt)
    err = np.abs(p - g).mean(axis=-1)
    top = float(err.max()) if vmax is None else float(vmax)
    return colorize(err, 0.0, top if top > 0 else 1.0, cmap)


def side_by_side(
    pred,
    gt,
    depth_pred=None,
    depth_gt=None,
    with_error: bool = False,
    cmap: str = "turbo",
) -> np.ndarray:
    """One uint8 (H, W * k, 3) strip: pred | gt [| error] [| depth_pred] [| depth_gt].

    Depth maps (H, W) share one colour range (the valid pixels of both) so that
    equal colours mean equal depth in the two panels.
    """
    if isinstance(pred, np.ndarray) and pred.dtype == np.uint8:
        pred = pred / 255.0
    if isinstance(gt, np.ndarray) and gt.dtype == np.uint8:
        gt = gt / 255.0
    p, g = as_image_pair(pred, gt)
    panels = [to_uint8(p), to_uint8(g)]
    if with_error:
        panels.append(error_map(p, g))
    depths = [to_numpy(d) for d in (depth_pred, depth_gt) if d is not None]
    for d in depths:
        if d.shape != p.shape[:2]:
            raise ValueError(f"depth map shape {d.shape} does not match image shape {p.shape[:2]}")
    if depths:
        lo, hi = _shared_range(depths)
        panels += [colorize(d, lo, hi, cmap, valid=_depth_valid(d)) for d in depths]
    return np.concatenate(panels, axis=1)
