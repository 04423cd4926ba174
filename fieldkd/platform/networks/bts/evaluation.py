"""Score a BTS density field on the test frames of a driving sequence, through one named head.

    metrics = evaluate_bts(net, data, eval_cfg, head="single", run=run, step=step)

Per test frame (the input view of a test split line):

- occupancy on the grid of :func:`~fieldkd.platform.evaluate.occupancy.grid_points` (in the input
  camera's frame; predicted occupied: density > ``bts_threshold``), against occupancy from the
  LiDAR sweeps from the frame on (a cell behind a surface in ``bts_min_behind`` of 20 sweeps), with
  visibility from the frame's own sweep seen from the camera: ``occupancy/*``;
- ``occupancy_official/*``: the LiDAR truth with the official evaluator's visibility, which also
  counts as visible every cell in front of the scored head's own rendered depth (nearest pixel of
  the input view) and clears the LiDAR occupancy of every visible cell
  (:func:`official_visibility`); so the truth depends on the prediction;
- the same against the generator's exact occupancy and exact visibility (rays cast from the camera
  through the street's shapes) where the dataset has it (``ground_truth/<sequence>/street.json``):
  ``occupancy_exact/*``, and ``occupancy_exact/lidar_agreement`` (how far LiDAR truth is from it);
- depth of the input view's rays against the frame's LiDAR sweep projected into it: ``depth/*``;
- the multi head given more than one view is also scored on the input view alone, against the LiDAR
  truth: ``occupancy_input_view/*``. A single-view student never sees the other views, so this is
  a reference for what distillation can hand on (not a strict bound: the student learns the
  teacher's densities given all its views, which may carry a little more).

Counts are summed over frames before the ratios (``metrics_from_counts``). The first ``log_images``
frames are logged as pictures: image, predicted depth, LiDAR depth; and the bird's-eye slice
predicted / LiDAR truth / exact truth. The head is an argument and comes back in the run's tag
``fieldkd.head`` (set by the stage); nothing here picks a head on its own.
"""

from __future__ import annotations

import numpy as np

from ...evaluate import occupancy as occ

EVAL_DEFAULTS = {  # keys of the eval section, with these defaults where a config lacks them (or holds null)
    "bts_threshold": 0.5,        # density above this: occupied (official)
    "bts_points_per_metre": 10.0,  # grid resolution (official 10)
    "bts_min_behind": 18,        # of the sweeps from the frame on (20): a cell behind a surface in this many
    "bts_azimuth_res": 0.2,      # degrees: the LiDAR range image's bins (official; a sparser sensor needs wider)
    "bts_elevation_res": 0.4,
    "bts_samples": 64,           # depth rendering of the input view (the official evaluation configs)
    "bts_near": 3.0,
    "bts_far": 80.0,
    "bts_max_depth": 80.0,       # depth metrics cap
    "bts_frames": None,          # null: every test frame; N: the first N
    "log_images": 3,
}
OCC_KEYS = ("o_acc", "ie_acc", "ie_rec", "ie_prec", "o_prec", "o_rec")
DEPTH_KEYS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")


def eval_options(ecfg: dict | None) -> dict:
    given = ecfg or {}
    return {k: v if given.get(k) is None else given[k] for k, v in EVAL_DEFAULTS.items()}


# --- pure pieces -----------------------------------------------------------------------------------

def to_frame(points_world: np.ndarray, cam_to_world: np.ndarray) -> np.ndarray:
    """World points [N, 3] into the frame of a camera (4x4 camera->world)."""
    m = np.asarray(cam_to_world, dtype=np.float64)
    return (np.asarray(points_world, dtype=np.float64) - m[:3, 3]) @ m[:3, :3]


def to_world(points_cam: np.ndarray, cam_to_world: np.ndarray) -> np.ndarray:
    m = np.asarray(cam_to_world, dtype=np.float64)
    return np.asarray(points_cam, dtype=np.float64) @ m[:3, :3].T + m[:3, 3]


