"""Multi-view stereo evaluation: fuse depth maps into a point cloud, DTU's point-cloud metrics,
depth-map errors, and point-cloud pictures.

Cameras are ``(K 3x3, E 4x4 world->camera)``; depths are camera-space z in the units of the
camera translation (millimetres for DTU, which the metric names and defaults assume).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from ..networks.mvs.consistency import agreeing_stats, agreement, backproject
from ..scenes.ply import write_points
from ._arrays import to_numpy

__all__ = [
    "cloud_figure",
    "depth_map_errors",
    "error_coloured",
    "fuse",
    "mvs_metrics",
    "thin_points",
    "write_point_cloud_ply",
]

_VIEW_KEYS = ("depth", "confidence", "image", "K", "E")


def _view(views, key) -> dict:
    view = views[key]
    if not isinstance(view, Mapping):
        view = dict(zip(_VIEW_KEYS, view))
    missing = [k for k in ("depth", "K", "E") if view.get(k) is None]
    if missing:
        raise ValueError(f"view {key!r} has no {', '.join(missing)}")
    return view


def _pair_list(pairs) -> list[tuple]:
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    return [(ref, list(srcs)) for ref, srcs in items]


def _colours_at(image, shape: tuple[int, int], rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """uint8 colours of the depth pixels (rows, cols) from an image of any size (nearest pixel
    after scaling), given as (3, H, W) or (H, W, 3), uint8 or floats in [0, 1]."""
    if image is None:
        return np.full((len(rows), 3), 128, dtype=np.uint8)
    img = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    if img.ndim == 3 and img.shape[0] == 3 and img.shape[-1] != 3:
        img = np.moveaxis(img, 0, -1)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"an image must be (3, H, W) or (H, W, 3), got {img.shape}")
    if img.dtype != np.uint8:
        img = np.round(np.clip(img.astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)
    ih, iw = img.shape[:2]
    # Pixel centres map to pixel centres, whatever the two resolutions.
    r = np.clip(np.floor((rows + 0.5) * ih / shape[0]), 0, ih - 1).astype(np.int64)
    c = np.clip(np.floor((cols + 0.5) * iw / shape[1]), 0, iw - 1).astype(np.int64)
    return img[r, c]


def fuse(views, pairs, *, min_conf: float = 0.05, max_px: float = 1.0, max_rel: float = 0.01,
         min_views: int = 5, mode: str = "bilinear") -> tuple[np.ndarray, np.ndarray]:
    """The portable ("normal") depth-map fusion of the MVSNet family.

    ``views``: a list or dict of per-view ``{"depth", "confidence", "image", "K", "E"}``
    mappings (or tuples in that order); confidence and image may be None (no confidence test;
    grey points). ``pairs``: ``{ref: [src, ...]}`` or ``[(ref, [src, ...]), ...]`` with keys
    into ``views``. For each reference view, a pixel is kept when its confidence is
    > ``min_conf`` and at least ``min_views`` of its sources agree (reprojection error <
    ``max_px`` px, relative depth difference < ``max_rel``); its depth becomes the mean of its
    own and the agreeing reprojected depths and is back-projected to the world, coloured from
    the reference image. Returns ``(points (N, 3) float32, colours (N, 3) uint8)``.
    """
    all_points, all_colours = [], []
    for ref, srcs in _pair_list(pairs):
        view = _view(views, ref)
        depth = to_numpy(view["depth"])
        cam = (view["K"], view["E"])
        sources = [(to_numpy(v["depth"]), (v["K"], v["E"])) for v in (_view(views, s) for s in srcs)]
        agree, depths = agreement(depth, cam, sources, max_px=max_px, max_rel=max_rel, mode=mode)
        count, mean, _ = agreeing_stats(depth, agree, depths)
        keep = (count >= min_views) & (mean > 0)
        if view.get("confidence") is not None:
            keep &= to_numpy(view["confidence"]) > min_conf
        rows, cols = np.nonzero(keep)
        xy = np.stack([cols, rows], axis=-1).astype(np.float64)
        all_points.append(backproject(mean[rows, cols], *cam, xy=xy).astype(np.float32))
        all_colours.append(_colours_at(view.get("image"), depth.shape, rows, cols))
    if not all_points:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
    return np.concatenate(all_points), np.concatenate(all_colours)


def thin_points(points, spacing: float) -> np.ndarray:
    """Voxel thinning: of the points in each cube of side ``spacing`` (a grid anchored at the
    origin), keep the one nearest the cube's centre. Points are kept, not averaged, and the
    choice does not depend on their order. (DTU's evaluation thins greedily by radius instead:
    both even out the density so dense patches do not dominate the means; the voxel version is
    vectorised, and leaves neighbours between ``spacing``/2 and ``spacing`` apart across cube
    faces where greedy radius thinning would drop one.) ``spacing <= 0`` keeps every point."""
    pts = to_numpy(points).reshape(-1, 3)
    if spacing <= 0 or len(pts) == 0:
        return pts
    cell = np.floor(pts / spacing).astype(np.int64)
    off = pts / spacing - cell - 0.5
    dist = (off**2).sum(-1)
    cell -= cell.min(0)
    dims = cell.max(0) + 1
    if np.prod(dims.astype(np.float64)) < 2.0**62:
        key = (cell[:, 0] * dims[1] + cell[:, 1]) * dims[2] + cell[:, 2]
    else:  # a huge extent for this spacing: number the occupied cells instead
        key = np.unique(cell, axis=0, return_inverse=True)[1].reshape(-1)
    order = np.lexsort((dist, key))
    first = np.ones(len(order), dtype=bool)
    first[1:] = key[order][1:] != key[order][:-1]
    return pts[np.sort(order[first])]


def _mean_within(distances: np.ndarray, max_dist: float) -> float:
    inside = distances[distances < max_dist]
    # With nothing within reach, the cloud is at least max_dist away: report that, not NaN.
    return float(inside.mean()) if inside.size else float(max_dist)


def mvs_metrics(pred_points, gt_points, *, max_dist: float = 20.0, thin: float = 0.2) -> dict[str, float]:
    """DTU's point-cloud metrics (lower is better, in the clouds' units).

    Both clouds are first thinned to ``thin`` spacing (:func:`thin_points`, voxel thinning;
    ``thin=0`` keeps all points). ``accuracy`` is the mean distance from each predicted point
    to its nearest ground-truth point, ``completeness`` the mean distance from each
    ground-truth point to its nearest predicted point; distances of ``max_dist`` or more are
    left out of the means (as DTUeval-python does), and a mean with nothing left is
    ``max_dist``. ``overall`` is their mean. DTU's MATLAB tool also masks both clouds to the
    observed region; that is not done here. Raises ValueError on an empty cloud.
    """
    pred, gt = to_numpy(pred_points).reshape(-1, 3), to_numpy(gt_points).reshape(-1, 3)
    if len(pred) == 0 or len(gt) == 0:
        raise ValueError(f"mvs_metrics: empty point cloud ({len(pred)} predicted, {len(gt)} ground-truth points)")
    pred, gt = thin_points(pred, thin), thin_points(gt, thin)
    d_pred, _ = cKDTree(gt).query(pred, workers=-1)
    d_gt, _ = cKDTree(pred).query(gt, workers=-1)
    accuracy, completeness = _mean_within(d_pred, max_dist), _mean_within(d_gt, max_dist)
    return {"accuracy": accuracy, "completeness": completeness, "overall": (accuracy + completeness) / 2}


def depth_map_errors(pred, gt, mask=None, thresholds: Sequence[float] = (2.0, 4.0)) -> dict[str, float]:
    """MVSNet's depth-map errors over the pixels with a ground truth (finite ``gt > 0``),
    further restricted to the boolean ``mask`` when given: ``abs_err``, the mean absolute
    error, and ``within_{t}mm`` per threshold, the share (0..1) of pixels with absolute error
    <= t (MVSNet reports its complement, the share above t). Raises ValueError when no pixel
    is left."""
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
        raise ValueError("depth_map_errors: no pixel has a ground-truth depth (gt > 0) inside the mask")
    # A non-finite prediction counts as infinitely wrong, not as missing.
    err = np.abs(np.nan_to_num(p[valid], nan=np.inf) - g[valid])
    out = {"abs_err": float(np.mean(err)) if np.isfinite(err).all() else float("inf")}
    for t in thresholds:
        out[f"within_{t:g}mm"] = float(np.mean(err <= t))
    return out


def write_point_cloud_ply(path: str | Path, points, colours=None) -> None:
    """A binary PLY of the points (N, 3), with uint8 (or [0, 1] float) colours when given."""
    write_points(path, to_numpy(points, np.float32), None if colours is None else np.asarray(colours))


def error_coloured(points, gt_points, *, vmax: float = 2.0, cmap: str = "inferno") -> np.ndarray:
    """uint8 (N, 3) colours of ``points`` by their distance to the nearest ground-truth point,
    through ``cmap`` from 0 to ``vmax`` (clipped), so two clouds coloured with one ``vmax``
    compare directly."""
    from matplotlib import colormaps  # only needed when pictures are made

    pts = to_numpy(points).reshape(-1, 3)
    if len(pts) == 0:
        return np.zeros((0, 3), np.uint8)
    dist, _ = cKDTree(to_numpy(gt_points).reshape(-1, 3)).query(pts, workers=-1)
    rgb = colormaps[cmap](np.clip(dist / vmax, 0.0, 1.0))[:, :3]
    return np.round(rgb * 255.0).astype(np.uint8)


def _view_basis(points: np.ndarray, view_dir) -> np.ndarray:
    """Rows: image right, image down, viewing direction (orthonormal)."""
    if view_dir is None:
        # Look along the cloud's thinnest axis: a scanned surface is seen face-on.
        centred = points - points.mean(0)
        _, _, vt = np.linalg.svd(centred[:: max(1, len(points) // 20000)], full_matrices=False)
        forward = vt[2] * (1.0 if vt[2][np.argmax(np.abs(vt[2]))] > 0 else -1.0)
    else:
        forward = to_numpy(view_dir).reshape(3)
        forward = forward / np.linalg.norm(forward)
    helper = np.array([0.0, 1.0, 0.0]) if abs(forward[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
    right = np.cross(helper, forward)
    right /= np.linalg.norm(right)
    return np.stack([right, np.cross(forward, right), forward])


def cloud_figure(clouds: Sequence, *, view_dir=None, size: int = 384, radius: int = 1,
                 background: int = 255) -> np.ndarray:
    """Side-by-side orthographic pictures of point clouds, uint8 (size, size * len(clouds), 3).

    ``clouds``: a sequence of ``(points (N, 3), colours (N, 3) uint8)``. All panels share one
    projection and framing (fitted to the first cloud's 1st to 99th percentiles), so the same
    point lands on the same pixel in each. ``view_dir`` is the viewing direction in world
    coordinates (default: the first cloud's thinnest principal axis). Each point is a square of
    side ``2 * radius - 1`` pixels; the nearest point wins a pixel.
    """
    first = to_numpy(clouds[0][0]).reshape(-1, 3)
    if len(first) == 0:
        raise ValueError("cloud_figure: the first cloud is empty")
    basis = _view_basis(first, view_dir)
    uv = first @ basis[:2].T
    lo, hi = np.percentile(uv, 1, axis=0), np.percentile(uv, 99, axis=0)
    centre, half = (lo + hi) / 2, max(float((hi - lo).max()) / 2 * 1.1, 1e-12)
    panels = []
    for pts, colours in clouds:
        panel = np.full((size, size, 3), background, dtype=np.uint8)
        pts = to_numpy(pts).reshape(-1, 3)
        colours = np.asarray(colours, dtype=np.uint8).reshape(-1, 3)
        proj = pts @ basis.T
        pix = np.floor((proj[:, :2] - centre + half) / (2 * half) * size).astype(np.int64)
        flats, depths, which = [], [], []
        for dy in range(-(radius - 1), radius):
            for dx in range(-(radius - 1), radius):
                c, r = pix[:, 0] + dx, pix[:, 1] + dy
                ok = np.nonzero((c >= 0) & (c < size) & (r >= 0) & (r < size))[0]
                flats.append(r[ok] * size + c[ok])
                depths.append(proj[ok, 2])
                which.append(ok)
        flat, depth, which = np.concatenate(flats), np.concatenate(depths), np.concatenate(which)
        # A z-buffer: sort by pixel, nearest first, and keep the first point of each pixel.
        order = np.lexsort((depth, flat))
        first_of = np.ones(len(order), dtype=bool)
        first_of[1:] = flat[order][1:] != flat[order][:-1]
        chosen = order[first_of]
        panel.reshape(-1, 3)[flat[chosen]] = colours[which[chosen]]
        panels.append(panel)
    return np.concatenate(panels, axis=1)
