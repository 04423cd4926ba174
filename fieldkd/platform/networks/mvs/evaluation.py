"""Score a cascade MVS network on a split's scans: depth maps of every view with its sources,
fused into one point cloud per scan, DTU's point-cloud metrics against the scan's ground truth,
and depth-map errors where ground-truth depth exists.

    metrics = evaluate_mvs(net, data, eval_cfg, device, run=run, step=step, out_dir=stage_dir)

Metrics (means over scans, and over views for depth): ``mvs/accuracy``, ``mvs/completeness``,
``mvs/overall`` (mm, lower is better), ``mvs/points``; ``depth/abs_err``, ``depth/within_2mm``,
``depth/within_4mm``. Written: ``out_dir/clouds/<scan>.ply`` (also an MLflow artifact under
``mvs/``), pictures of the first views (image, depth, ground truth, confidence) and of each
fused cloud coloured by its error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

EVAL_DEFAULTS = {  # keys of the eval section, with these defaults where a config lacks them
    "mvs_max_dist": 20.0,  # mm; DTU's cap on point distances
    "mvs_thin": 0.2,  # mm; both clouds thinned to this spacing first
    "mvs_min_views": 3,  # fusion: agreeing source views a pixel needs
    "mvs_min_conf": 0.05,
    "mvs_max_px": 1.0,
    "mvs_max_rel": 0.01,
    "mvs_sources": 10,  # fusion checks this many paired views of each reference
    "log_images": 4,
}
ERROR_VMAX_MM = 8.0  # the cloud pictures' colour scale: CPU-sized networks err by a few mm


def eval_options(ecfg: dict | None) -> dict:
    """The ``eval`` section's MVS keys, defaults where it lacks them (or holds null)."""
    given = ecfg or {}
    return {k: v if given.get(k) is None else given[k] for k, v in EVAL_DEFAULTS.items()}


def colourise(values: np.ndarray, lo: float, hi: float, cmap: str = "viridis", valid=None) -> np.ndarray:
    from matplotlib import colormaps

    x = np.clip((np.asarray(values, np.float64) - lo) / max(hi - lo, 1e-9), 0.0, 1.0)
    rgb = np.round(colormaps[cmap](x)[..., :3] * 255).astype(np.uint8)
    if valid is not None:
        rgb[~np.asarray(valid, bool)] = 0
    return rgb


def depth_panels(image, panels: list[tuple[str, np.ndarray]]) -> np.ndarray:
    """One captioned strip: the reference image, then already coloured (H, W, 3) panels."""
    from ...evaluate.panels import captioned, upsample

    img = np.asarray(image)
    if img.shape[0] == 3:
        img = np.moveaxis(img, 0, -1)
    img = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)
    strip = [("image", img)] + panels
    return np.concatenate([captioned(upsample(p), label) for label, p in strip], axis=1)


def predict_scan(net, items: list[dict], device) -> dict[int, dict]:
    """Per view of one scan: depth, confidence, image, K, E (and the ground truth where present)."""
    import torch

    from .tasks import predict

    views = {}
    for item in items:
        batch = {k: torch.as_tensor(np.asarray(item[k], np.float32))[None]
                 for k in ("images", "intrinsics", "extrinsics", "depth_min", "depth_max")}
        found = predict(net, batch)
        views[int(item["view"])] = {
            "depth": found["depth"][0].float().cpu().numpy(), "confidence": found["confidence"][0].float().cpu().numpy(),
            "image": np.asarray(item["images"][0]), "K": np.asarray(item["intrinsics"][0], np.float64),
            "E": np.asarray(item["extrinsics"][0], np.float64), "gt": item.get("depth"), "mask": item.get("mask"),
            "range": (float(item["depth_min"]), float(item["depth_max"]))}
    return views


def evaluate_mvs(net, data, ecfg: dict | None, device, run=None, step: int = 0, out_dir=None) -> dict[str, float]:
    """Evaluate ``net`` on every scan of ``data`` (a MultiViewData); see the module docstring."""
    from ...evaluate.mvs import (
        cloud_figure,
        depth_map_errors,
        error_coloured,
        fuse,
        mvs_metrics,
        write_point_cloud_ply,
    )

    opts = eval_options(ecfg)
    net = net.to(device).eval()
    by_scan: dict[str, list[int]] = {}
    items = data.eval_items()
    for i, desc in enumerate(items.descriptors):
        by_scan.setdefault(desc["scan"], []).append(i)
    clouds, depth_scores, logged = [], [], 0
    for scan_name, indices in by_scan.items():
        views = predict_scan(net, [items[i] for i in indices], device)
        pairs = {v: [s for s, _ in data.scans[scan_name].pairs[v][:int(opts["mvs_sources"])] if s in views]
                 for v in views}
        points, colours = fuse(views, pairs, min_conf=float(opts["mvs_min_conf"]), max_px=float(opts["mvs_max_px"]),
                               max_rel=float(opts["mvs_max_rel"]), min_views=int(opts["mvs_min_views"]))
        gt_points, _ = data.gt_points(scan_name)
        if len(points):
            scores = mvs_metrics(points, gt_points, max_dist=float(opts["mvs_max_dist"]), thin=float(opts["mvs_thin"]))
        else:  # nothing survived fusion: every ground-truth point is beyond the cap, and so is "accuracy"
            cap = float(opts["mvs_max_dist"])
            scores = {"accuracy": cap, "completeness": cap, "overall": cap}
        clouds.append({"scan": scan_name, **scores, "points": len(points)})
        for view in views.values():
            if view["gt"] is not None and np.any(np.asarray(view["gt"]) > 0):
                depth_scores.append(depth_map_errors(view["depth"], view["gt"], view["mask"]))
        if out_dir is not None:
            target = Path(out_dir) / "clouds" / f"{scan_name}.ply"
            write_point_cloud_ply(target, points, colours)  # atomic
            if run is not None:
                run.log_artifact(target, "mvs")
        if run is not None:
            for v, view in list(views.items())[:max(0, int(opts["log_images"]) - logged)]:
                lo, hi = view["range"]
                panels = [("depth", colourise(view["depth"], lo, hi))]
                if view["gt"] is not None:
                    gt = np.asarray(view["gt"])
                    panels.append(("ground-truth depth", colourise(gt, lo, hi, valid=gt > 0)))
                panels.append(("confidence", colourise(view["confidence"], 0.0, 1.0, "magma")))
                run.log_image(depth_panels(view["image"], panels), f"mvs/{scan_name}_view_{v:03d}", step)
                logged += 1
            if len(points):
                run.log_image(cloud_figure([(points, error_coloured(points, gt_points, vmax=ERROR_VMAX_MM)),
                                            (gt_points, np.full((len(gt_points), 3), 96, np.uint8))], size=320),
                              f"mvs/{scan_name}_cloud_error", step)
    metrics = {f"mvs/{k}": float(np.mean([c[k] for c in clouds])) for k in ("accuracy", "completeness", "overall")}
    metrics["mvs/points"] = float(np.mean([c["points"] for c in clouds]))
    if depth_scores:
        for key in ("abs_err", "within_2mm", "within_4mm"):
            metrics[f"depth/{key}"] = float(np.mean([s[key] for s in depth_scores]))
    if run is not None:
        run.log_table({k: [c[k] for c in clouds] for k in ("scan", "accuracy", "completeness", "overall", "points")},
                      "mvs/per_scan.json")
    return metrics