def projected_depth(points_cam: np.ndarray, K: np.ndarray, height: int, width: int) -> np.ndarray:
    """Sparse depth map [H, W] of camera-frame points: the nearest z at each pixel they land on
    (pixel centres at integer coordinates); 0 where none lands."""
    p = np.asarray(points_cam, dtype=np.float64)
    p = p[p[:, 2] > 1e-3]
    k = np.asarray(K, dtype=np.float64)
    u = np.round(k[0, 0] * p[:, 0] / p[:, 2] + k[0, 1] * p[:, 1] / p[:, 2] + k[0, 2]).astype(np.int64)
    v = np.round(k[1, 1] * p[:, 1] / p[:, 2] + k[1, 2]).astype(np.int64)
    inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
    depth = np.full(height * width, np.inf)
    np.minimum.at(depth, v[inside] * width + u[inside], p[inside, 2])
    depth[~np.isfinite(depth)] = 0.0
    return depth.reshape(height, width)


def min_behind_for(n_sweeps: int, wanted: int, full: int = occ.N_SWEEPS) -> int:
    """The official threshold (``wanted`` of ``full`` sweeps) scaled to the sweeps a frame has."""
    return max(1, min(n_sweeps, round(wanted * n_sweeps / full)))


def bird_eye(pred: np.ndarray, gt: np.ndarray | None, visible: np.ndarray | None) -> np.ndarray:
    """A uint8 picture [n_z, n_x, 3] of one grid slice ([n_z, n_x] bools), near rows at the bottom.

    Occupied cells are dark; with ``gt``, a wrong cell is red (predicted occupied) or blue (missed);
    invisible cells are shaded grey-green rather than white."""
    pred = np.asarray(pred, bool)
    out = np.full(pred.shape + (3,), 245, np.uint8)
    if visible is not None:
        out[~np.asarray(visible, bool)] = (205, 220, 205)
    out[pred] = (40, 40, 40)
    if gt is not None:
        gt = np.asarray(gt, bool)
        out[pred & ~gt] = (220, 50, 40)
        out[~pred & gt] = (40, 90, 220)
    return out[::-1]


