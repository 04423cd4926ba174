"""MVS geometry in closed form: reprojection, pseudo-labels, fusion, DTU metrics."""

from __future__ import annotations

import numpy as np
import pytest

from fieldkd.platform.evaluate.mvs import (
    cloud_figure,
    depth_map_errors,
    error_coloured,
    fuse,
    mvs_metrics,
    thin_points,
    write_point_cloud_ply,
)
from fieldkd.platform.networks.mvs.consistency import agreement, reproject, sample_depth
from fieldkd.platform.networks.mvs.labels import label_stats, pseudo_labels
from fieldkd.platform.scenes.ply import read_points

H, W, F = 48, 64, 60.0


def intrinsics(f=F, h=H, w=W):
    return np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]], dtype=np.float64)


def look_at(eye, target=(0.0, 0.0, 0.0), up=(0.0, 1.0, 0.0)):
    """World->camera 4x4 of a camera at ``eye`` looking at ``target`` (x right, y down, z forward)."""
    eye, target = np.asarray(eye, float), np.asarray(target, float)
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    E = np.eye(4)
    E[:3, :3] = np.stack([x, y, z])
    E[:3, 3] = -E[:3, :3] @ eye
    return E


def rays(K, E, h=H, w=W):
    """Camera centre (3,) and world directions (h, w, 3) with unit camera-space z, so the ray
    parameter is the depth."""
    ys, xs = np.indices((h, w), dtype=float)
    pix = np.stack([xs, ys, np.ones_like(xs)], -1)
    R, t = E[:3, :3], E[:3, 3]
    return -R.T @ t, (pix @ np.linalg.inv(K).T) @ R


def plane_depth(K, E, z0=0.0, h=H, w=W):
    """Exact depth of the plane z = z0 (world), 0 where the ray misses it."""
    c, d = rays(K, E, h, w)
    with np.errstate(divide="ignore"):
        t = (z0 - c[2]) / d[..., 2]
    return np.where(np.isfinite(t) & (t > 0), t, 0.0)


def bump(x, y, a=0.3, s=0.45):
    return a * np.exp(-(x**2 + y**2) / (2 * s**2))


def bump_depth(K, E, h=H, w=W):
    """Exact depth (bisection to 1e-12) of the height field z = bump(x, y) over |x|, |y| <= 1;
    0 outside that square. Cameras look down from above, so each ray crosses it once."""
    c, d = rays(K, E, h, w)
    lo = np.zeros((h, w))
    hi = (c[2] + 0.1) / -d[..., 2]
    for _ in range(60):
        mid = (lo + hi) / 2
        p = c + mid[..., None] * d
        above = p[..., 2] > bump(p[..., 0], p[..., 1])
        lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
    p = c + lo[..., None] * d
    inside = (np.abs(p[..., 0]) <= 1) & (np.abs(p[..., 1]) <= 1)
    return np.where(inside, lo, 0.0)


def cap_cameras(n, distance=4.0, tilt_deg=15.0):
    """``n`` cameras on a ring around +z at ``tilt_deg`` from the vertical, plus none at the pole."""
    tilt = np.radians(tilt_deg)
    eyes = [distance * np.array([np.sin(tilt) * np.cos(a), np.sin(tilt) * np.sin(a), np.cos(tilt)])
            for a in np.linspace(0, 2 * np.pi, n, endpoint=False)]
    return [look_at(e) for e in eyes]


# --- reprojection -------------------------------------------------------------------------------


def test_reproject_exact_plane_two_cameras_has_no_error():
    K = intrinsics()
    E_ref, E_src = look_at((0.0, -0.5, 4.0)), look_at((0.8, 0.3, 3.8))
    ref, src = plane_depth(K, E_ref), plane_depth(K, E_src)
    depth, px, rel, src_xy = reproject(ref, K, E_ref, src, K, E_src)
    ok = np.isfinite(px)
    assert ok.mean() > 0.7  # most of the reference lands inside the source image
    assert px[ok].max() < 1e-2 and rel[ok].max() < 1e-4
    assert np.allclose(depth[ok], ref[ok], rtol=1e-4)
    assert src_xy.shape == (H, W, 2)
    # Pixels that project outside the source are marked, not guessed.
    outside = (src_xy[..., 0] < 0) | (src_xy[..., 0] > W - 1) | (src_xy[..., 1] < 0) | (src_xy[..., 1] > H - 1)
    assert outside.any() and not ok[outside].any() and np.all(depth[outside] == 0)


