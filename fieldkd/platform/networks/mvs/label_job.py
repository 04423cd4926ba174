"""KD-MVS pseudo-labels as a Ray Data batch-inference job, then a cross-view check per view.

    summary = make_labels(checkpoint, data, out_dir, {"workers": 2, "min_views": 7})

1. Predict: one sample per training (scan, view), with its ``n_src`` best source views (4 by
   default, the official inference's five views, whatever the training samples use; the data
   module's lazy descriptors, read in ``map_batches``), goes through an actor pool of
   :class:`DepthWriter` (``workers`` actors, each loading the teacher's checkpoint once,
   ``weights_only``). Each actor writes the view's depth and confidence, with its camera, to
   ``out_dir/depths/<scan>/<view>.npz`` and returns a small row; the arrays never travel through
   the object store.
2. Check: each reference view's depth against its paired views' (pair.txt, up to 10) by
   reprojection (:func:`.labels.pseudo_labels` with ``max_px``, ``max_rel``, ``min_views``,
   ``min_conf``); labels outside the scan's depth range are dropped. Written to
   ``out_dir/labels/<scan>/<view>.npz`` (``mu``, ``sigma``, ``mask``), then ``manifest.json``
   (scan, view, file, coverage, mean sigma, and the labels' errors where ground truth exists).

Every file is written atomically, and a rerun skips the views whose files exist, so a killed
job resumes. Changing the check's thresholds (``params.json``) redoes step 2 only; changing
``n_src`` (``predict.json``; a folder without that record counts as changed) redoes both.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ...atomic import atomic_open, clean_stale, write_text
from ...errors import InputError

LABEL_DEFAULTS = {
    "workers": 1,  # actors of the prediction pool
    "cpus_per_worker": 1.0,
    "gpus_per_worker": 0.0,
    "batch_size": 1,  # samples per actor call
    "n_src": 4,  # source views the teacher sees per predicted depth map (official inference: 4, five views)
    "min_views": 7,  # agreeing paired views a pixel needs (official script: 7; its argparse default: 5)
    "max_px": 1.0,  # reprojection error, pixels
    "max_rel": 0.005,  # relative depth difference
    "min_conf": 0.05,  # the teacher's confidence
}
CHECK_KEYS = ("min_views", "max_px", "max_rel", "min_conf")
WITHIN_MM = 2.0


def label_options(cfg: dict | None, where: str = "labels") -> dict:
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(LABEL_DEFAULTS))
    if unknown:
        raise InputError(where, f"unknown keys {unknown}; known: {sorted(LABEL_DEFAULTS)}")
    out = {**LABEL_DEFAULTS, **cfg}
    if min(int(out["workers"]), int(out["min_views"]), int(out["batch_size"]), int(out["n_src"])) < 1:
        raise InputError(where, "workers, batch_size, min_views and n_src must be at least 1")
    return out


def view_file(folder: Path, scan: str, view: int) -> Path:
    return Path(folder) / scan / f"{int(view):08d}.npz"


def save_npz(path: Path, **arrays) -> None:
    with atomic_open(path) as fh:
        np.savez_compressed(fh, **arrays)


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as found:
        return {k: found[k] for k in found.files}


def load_mvs_net(checkpoint: str, device="cpu"):
    """The cascade MVS network of a stage checkpoint (``last.pt``), in eval mode; nothing in the
    file is run (``weights_only``)."""
    from ...train.checkpoint import load_checkpoint
    from .network import build_cascade_mvs

    state = load_checkpoint(checkpoint)
    task = state.get("task")
    if not isinstance(task, dict) or "net" not in task or "config" not in task:
        raise InputError(checkpoint, "not a checkpoint of a cascade MVS network (no task.net and task.config)")
    net = build_cascade_mvs(dict(task["config"]))
    net.load_state_dict(task["net"])
    return net.to(device).eval()


class DepthWriter:
    """Ray Data callable class: a batch of loaded multi-view samples -> their depth files.

    Built once per actor (the checkpoint is read once); returns rows of (scan, view, file)."""

    def __init__(self, checkpoint: str, out_dir: str, device: str = "cpu", threads: int = 1):
        import torch

        torch.set_num_threads(max(1, int(threads)))
        self.net = load_mvs_net(checkpoint, device)
        self.out_dir = Path(out_dir)

    def __call__(self, batch: dict) -> dict:
        import torch

        from .tasks import predict

        inputs = {k: torch.from_numpy(np.array(batch[k], dtype=np.float32))
                  for k in ("images", "intrinsics", "extrinsics", "depth_min", "depth_max")}
        found = predict(self.net, inputs)
        depth, conf = found["depth"].float().cpu().numpy(), found["confidence"].float().cpu().numpy()
        files = []
        for i, (scan, view) in enumerate(zip(batch["scan"], batch["view"])):
            path = view_file(self.out_dir, str(scan), int(view))
            arrays = {"depth": depth[i], "confidence": conf[i], "K": inputs["intrinsics"][i, 0].numpy(),
                      "E": inputs["extrinsics"][i, 0].numpy(),
                      "depth_range": np.array([batch["depth_min"][i], batch["depth_max"][i]], np.float32)}
            if "depth" in batch:  # the ground truth, for the labels' statistics only
                arrays["gt_depth"] = np.asarray(batch["depth"][i], np.float32)
            save_npz(path, **arrays)
            files.append(str(path))
        return {"scan": np.asarray([str(s) for s in batch["scan"]]),
                "view": np.asarray(batch["view"], np.int64), "file": np.asarray(files)}


def _predict_missing(checkpoint: str, data, depth_dir: Path, opts: dict, device: str) -> int:
    """Depth files of the (scan, view)s that have none yet; returns how many were written."""
    from ...data.multiview import load_batch

    todo = [d for d in data.eval_items().descriptors
            if not view_file(depth_dir, d["scan"], d["view"]).exists()]
    if not todo:
        return 0
    threads = max(1, int(opts["cpus_per_worker"]))
    from ...train.board import inside_ray_worker

    if inside_ray_worker():  # a Tune trial: its CPUs are its own, no further actors
        writer, size = DepthWriter(checkpoint, str(depth_dir), device, threads), int(opts["batch_size"])
        for start in range(0, len(todo), size):
            part = todo[start:start + size]
            writer(load_batch({k: [d[k] for d in part] for k in part[0]}, data.spec))
        return len(todo)
    import ray

    from ...compute.session import init_ray

    init_ray()
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    rows = (ray.data.from_items(todo)
            # reading is light next to the network: a small CPU share, so the pool's actors fit beside it
            .map_batches(load_batch, fn_kwargs={"spec": data.spec}, batch_size=int(opts["batch_size"]),
                         batch_format="numpy", num_cpus=0.25)
            .map_batches(DepthWriter, fn_constructor_kwargs={"checkpoint": str(checkpoint), "out_dir": str(depth_dir),
                                                             "device": device, "threads": threads},
                         compute=ray.data.ActorPoolStrategy(size=int(opts["workers"])), num_cpus=float(opts["cpus_per_worker"]),
                         num_gpus=float(opts["gpus_per_worker"]), batch_size=int(opts["batch_size"]),
                         batch_format="numpy")
            .take_all())
    missing = [d for d in todo if not view_file(depth_dir, d["scan"], d["view"]).exists()]
    if missing or len(rows) != len(todo):
        raise RuntimeError(f"label job: {len(missing)} of {len(todo)} depth files missing after prediction")
    return len(todo)


def label_view(depth_dir: Path, scan, view: int, opts: dict) -> dict[str, np.ndarray]:
    """The labels of one reference view from the depth files of it and its paired views."""
    from .labels import pseudo_labels

    ref = load_npz(view_file(depth_dir, scan.name, view))
    sources = []
    for src, _score in scan.pairs[view]:
        path = view_file(depth_dir, scan.name, src)
        if path.exists():
            found = load_npz(path)
            sources.append((found["depth"], (found["K"], found["E"])))
    lo, hi = (float(x) for x in ref["depth_range"])
    return pseudo_labels(ref["depth"], ref["confidence"], (ref["K"], ref["E"]), sources,
                         max_px=float(opts["max_px"]), max_rel=float(opts["max_rel"]),
                         min_views=int(opts["min_views"]), min_conf=float(opts["min_conf"]), depth_range=(lo, hi))


def view_stats(labels: dict, gt_depth: np.ndarray | None) -> dict[str, float]:
    """Coverage, mean sigma and, where ground truth exists, the labels' mean abs error and the
    share within 2 mm (of the labelled pixels that have a ground truth)."""
    from .labels import label_stats

    stats = label_stats(labels, gt_depth)
    if gt_depth is not None:
        both = labels["mask"] & (gt_depth > 0)
        if both.any():
            stats["within_2mm"] = float((np.abs(labels["mu"][both] - gt_depth[both]) <= WITHIN_MM).mean())
    return stats


def make_labels(checkpoint: str, data, out_dir, cfg: dict | None = None, device: str = "cpu") -> dict:
    """Predict, check and write the labels of every (scan, view) of ``data`` (a MultiViewData);
    returns the mean statistics over views (``coverage``, ``mean_sigma``, ``abs_err``,
    ``within_2mm``, ``views``)."""
    opts = label_options(cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clean_stale(out)
    depth_dir, label_dir = out / "depths", out / "labels"
    data = data.with_sources(int(opts["n_src"]))  # the teacher's views for prediction, not the training samples'
    setup = {"n_src": int(opts["n_src"])}
    setup_file = out / "predict.json"
    stale = not setup_file.exists() or json.loads(setup_file.read_text()) != setup  # no record: inputs unknown
    if stale:
        for old in [*depth_dir.glob("*/*.npz"), *label_dir.glob("*/*.npz")]:  # other inputs: predict again
            old.unlink()
    write_text(setup_file, json.dumps(setup, sort_keys=True))
    predicted = _predict_missing(str(checkpoint), data, depth_dir, opts, device)
    params = {k: opts[k] for k in CHECK_KEYS}
    params_file = out / "params.json"
    if params_file.exists() and json.loads(params_file.read_text()) != params:
        for old in label_dir.glob("*/*.npz"):  # other thresholds: the check is redone, the depths kept
            old.unlink()
    write_text(params_file, json.dumps(params, sort_keys=True))
    entries, checked = [], 0
    for desc in data.eval_items().descriptors:
        scan, view = data.scans[desc["scan"]], int(desc["view"])
        path = view_file(label_dir, scan.name, view)
        if path.exists():
            labels = load_npz(path)
        else:
            found = label_view(depth_dir, scan, view, opts)
            labels = {"mu": found["mu"], "sigma": found["sigma"], "mask": found["mask"]}
            save_npz(path, **labels)
            checked += 1
        gt = load_npz(view_file(depth_dir, scan.name, view)).get("gt_depth")
        entries.append({"scan": scan.name, "view": view, "file": str(path.relative_to(out)),
                        **view_stats(labels, gt)})
    manifest = {"params": params, "views": entries}
    write_text(out / "manifest.json", json.dumps(manifest, indent=1))
    summary = {"views": len(entries), "predicted": predicted, "checked": checked}
    for key in ("coverage", "mean_sigma", "abs_err", "within_2mm"):
        values = [e[key] for e in entries if key in e]
        if values:
            summary[key] = float(np.mean(values))
    return summary


def read_manifest(labels_root) -> dict:
    path = Path(labels_root) / "manifest.json"
    if not path.is_file():
        raise InputError(path, "no label manifest (run the label job first)")
    try:
        manifest = json.loads(path.read_text())
        views = manifest["views"]
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(path, f"not a label manifest ({exc})") from exc
    return {"params": manifest.get("params", {}), "views": views}