def colour_depth(depth: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Inverse depth through magma (near bright); 0 (no value) black."""
    from matplotlib import colormaps

    d = np.asarray(depth, np.float64)
    inv = np.where(d > 0, 1.0 / np.maximum(d, 1e-6), 0.0)
    x = np.clip((inv - 1.0 / hi) / (1.0 / lo - 1.0 / hi), 0.0, 1.0)
    rgb = np.round(colormaps["magma"](x)[..., :3] * 255).astype(np.uint8)
    rgb[d <= 0] = 0
    return rgb


def official_visibility(points_cam: np.ndarray, lidar_visible: np.ndarray, gt_occupied: np.ndarray,
                        pred_depth: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(visible, occupied) of cells [N, 3] in the input camera's frame as the official evaluator
    (BTS's evaluator_lidar.py) builds them: visible when the frame's sweep sees the cell
    (``lidar_visible``) or the cell is no deeper than the scored head's rendered depth
    ``pred_depth`` [H, W] at the pixel nearest its projection (clamped to the border); LiDAR
    occupancy (``gt_occupied``) is cleared wherever the cell is visible."""
    p = np.asarray(points_cam, np.float64).reshape(-1, 3)
    k = np.asarray(K, np.float64)
    h, w = pred_depth.shape
    z = np.where(p[:, 2] > 1e-6, p[:, 2], 1e-6)
    u = np.clip(np.round(k[0, 0] * p[:, 0] / z + k[0, 1] * p[:, 1] / z + k[0, 2]), 0, w - 1).astype(np.int64)
    v = np.clip(np.round(k[1, 1] * p[:, 1] / z + k[1, 2]), 0, h - 1).astype(np.int64)
    visible = np.asarray(lidar_visible, bool).reshape(-1) | (p[:, 2] <= np.asarray(pred_depth)[v, u])
    return visible, np.asarray(gt_occupied, bool).reshape(-1) & ~visible


# --- the generator's truth -------------------------------------------------------------------------

def exact_truth(root, sequence: str, cells_world: np.ndarray, camera_centre: np.ndarray):
    """(occupied [N], visible [N]) of world cells from a generated sequence's street, or None when
    the dataset has no street description. Visible: the ray from the camera centre reaches the cell
    before any shape."""
    import torch

    from ...scenes import kitti_generator as gen

    if not gen.street_path(root, sequence).is_file():
        return None
    street = gen.load_street(root, sequence)
    occupied = gen.exact_occupancy(street, cells_world)
    offsets = torch.as_tensor(cells_world - camera_centre, dtype=torch.float32)
    dist = offsets.norm(dim=-1)
    dirs = offsets / dist.clamp(min=1e-9)[:, None]
    origins = torch.as_tensor(camera_centre, dtype=torch.float32).expand_as(dirs).contiguous()
    with torch.no_grad():
        t, hit, _, _ = gen.Geometry(street).intersect(origins, dirs, float(dist.max()) + 1.0)
    visible = (~hit | (t >= dist - 1e-4)).numpy() & ~occupied
    return occupied, visible


# --- the evaluation --------------------------------------------------------------------------------

def eval_grid(opts: dict) -> np.ndarray:
    """The evaluation grid [slices, n_z, n_x, 3] in the input camera's frame."""
    return occ.grid_points(**{**occ.GRID_DEFAULTS, "points_per_metre": float(opts["bts_points_per_metre"])})


def frame_truth(item: dict, root, cells: np.ndarray, opts: dict) -> dict:
    """The ground truth of one evaluation item on camera-frame cells [N, 3]: LiDAR occupancy and
    visibility ("gt", "visible"; "lidar_visible": the sweep's alone, before occupied cells are taken
    out), the exact ones where the dataset has a street ("exact": (occupied,
    visible) or None), the frame's sweep in the camera frame ("sweep_cam")."""
    from ...data.sequences import lidar_points_world

    ranges = {"azimuth_res_deg": float(opts["bts_azimuth_res"]), "elevation_res_deg": float(opts["bts_elevation_res"])}
    c2w = np.asarray(item["cam_to_world"][0], np.float64)
    world = to_world(cells, c2w)
    sweeps_world = lidar_points_world(item)
    velo = np.asarray(item["velo_to_world"], np.float64)
    sweeps = [(to_frame(points, m), m) for points, m in zip(sweeps_world, velo)]
    gt, _ = occ.lidar_occupancy(world, sweeps, min_behind_for(len(sweeps), int(opts["bts_min_behind"])), **ranges)
    sweep_cam = to_frame(sweeps_world[0], c2w)
    seen = occ.visible_from_points(cells, sweep_cam, **ranges)
    visible = seen & ~gt  # an occupied cell is never seen empty
    return {"gt": gt, "visible": visible, "lidar_visible": seen,
            "exact": exact_truth(root, item["sequence"], world, c2w[:3, 3]), "sweep_cam": sweep_cam}


def evaluate_bts(net, data, ecfg: dict | None, *, head: str, views: int | None = None, run=None,
                 step: int = 0) -> dict[str, float]:
    """Evaluate ``net`` through ``head`` on ``data``'s evaluation items; see the module docstring."""
    from ...evaluate.panels import captioned, upsample
    from .tasks import predict_occupied, render_input_depth

    opts = eval_options(ecfg)
    grid = eval_grid(opts)
    shape = grid.shape[:-1]
    cells = grid.reshape(-1, 3)
    items = data.eval_items()
    n_frames = len(items) if opts["bts_frames"] is None else min(len(items), int(opts["bts_frames"]))
    lidar_counts, official_counts, exact_counts, agreement, depth_scores = [], [], [], [], []
    input_view_counts = []  # the multi head on the input view alone, where it is given more
    for index in range(n_frames):
        item = items[index]
        images, ks, c2ws = item["images"], item["intrinsics"], item["cam_to_world"]
        truth = frame_truth(item, data.root, cells, opts)
        gt, visible, exact, first_cam = truth["gt"], truth["visible"], truth["exact"], truth["sweep_cam"]
        pred, produced = predict_occupied(net, images, ks, c2ws, cells, head=head,
                                          threshold=float(opts["bts_threshold"]), views=views)
        if produced != head:
            raise RuntimeError(f"asked the {head} head, got numbers from the {produced} head")
        lidar_counts.append(occ.occupancy_counts(pred, gt, visible))
        if head == "multi" and (views or len(images)) > 1:
            alone, _ = predict_occupied(net, images, ks, c2ws, cells, head=head,
                                        threshold=float(opts["bts_threshold"]), views=1)
            input_view_counts.append(occ.occupancy_counts(alone, gt, visible))
        if exact is not None:
            exact_counts.append(occ.occupancy_counts(pred, exact[0], exact[1]))
            agreement.append(float((gt == exact[0]).mean()))
        h, w = images.shape[-2:]
        gt_depth = projected_depth(first_cam, np.asarray(ks[0]), h, w)
        pred_depth = render_input_depth(net, images, ks, c2ws, head=head, n_samples=int(opts["bts_samples"]),
                                        near=float(opts["bts_near"]), far=float(opts["bts_far"]),
                                        views=views).cpu().numpy()
        seen, occupied = official_visibility(cells, truth["lidar_visible"], gt, pred_depth, np.asarray(ks[0]))
        official_counts.append(occ.occupancy_counts(pred, occupied, seen))
        if (gt_depth > 0).any():
            depth_scores.append(occ.depth_errors(pred_depth, gt_depth, max_depth=float(opts["bts_max_depth"])))
        if run is not None and index < int(opts["log_images"]):
            lo, hi = float(opts["bts_near"]), float(opts["bts_far"])
            img = np.round(np.moveaxis(np.asarray(images[0]), 0, -1).clip(0, 1) * 255).astype(np.uint8)
            strip = [("image", img), (f"depth ({head} head)", colour_depth(pred_depth, lo, hi)),
                     ("LiDAR depth", colour_depth(gt_depth, lo, hi))]
            name = f"{item['sequence']}_{int(item['frame']):06d}"
            run.log_image(np.concatenate([captioned(upsample(p), t) for t, p in strip], axis=1),
                          f"bts/{name}_depth", step)
            slices = [(f"predicted ({head})", bird_eye(pred.reshape(shape)[0], gt.reshape(shape)[0],
                                                       visible.reshape(shape)[0])),
                      ("LiDAR truth", bird_eye(gt.reshape(shape)[0], None, visible.reshape(shape)[0]))]
            if exact is not None:
                slices.append(("exact truth", bird_eye(exact[0].reshape(shape)[0], None, exact[1].reshape(shape)[0])))
            run.log_image(np.concatenate([captioned(upsample(p, 160), t) for t, p in slices], axis=1),
                          f"bts/{name}_occupancy", step)
    metrics = {f"occupancy/{k}": v for k, v in occ.metrics_from_counts(_summed(lidar_counts)).items()}
    metrics.update({f"occupancy_official/{k}": v
                    for k, v in occ.metrics_from_counts(_summed(official_counts)).items()})
    if input_view_counts:
        metrics.update({f"occupancy_input_view/{k}": v
                        for k, v in occ.metrics_from_counts(_summed(input_view_counts)).items()})
    if exact_counts:
        metrics.update({f"occupancy_exact/{k}": v for k, v in occ.metrics_from_counts(_summed(exact_counts)).items()})
        metrics["occupancy_exact/lidar_agreement"] = float(np.mean(agreement))
    if depth_scores:
        metrics.update({f"depth/{k}": float(np.mean([s[k] for s in depth_scores])) for k in DEPTH_KEYS})
    metrics["occupancy/frames"] = float(n_frames)
    return metrics


def _summed(counts: list[dict]) -> dict:
    return {k: sum(c[k] for c in counts) for k in occ.COUNT_KEYS}