def test_reproject_wrong_depth_gives_the_stereo_error():
    # Rectified stereo: same orientation, baseline b along x, fronto-parallel plane at Z.
    K, b, Z, eps = intrinsics(), 0.5, 4.0, 0.01
    E_ref, E_src = np.eye(4), np.eye(4)
    E_ref[2, 3] = E_src[2, 3] = Z  # the plane z = 0 is at depth Z in both
    E_src[0, 3] = -b
    src = np.full((H, W), Z)
    depth, px, rel, _ = reproject(np.full((H, W), Z * (1 + eps)), K, E_ref, src, K, E_src)
    ok = np.isfinite(px)
    assert ok.sum() > H * (W - 10)
    # The wrong depth lands F*b*|1/Z - 1/Z'| pixels away, at the true depth.
    assert np.allclose(px[ok], F * b * abs(1 / Z - 1 / (Z * (1 + eps))), atol=1e-6)
    assert np.allclose(rel[ok], eps / (1 + eps), atol=1e-9)
    assert np.allclose(depth[ok], Z, atol=1e-9)
    wrong, cams = np.full((H, W), Z * (1 + eps)), ((K, E_ref), [(src, (K, E_src))])
    # 0.074 px and 0.0099 relative: inside 1 px and 2 %, outside 0.5 % and outside 0.05 px.
    assert np.array_equal(agreement(wrong, cams[0], cams[1], max_px=1.0, max_rel=0.02)[0][0], ok)
    assert not agreement(wrong, cams[0], cams[1], max_px=1.0, max_rel=0.005)[0].any()
    assert not agreement(wrong, cams[0], cams[1], max_px=0.05, max_rel=0.02)[0].any()


def test_sample_depth_bilinear_and_nearest():
    depth = np.array([[1.0, 2.0, 0.0], [3.0, 4.0, 5.0]])
    xy = np.array([[0.5, 0.5], [0.25, 0.0], [1.5, 0.5], [1.0, 0.0], [-0.2, 0.0], [0.0, 1.4]])
    # Mean of four; a blend of two; a neighbour without depth gives 0; exact pixel; outside (twice).
    assert np.allclose(sample_depth(depth, xy), [2.5, 1.25, 0.0, 2.0, 0.0, 0.0])
    assert np.allclose(sample_depth(depth, xy, "nearest"), [4.0, 1.0, 5.0, 2.0, 1.0, 3.0])


# --- pseudo-labels ------------------------------------------------------------------------------


def _inside(points, K, E):
    """Whether world points project between the outer pixel centres of camera (K, E)."""
    cam = points @ E[:3, :3].T + E[:3, 3]
    xy = (cam @ K.T)[..., :2] / cam[..., 2:]
    return (cam[..., 2] > 0) & (xy[..., 0] >= 0) & (xy[..., 0] <= W - 1) & (xy[..., 1] >= 0) & (xy[..., 1] <= H - 1)


def _plane_views(n_src=10):
    K = intrinsics()
    cams = [look_at((0.0, 0.0, 4.0), target=(0.25, 0.0, 0.0))] + cap_cameras(n_src, tilt_deg=6.0)
    return K, cams, [plane_depth(K, E) for E in cams]


