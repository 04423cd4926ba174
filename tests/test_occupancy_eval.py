"""Occupancy evaluation: the grid, LiDAR-derived occupancy, visibility and the scores, in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fieldkd.platform.evaluate.occupancy import (
    behind_surface,
    depth_errors,
    grid_points,
    lidar_occupancy,
    metrics_from_counts,
    occupancy_counts,
    occupancy_metrics,
    visible_from_depth,
    visible_from_points,
)

CAM = dict(up=(0.0, -1.0, 0.0), forward=(0.0, 0.0, 1.0))  # range images around an OpenCV camera frame
K = np.array([[100.0, 0.0, 99.5], [0.0, 100.0, 49.5], [0.0, 0.0, 1.0]])  # 200 x 100 image, +-45 deg across


def test_grid_layout_and_pitch():
    g = grid_points()
    assert g.shape == (1, 160, 80, 3)
    level = grid_points(pitch_deg=0.0)
    assert np.allclose(level[..., 1], 0.375)
    assert level[0, 0, 0, 0] == -4.0 and level[0, 0, -1, 0] == 4.0
    assert level[0, 0, 0, 2] == 4.0 and level[0, -1, 0, 2] == 20.0
    # pitched down: the level slab's far end rises in the image (y more negative), lengths kept
    assert g[0, -1, 40, 1] < g[0, 0, 40, 1]
    assert np.allclose(np.linalg.norm(g, axis=-1), np.linalg.norm(level, axis=-1))
    a = math.radians(5.0)
    assert np.allclose(g[0, -1, 0], [-4.0, 0.375 * math.cos(a) - 20 * math.sin(a), 0.375 * math.sin(a) + 20 * math.cos(a)])
    assert grid_points(points_per_metre=5, y_slices=3).shape == (3, 80, 40, 3)


def _sweep(origin, hit, az_deg=(-75, 75), el_deg=(-12, 1), step=0.1):
    """An exact LiDAR sweep: rays on an angular grid (camera frame axes) from ``origin``,
    each returning its first hit ``hit(origins, dirs) -> t`` (inf: no return)."""
    az = np.radians(np.arange(az_deg[0] + step / 2, az_deg[1], step))
    el = np.radians(np.arange(el_deg[0] + step / 2, el_deg[1], step))
    a, e = np.meshgrid(az, el, indexing="ij")
    dirs = np.stack([np.cos(e) * np.sin(a), -np.sin(e), np.cos(e) * np.cos(a)], axis=-1).reshape(-1, 3)
    t = hit(np.broadcast_to(origin, dirs.shape), dirs)
    keep = np.isfinite(t)
    return dirs[keep] * t[keep, None]  # points in the sensor frame (a translated camera frame)


def _plane_z(z0):
    def hit(o, d):
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (z0 - o[:, 2]) / d[:, 2]
        return np.where(t > 0, t, np.inf)
    return hit


def _box(lo, hi):
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)

    def hit(o, d):
        with np.errstate(divide="ignore", invalid="ignore"):
            t1, t2 = (lo - o) / d, (hi - o) / d
        near = np.nanmax(np.minimum(t1, t2), axis=-1)
        far = np.nanmin(np.maximum(t1, t2), axis=-1)
        return np.where((far >= near) & (far > 0), np.maximum(near, 0.0), np.inf)
    return hit


def _first(*hits):
    return lambda o, d: np.min([h(o, d) for h in hits], axis=0)


def _pose(t):
    pose = np.eye(4)
    pose[:3, 3] = t
    return pose


def test_wall_cells_behind_are_invisible_and_occupied_cells_before_are_visible_and_empty():
    cells = grid_points(pitch_deg=0.0).reshape(-1, 3)
    wall = 10.0
    depth = np.full((100, 200), wall)
    visible = visible_from_depth(cells, depth, K)
    in_view = np.abs(cells[:, 0]) / cells[:, 2] <= 1.0  # the image spans +-45 degrees across
    before, behind = cells[:, 2] < wall, cells[:, 2] > wall
    assert visible[before & in_view].all() and not visible[behind].any() and not visible[~in_view].any()

    sweeps = [(_sweep(np.array([0.0, 0.0, dz]), _plane_z(wall), az_deg=(-46, 46), el_deg=(-6, 1)),
               _pose([0.0, 0.0, dz])) for dz in (0.0, 0.5, 1.0)]
    occupied, count = lidar_occupancy(cells, sweeps, min_behind=3, **CAM)
    assert occupied[behind].all() and not occupied[before].any()
    assert set(np.unique(count[before])) == {0} and set(np.unique(count[behind])) == {3}
    # the same wall seen in the LiDAR points of the first sweep gives the same visibility within the view
    seen = visible_from_points(cells, sweeps[0][0], **{k: v for k, v in CAM.items() if k not in ("up", "forward")})
    assert (seen == before)[in_view].all()


def test_lidar_occupancy_of_a_box_scene_agrees_with_exact_ray_casting():
    box_lo, box_hi, wall = np.array([-1.0, -1.0, 8.0]), np.array([1.0, 1.0, 10.0]), 15.0
    scene = _first(_box(box_lo, box_hi), _plane_z(wall))
    sensors = [np.array(s) for s in ([0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.5, 0.0, 2.0])]
    sweeps = [(_sweep(s, scene), _pose(s)) for s in sensors]
    cells = grid_points(pitch_deg=0.0).reshape(-1, 3)
    occupied, _ = lidar_occupancy(cells, sweeps, min_behind=2, azimuth_res_deg=0.1, elevation_res_deg=0.1, **CAM)

    exact_count = np.zeros(len(cells), dtype=int)
    for s in sensors:
        d = cells - s
        dist = np.linalg.norm(d, axis=-1)
        exact_count += dist > scene(np.broadcast_to(s, d.shape), d / dist[:, None])
    exact = exact_count >= 2
    # both classes are there, with the box's shadow in between
    assert 0.2 < exact.mean() < 0.8 and (exact & (cells[:, 2] < wall)).sum() > 50
    wrong = occupied != exact
    assert wrong.mean() < 0.005
    # the few disagreements are quantisation at surfaces: within 0.2 m of the box or the wall
    outside = np.maximum(np.maximum(box_lo - cells, cells - box_hi), 0.0)
    to_box = np.linalg.norm(outside, axis=-1)
    to_box_surface = np.where(to_box > 0, to_box, np.min(np.minimum(cells - box_lo, box_hi - cells), axis=-1))
    near_surface = (to_box_surface < 0.2) | (np.abs(cells[:, 2] - wall) < 0.2)
    # or at the edges of the box's shadows (the silhouette seen from some sensor)
    assert (near_surface | _near_silhouette(cells, sensors, box_lo, box_hi))[wrong].all()


def _near_silhouette(cells, sensors, lo, hi, tol=0.2):
    """Cells whose sight line from some sensor passes within ``tol`` of entering or missing the box."""
    near = np.zeros(len(cells), bool)
    for s in sensors:
        d = cells - s
        dist = np.linalg.norm(d, axis=-1)
        unit = d / dist[:, None]
        grown, shrunk = _box(lo - tol, hi + tol), _box(lo + tol, hi - tol)
        o = np.broadcast_to(s, d.shape)
        near |= np.isfinite(grown(o, unit)) & ~np.isfinite(shrunk(o, unit))
    return near


def test_no_returns_means_nothing_is_behind():
    assert not behind_surface(np.array([[0.0, 0.0, 5.0]]), np.zeros((0, 3)), **CAM).any()


def test_perfect_prediction_scores_one_and_all_empty_has_known_scores():
    rng = np.random.default_rng(0)
    gt = rng.random(500) < 0.3
    visible = rng.random(500) < 0.5
    perfect = occupancy_metrics(gt, gt, visible)
    assert all(v == 1.0 for v in perfect.values()), perfect
    empty = occupancy_metrics(np.zeros_like(gt), gt, visible)
    invisible = ~visible
    assert empty["ie_rec"] == 1.0
    assert empty["ie_acc"] == pytest.approx((invisible & ~gt).sum() / invisible.sum())
    assert empty["o_acc"] == pytest.approx((~gt).mean())
    assert empty["o_rec"] == 0.0 and math.isnan(empty["o_prec"])
    # counts add up over frames: two halves scored together equal the whole
    a = occupancy_counts(gt[:200], ~gt[:200], visible[:200])
    b = occupancy_counts(gt[200:], ~gt[200:], visible[200:])
    whole = metrics_from_counts({k: a[k] + b[k] for k in a})
    assert whole == pytest.approx(occupancy_metrics(gt, ~gt, visible))
    assert occupancy_metrics(gt, gt, visible, mask=np.arange(500) < 10)["o_acc"] == 1.0


def test_depth_errors_closed_forms_and_cap():
    gt = np.array([[10.0, 20.0], [40.0, 90.0]])  # 90 m is beyond the 80 m cap: not scored
    perfect = depth_errors(gt, gt)
    assert perfect["abs_rel"] == 0.0 and perfect["rmse"] == 0.0 and perfect["a1"] == 1.0
    double = depth_errors(2 * gt, gt)  # 80 m prediction clipped to 80: still exactly double
    assert double["abs_rel"] == pytest.approx(1.0)
    assert double["sq_rel"] == pytest.approx(np.mean([10.0, 20.0, 40.0]))
    assert double["rmse_log"] == pytest.approx(math.log(2.0))
    assert double["a1"] == double["a2"] == double["a3"] == 0.0  # 2 > 1.25^3
    half_more = depth_errors(1.5 * gt, gt)  # 1.25 < 1.5 < 1.25^2
    assert half_more["a1"] == 0.0 and half_more["a2"] == 1.0 and half_more["a3"] == 1.0
    capped = depth_errors(np.full((2, 2), 500.0), gt)  # predictions beyond the cap count as 80 m
    assert capped["rmse"] == pytest.approx(np.sqrt(np.mean([70.0**2, 60.0**2, 40.0**2])))
    assert depth_errors(2 * gt, gt, median_scaling=True)["abs_rel"] == pytest.approx(0.0)
    with pytest.raises(ValueError):
        depth_errors(gt, np.zeros_like(gt))
