"""Occupancy and depth evaluation of density fields over a camera's frustum (KITTI-360 style).

Pure numpy functions:

- ``grid_points``: the evaluation grid in the input camera's frame: a horizontal
  slab in front of the car (x across, z ahead, y down), pitched with the camera.
- ``behind_surface`` / ``lidar_occupancy``: ground-truth occupancy from LiDAR sweeps.
  Each sweep is turned into a range image (binned by azimuth and elevation around
  its sensor); a cell is behind a surface in that sweep when it lies farther than
  the range measured in its direction. A cell behind a surface in at least
  ``min_behind`` of the sweeps is occupied (the official threshold: 18 of 20).
  Directions without any return count as free (not behind).
- ``visible_from_depth`` / ``visible_from_points``: a cell is visible when it lies in
  front of the first surface seen from the input camera.
- ``occupancy_counts`` / ``occupancy_metrics``: the scores. Classes: "occupied" is
  the positive class of ``o_prec``/``o_rec``; the ``ie_*`` scores are about the
  invisible cells with "empty" as the positive class.
- ``depth_errors``: abs_rel, sq_rel, rmse, rmse_log, a1/a2/a3 with depths capped.
"""

from __future__ import annotations

import math

import numpy as np

from ._arrays import to_numpy

N_SWEEPS = 20     # the official evaluator's sweeps per frame (the frame's and the next 19)
MIN_BEHIND = 18   # ... of which a cell must be behind a surface in this many to count as occupied
GRID_DEFAULTS = dict(x_range=(-4.0, 4.0), z_range=(4.0, 20.0), y_range=(0.0, 0.75), y_slices=1,
                     points_per_metre=10.0, pitch_deg=5.0)


def grid_points(x_range=(-4.0, 4.0), z_range=(4.0, 20.0), y_range=(0.0, 0.75), y_slices: int = 1,
                points_per_metre: float = 10.0, pitch_deg: float = 5.0) -> np.ndarray:
    """The evaluation grid [y_slices, n_z, n_x, 3] in the input camera's frame (OpenCV, metres).

    The grid is level in a frame pitched by ``pitch_deg`` against the camera: a camera
    pitched down by that angle sees it as a horizontal slab. Along x and z there are
    round(points_per_metre * extent) points, ends included; the y slices sit at the
    centres of ``y_slices`` equal bins of ``y_range`` (one slice: y = 0.375 m)."""
    n_x = max(round(points_per_metre * (x_range[1] - x_range[0])), 1)
    n_z = max(round(points_per_metre * (z_range[1] - z_range[0])), 1)
    xs, zs = np.linspace(*x_range, n_x), np.linspace(*z_range, n_z)
    ys = y_range[0] + (np.arange(y_slices) + 0.5) * (y_range[1] - y_range[0]) / y_slices
    y, z, x = np.meshgrid(ys, zs, xs, indexing="ij")
    level = np.stack([x, y, z], axis=-1)
    return level @ pitch_rotation(pitch_deg).T


def pitch_rotation(pitch_deg: float) -> np.ndarray:
    """Level frame -> camera frame of a camera pitched down by ``pitch_deg`` (rotation about x)."""
    a = math.radians(pitch_deg)
    return np.array([[1.0, 0.0, 0.0], [0.0, math.cos(a), -math.sin(a)], [0.0, math.sin(a), math.cos(a)]])


def _spherical(vectors: np.ndarray, up: np.ndarray, forward: np.ndarray):
    """Range, azimuth and elevation of vectors [N, 3] in a frame with the given up and forward axes."""
    up = up / np.linalg.norm(up)
    forward = forward - up * (forward @ up)
    forward = forward / np.linalg.norm(forward)
    side = np.cross(up, forward)
    a, b, c = vectors @ forward, vectors @ side, vectors @ up
    rng = np.linalg.norm(vectors, axis=-1)
    return rng, np.arctan2(b, a), np.arctan2(c, np.hypot(a, b))