def test_pseudo_labels_on_a_consistent_plane():
    K, cams, depths = _plane_views()
    sources = [(d, (K, E)) for d, E in zip(depths[1:], cams[1:])]
    labels = pseudo_labels(depths[0], np.ones((H, W)), (K, cams[0]), sources)
    mask = labels["mask"]
    # Every source agrees wherever it sees the pixel's surface point (counted here independently).
    centre, direction = rays(K, cams[0])
    points = centre + depths[0][..., None] * direction
    seen = sum(_inside(points, K, E) for E in cams[1:])
    assert np.array_equal(labels["agreeing"], seen)
    assert np.array_equal(mask, seen >= 7) and mask.mean() > 0.85
    assert np.abs(labels["mu"][mask] - depths[0][mask]).max() < 1e-4
    assert labels["sigma"][mask].max() < 1e-4
    assert labels["mu"].dtype == np.float32 and np.all(labels["mu"][~mask] == 0)
    assert labels["agreeing"].max() == 10
    stats = label_stats(labels, gt_depth=depths[0])
    assert stats["coverage"] == pytest.approx(mask.mean())
    assert stats["abs_err"] < 1e-4 and stats["mean_sigma"] < 1e-4

    # One view 2 % too deep: it stops agreeing, the labels stay, a 10-view demand drops them all.
    bad = list(sources)
    bad[3] = (depths[4] * 1.02, bad[3][1])
    perturbed = pseudo_labels(depths[0], np.ones((H, W)), (K, cams[0]), bad)
    assert np.array_equal(perturbed["agreeing"], seen - _inside(points, K, cams[4]))
    assert perturbed["mask"].mean() > 0.8
    assert np.abs(perturbed["mu"][perturbed["mask"]] - depths[0][perturbed["mask"]]).max() < 1e-4
    assert not pseudo_labels(depths[0], None, (K, cams[0]), bad, min_views=10)["mask"].any()

    # Low confidence and the depth range each remove their pixels.
    conf = np.ones((H, W))
    conf[:, : W // 2] = 0.01
    assert not pseudo_labels(depths[0], conf, (K, cams[0]), sources)["mask"][:, : W // 2].any()
    hi = float(depths[0][H // 2, W // 2 : W // 2 + 2].mean())  # between two columns' depths
    near = pseudo_labels(depths[0], None, (K, cams[0]), sources, depth_range=(0.0, hi))
    assert near["mask"].any() and np.array_equal(near["mask"], labels["mask"] & (depths[0] <= hi))


def test_pseudo_label_sigma_is_the_spread_of_agreeing_depths():
    # Sources that share the reference camera reproject in place; their depths differ by +-0.2 %.
    K, E, d = intrinsics(), look_at((0.0, 0.0, 4.0)), 4.0
    ref = np.full((H, W), d)
    sources = [(ref * 1.002, (K, E)), (ref * 0.998, (K, E)), (ref * 1.05, (K, E))]
    labels = pseudo_labels(ref, None, (K, E), sources, min_views=2)
    assert labels["mask"].all() and np.all(labels["agreeing"] == 2)  # the 5 % one does not agree
    assert np.allclose(labels["mu"], d, rtol=1e-6)
    assert np.allclose(labels["sigma"], d * 0.002 * np.sqrt(2 / 3), rtol=1e-4)
    assert label_stats({"mask": np.zeros((2, 2), bool), "mu": np.zeros((2, 2)), "sigma": np.zeros((2, 2))}) == {
        "coverage": 0.0}


# --- DTU metrics --------------------------------------------------------------------------------


def _grid(n=10, spacing=1.0):
    xs, ys = np.meshgrid(np.arange(n) * spacing, np.arange(n) * spacing)
    return np.stack([xs.ravel(), ys.ravel(), np.zeros(n * n)], -1)


def test_mvs_metrics_closed_forms():
    grid = _grid()
    shifted = grid + [0.0, 0.0, 0.3]
    m = mvs_metrics(shifted, grid, max_dist=20.0, thin=0.2)
    assert m["accuracy"] == pytest.approx(0.3) and m["completeness"] == pytest.approx(0.3)
    assert m["overall"] == pytest.approx(0.3)
    # The shift above the cap: nothing counts, each mean reports the cap.
    assert mvs_metrics(shifted, grid, max_dist=0.25, thin=0)["accuracy"] == pytest.approx(0.25)

    line = np.stack([np.arange(10.0), np.zeros(10), np.zeros(10)], -1)
    m = mvs_metrics(line[:5], line, thin=0)
    assert m["accuracy"] == 0.0
    assert m["completeness"] == pytest.approx(np.mean([0, 0, 0, 0, 0, 1, 2, 3, 4, 5]))
    # Distances of max_dist or more are left out: 4 and 5 go with max_dist=4.
    assert mvs_metrics(line[:5], line, thin=0, max_dist=4.0)["completeness"] == pytest.approx(6 / 8)

    # Thinning: a dense clump of 100 points (within 1e-6) on the ground truth and one point 1 away.
    rng = np.random.default_rng(0)
    clump = np.array([0.1, 0.1, 0.1]) + rng.uniform(-1e-6, 1e-6, (100, 3))
    pred = np.concatenate([clump, [[0.1, 0.1, 1.1]]])
    gt = np.array([[0.1, 0.1, 0.1]])  # cell centres, so the clump shares one cell
    assert mvs_metrics(pred, gt, thin=0)["accuracy"] == pytest.approx(1 / 101, rel=1e-3)
    assert mvs_metrics(pred, gt, thin=0.2)["accuracy"] == pytest.approx(0.5, rel=1e-3)
    with pytest.raises(ValueError, match="empty"):
        mvs_metrics(np.zeros((0, 3)), gt)


def test_thin_points_keeps_one_point_per_cell_independent_of_order():
    grid = _grid(n=20, spacing=0.05)  # 1 x 1 square, spacing 0.05
    kept = thin_points(grid, 0.2)
    assert len(kept) == 25  # 5 x 5 cells of 0.2
    again = thin_points(grid[::-1], 0.2)
    assert np.array_equal(kept[np.lexsort(kept.T)], again[np.lexsort(again.T)])
    assert len(thin_points(grid, 0.0)) == len(grid)
    assert len(thin_points(grid, 0.01)) == len(grid)


def test_depth_map_errors_known_arrays():
    gt = np.array([[100.0, 100.0], [100.0, 0.0]])
    pred = np.array([[101.0, 103.0, ], [95.0, 7.0]])
    e = depth_map_errors(pred, gt)
    assert e == {"abs_err": pytest.approx(3.0), "within_2mm": pytest.approx(1 / 3), "within_4mm": pytest.approx(2 / 3)}
    e = depth_map_errors(pred, gt, mask=np.array([[True, True], [False, True]]), thresholds=(1.0,))
    assert e == {"abs_err": pytest.approx(2.0), "within_1mm": pytest.approx(0.5)}
    with pytest.raises(ValueError, match="no pixel"):
        depth_map_errors(pred, gt, mask=np.zeros((2, 2), bool))


# --- fusion -------------------------------------------------------------------------------------


def _bump_scene(n=6, size=112):
    """Six cameras around the bump, the square filling most of each (size x size) image, and
    ground-truth points on the surface every 0.005."""
    K = intrinsics(f=200.0 * size / 112, h=size, w=size)
    cams = cap_cameras(n, tilt_deg=12.0)
    views = [{"depth": bump_depth(K, E, size, size), "confidence": np.ones((size, size)),
              "image": np.full((3, size, size), i / 10.0), "K": K, "E": E} for i, E in enumerate(cams)]
    pairs = {i: [j for j in range(n) if j != i] for i in range(n)}
    xs, ys = np.meshgrid(np.linspace(-1, 1, 401), np.linspace(-1, 1, 401))
    gt = np.stack([xs.ravel(), ys.ravel(), bump(xs.ravel(), ys.ravel())], -1)
    return views, pairs, gt


def test_fuse_exact_depth_maps_recovers_the_surface():
    views, pairs, gt = _bump_scene()
    depths = np.concatenate([v["depth"][v["depth"] > 0] for v in views])
    depth_range = depths.max() - depths.min()  # about 0.59
    points, colours = fuse(views, pairs, min_views=3)
    assert points.dtype == np.float32 and colours.dtype == np.uint8 and len(points) == len(colours)
    assert len(points) > 0.8 * len(depths)
    # On the surface: the height error is tiny; the metrics are bounded by the sampling.
    assert np.abs(points[:, 2] - bump(points[:, 0], points[:, 1])).max() < 1e-3 * depth_range
    m = mvs_metrics(points, gt, max_dist=1.0, thin=0.0)
    assert m["accuracy"] < 0.01 * depth_range and m["completeness"] < 0.01 * depth_range
    # Every point takes its reference view's colour.
    assert set(np.unique(colours[:, 0])) == {round(i / 10 * 255) for i in range(len(views))}

    # A reference view whose depths are 5 % off finds no agreeing source: it adds nothing.
    broken = [dict(v) for v in views]
    broken[0]["depth"] = views[0]["depth"] * 1.05
    few, few_colours = fuse(broken, {0: pairs[0]}, min_views=1)
    assert len(few) == 0 and few_colours.shape == (0, 3)
    # Confidence filters the reference pixels.
    low = [dict(v, confidence=np.zeros_like(v["depth"])) for v in views]
    assert len(fuse(low, [(0, pairs[0])], min_views=3)[0]) == 0  # pairs as a list, as a pair file reads
    assert len(fuse(low, {0: pairs[0]}, min_views=3, min_conf=-1.0)[0]) == len(fuse(views, {0: pairs[0]}, min_views=3)[0])


# --- outputs ------------------------------------------------------------------------------------


def test_point_cloud_ply_round_trip_and_pictures(tmp_path):
    points = np.array([[0.0, 0.0, 0.0], [1.0, 0.5, 0.25], [2.0, 1.0, 0.5]])
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=np.uint8)
    write_point_cloud_ply(tmp_path / "cloud.ply", points, colours)
    back, back_colours = read_points(tmp_path / "cloud.ply")
    assert np.allclose(back, points) and np.array_equal(back_colours, colours)
    write_point_cloud_ply(tmp_path / "plain.ply", points)
    assert read_points(tmp_path / "plain.ply")[1] is None

    gt = _grid(n=10)
    near = error_coloured(gt + [0, 0, 0.0], gt, vmax=1.0)
    far = error_coloured(gt + [0, 0, 1.0], gt, vmax=1.0)
    assert near.shape == (100, 3) and near.dtype == np.uint8
    assert np.all(near == near[0]) and np.all(far == far[0]) and not np.array_equal(near[0], far[0])

    # A square seen face-on fills the middle of its panel; the nearer of two stacked points wins.
    red, blue = np.array([[255, 0, 0]] * 100, np.uint8), np.array([[0, 0, 255]] * 100, np.uint8)
    picture = cloud_figure([(gt, red), (np.concatenate([gt, gt + [0, 0, 0.5]]), np.concatenate([red, blue]))],
                           view_dir=(0, 0, 1), size=64)
    assert picture.shape == (64, 128, 3) and picture.dtype == np.uint8
    left, right = picture[:, :64], picture[:, 64:]
    assert (left == [255, 0, 0]).all(-1).sum() == 100 and (left == 255).all(-1).sum() == 64 * 64 - 100
    assert (right == [255, 0, 0]).all(-1).sum() == 100  # red is at z = 0, nearer when looking along +z
    assert (cloud_figure([(gt, red)], view_dir=(0, 0, -1), size=64, radius=2) == [255, 0, 0]).all(-1).sum() > 100


# --- a hook for a DTU scan on disk (MVSNet training layout) --------------------------------------


def fusion_check(dataset_dir, scan, *, min_views: int = 2, thin: float = 0.2, max_dist: float = 20.0) -> dict:
    """Fuse a DTU training scan's ground-truth depth maps (read by the DTU reader) and score the
    cloud against its STL points: the cameras, depths, pairs and points of a scan on disk must
    agree with each other and with the fusion's conventions. Returns :func:`mvs_metrics` plus
    ``points`` (the fused count) and ``depth_range`` (the widest camera-file range)."""
    from fieldkd.platform.scenes import dtu

    found = dtu.open_scan(dataset_dir, scan, layout="train")
    views, lo, hi = {}, np.inf, -np.inf
    for view in found.views:
        read = dtu.read_view(found, view, light=found.lights()[0] if found.lights() else None)
        h, w = read.depth.shape
        scale = np.diag([w / read.image.shape[1], h / read.image.shape[0], 1.0])  # the depth map's own K
        lo, hi = min(lo, read.depth_min), max(hi, read.depth_max)
        views[view] = {"depth": read.depth, "K": scale @ read.intrinsic, "E": read.extrinsic}
    pairs = {ref: [src for src, _ in sources] for ref, sources in found.pairs.items()}
    points, _ = fuse(views, pairs, min_views=min_views)
    gt, _ = dtu.read_gt_points(dataset_dir, scan)
    return {**mvs_metrics(points, gt, max_dist=max_dist, thin=thin), "points": len(points), "depth_range": hi - lo}


@pytest.fixture(scope="module")
def generated_scan(tmp_path_factory):
    from fieldkd.platform.scenes.dtu_generator import write_mvs_dataset

    root = tmp_path_factory.mktemp("dtu") / "data"
    return write_mvs_dataset(root, train_scans=(1,), test_scans=(), n_views=12, n_lights=1)


def test_fusing_a_generated_scans_true_depth_maps_lands_on_its_points(generated_scan):
    """The target of the KD-MVS issue: fusing the ground-truth depth maps of a generated scan gives
    accuracy and completeness below 1 % of its depth range (measured: 0.26 and 0.14 mm of 510 mm
    with 49 views)."""
    from fieldkd.platform.scenes.pfm import read_pfm, write_pfm

    result = fusion_check(generated_scan, "scan1")
    assert result["points"] > 10_000
    assert result["accuracy"] < 0.01 * result["depth_range"]
    assert result["completeness"] < 0.01 * result["depth_range"]
    # Depth maps stored upside down (a PFM row-order slip) fail the check.
    for path in sorted((generated_scan / "Depths" / "scan1_train").glob("depth_map_*.pfm")):
        write_pfm(path, read_pfm(path)[::-1].copy())
    flipped = fusion_check(generated_scan, "scan1")
    assert flipped["points"] < 0.5 * result["points"] or flipped["overall"] > 10 * result["overall"]