def behind_surface(queries, surface_points, origin=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0), forward=(1.0, 0.0, 0.0),
                   azimuth_res_deg: float = 0.2, elevation_res_deg: float = 0.4) -> np.ndarray:
    """Which query points [N, 3] lie beyond the surface seen from ``origin``: bool [N].

    surface_points [M, 3] (e.g. one LiDAR sweep, same frame as the queries) become a
    range image around ``origin`` (bins of the given angular size; the nearest return
    per bin); a query is behind when its range exceeds its bin's. A bin without a
    return has infinite range. ``up``/``forward``: the range image's axes (z-up,
    x-forward for a Velodyne; use up=(0, -1, 0), forward=(0, 0, 1) for an OpenCV camera)."""
    q = to_numpy(queries).reshape(-1, 3)
    s = to_numpy(surface_points).reshape(-1, 3)
    o, u, f = (np.asarray(v, dtype=np.float64) for v in (origin, up, forward))
    az_res, el_res = math.radians(azimuth_res_deg), math.radians(elevation_res_deg)
    n_az, n_el = math.ceil(2 * math.pi / az_res), math.ceil(math.pi / el_res) + 1

    def bins(vectors):
        rng, az, el = _spherical(vectors, u, f)
        ia = np.floor((az + math.pi) / az_res).astype(np.int64) % n_az
        ie = np.clip(np.floor((el + math.pi / 2) / el_res).astype(np.int64), 0, n_el - 1)
        return rng, ia * n_el + ie

    ranges = np.full(n_az * n_el, np.inf)
    if len(s):
        s_rng, s_bin = bins(s - o)
        np.minimum.at(ranges, s_bin, s_rng)
    q_rng, q_bin = bins(q - o)
    return q_rng > ranges[q_bin]


def lidar_occupancy(queries_world, sweeps, min_behind: int = MIN_BEHIND, **range_image) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth occupancy of world points [N, 3] from LiDAR sweeps.

    sweeps: a sequence of (points [M, 3] in the sensor frame, sensor_to_world [4, 4]),
    e.g. the 20 sweeps from the evaluated frame on. Returns (occupied bool [N],
    behind count int [N]): occupied where the point is behind a surface in at least
    ``min_behind`` sweeps. ``range_image``: ``behind_surface``'s angular options."""
    if not 0 < min_behind <= len(sweeps):
        raise ValueError(f"min_behind must be in 1..{len(sweeps)} (the number of sweeps), got {min_behind}")
    q = to_numpy(queries_world).reshape(-1, 3)
    count = np.zeros(len(q), dtype=np.int64)
    for points, sensor_to_world in sweeps:
        pose = to_numpy(sensor_to_world)
        local = (q - pose[:3, 3]) @ pose[:3, :3]  # world -> sensor frame
        count += behind_surface(local, points, **range_image)
    return count >= min_behind, count


def visible_from_depth(points_cam, depth, K) -> np.ndarray:
    """Cells [N, 3] (input camera frame) in front of the first surface of the input view's
    depth map depth [H, W] (metres along z; 0 or non-finite: no surface, so visible).

    A cell behind the camera or projecting outside the image is not visible."""
    p = to_numpy(points_cam).reshape(-1, 3)
    d = to_numpy(depth)
    k = to_numpy(K)
    h, w = d.shape
    z = p[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = k[0, 0] * p[:, 0] / z + k[0, 1] * p[:, 1] / z + k[0, 2]
        v = k[1, 1] * p[:, 1] / z + k[1, 2]
    inside = (z > 0) & (u >= -0.5) & (u <= w - 0.5) & (v >= -0.5) & (v <= h - 0.5)
    ui = np.clip(np.round(np.nan_to_num(u)), 0, w - 1).astype(np.int64)
    vi = np.clip(np.round(np.nan_to_num(v)), 0, h - 1).astype(np.int64)
    surface = d[vi, ui]
    free = ~np.isfinite(surface) | (surface <= 0) | (z < surface)
    return inside & free


def visible_from_points(points_cam, surface_points_cam, **range_image) -> np.ndarray:
    """Cells [N, 3] in front of the first surface that the points [M, 3] (e.g. the frame's
    LiDAR sweep, in the input camera's frame) show from the camera centre."""
    options = dict(up=(0.0, -1.0, 0.0), forward=(0.0, 0.0, 1.0), **range_image)
    return ~behind_surface(points_cam, surface_points_cam, **options)


COUNT_KEYS = ("n", "correct", "n_invisible", "correct_invisible", "invisible_empty", "invisible_empty_pred_empty",
              "invisible_pred_empty", "pred_occupied", "gt_occupied", "true_occupied")


def occupancy_counts(pred_occupied, gt_occupied, visible, mask=None) -> dict[str, int]:
    """Confusion counts of one frame (sum them over frames, then ``metrics_from_counts``)."""
    pred, gt, vis = (to_numpy(x, dtype=bool).reshape(-1) for x in (pred_occupied, gt_occupied, visible))
    if not pred.shape == gt.shape == vis.shape:
        raise ValueError(f"pred {pred.shape}, gt {gt.shape} and visible {vis.shape} differ in size")
    if mask is not None:
        keep = to_numpy(mask, dtype=bool).reshape(-1)
        pred, gt, vis = pred[keep], gt[keep], vis[keep]
    inv = ~vis
    return {
        "n": int(pred.size),
        "correct": int((pred == gt).sum()),
        "n_invisible": int(inv.sum()),
        "correct_invisible": int(((pred == gt) & inv).sum()),
        "invisible_empty": int((inv & ~gt).sum()),
        "invisible_empty_pred_empty": int((inv & ~gt & ~pred).sum()),
        "invisible_pred_empty": int((inv & ~pred).sum()),
        "pred_occupied": int(pred.sum()),
        "gt_occupied": int(gt.sum()),
        "true_occupied": int((pred & gt).sum()),
    }


def _ratio(num: int, den: int) -> float:
    return num / den if den else float("nan")


def metrics_from_counts(counts: dict) -> dict[str, float]:
    """The scores of summed counts; a ratio with nothing to count is NaN.

    - o_acc: accuracy over all cells; ie_acc: accuracy over invisible cells;
    - ie_rec: invisible, truly empty cells predicted empty / invisible, truly empty cells;
    - ie_prec: invisible cells predicted empty that are truly empty / invisible cells predicted empty;
    - o_prec, o_rec: precision and recall of the class "occupied" over all cells."""
    c = counts
    return {
        "o_acc": _ratio(c["correct"], c["n"]),
        "ie_acc": _ratio(c["correct_invisible"], c["n_invisible"]),
        "ie_rec": _ratio(c["invisible_empty_pred_empty"], c["invisible_empty"]),
        "ie_prec": _ratio(c["invisible_empty_pred_empty"], c["invisible_pred_empty"]),
        "o_prec": _ratio(c["true_occupied"], c["pred_occupied"]),
        "o_rec": _ratio(c["true_occupied"], c["gt_occupied"]),
    }


def occupancy_metrics(pred_occupied, gt_occupied, visible, mask=None) -> dict[str, float]:
    """Scores of one frame; predicted occupied is typically ``density > 0.5``."""
    return metrics_from_counts(occupancy_counts(pred_occupied, gt_occupied, visible, mask))


def depth_errors(pred, gt, max_depth: float = 80.0, min_depth: float = 1e-3,
                 median_scaling: bool = False) -> dict[str, float]:
    """The KITTI depth metrics on pixels with min_depth < gt < max_depth; predictions are
    clipped to [min_depth, max_depth] (after optional median scaling). Raises ValueError
    when no pixel has a ground truth."""
    p, g = to_numpy(pred), to_numpy(gt)
    if p.shape != g.shape:
        raise ValueError(f"pred and gt depth shapes differ: {p.shape} vs {g.shape}")
    valid = np.isfinite(g) & (g > min_depth) & (g < max_depth)
    if not valid.any():
        raise ValueError("depth_errors: no pixel has a ground-truth depth in range")
    p, g = p[valid], g[valid]
    if median_scaling:
        p = p * np.median(g) / np.median(p)
    p = np.clip(np.nan_to_num(p, nan=max_depth), min_depth, max_depth)
    ratio = np.maximum(p / g, g / p)
    return {
        "abs_rel": float(np.mean(np.abs(p - g) / g)),
        "sq_rel": float(np.mean((p - g) ** 2 / g)),
        "rmse": float(np.sqrt(np.mean((p - g) ** 2))),
        "rmse_log": float(np.sqrt(np.mean((np.log(p) - np.log(g)) ** 2))),
        "a1": float(np.mean(ratio < 1.25)),
        "a2": float(np.mean(ratio < 1.25**2)),
        "a3": float(np.mean(ratio < 1.25**3)),
    }
