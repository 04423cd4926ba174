"""Stages that train a cascade MVS network over a dataset of scans, in the shape of the platform's
stage kinds (:mod:`fieldkd.platform.stage_kinds`):

- ``mvs_self_supervised``: the KD-MVS teacher (:class:`.tasks.SelfSupervisedMVSTask` over the
  training split's multi-view samples);
- ``mvs_labelled``: a student (:class:`.tasks.LabelledMVSTask` over the samples joined with the
  pseudo-labels under ``mvs.labels``).

Both are scored by :func:`.evaluation.evaluate_mvs` on the ``eval.split`` scans. The config
sections read: ``scene`` (a DTU-format dataset), ``network`` (CascadeMVSNet's options),
``mvs_loss`` (the task's loss options), ``mvs`` (``batch_size``, ``labels``), ``trainer``,
``eval`` (``mvs_*`` keys, see :data:`.evaluation.EVAL_DEFAULTS`).

:func:`fieldkd.platform.stages.fit_stage` runs such a stage like any other: in an actor, a Tune
trial, or on Ray Train workers (each on its rank's shard of the samples).
"""

from __future__ import annotations

from pathlib import Path

from ...errors import InputError
from ...evaluators import register_evaluator
from ...models import register_model
from ...stage_kinds import register_stage_kind
from ..stage_parts import NetworkParts, NetworkStage

MODEL_KIND = "cascade_mvs"


@register_model(MODEL_KIND)
def load_cascade_mvs(state: dict, record: dict, device, source: str):
    """The cascade MVS network of a stage checkpoint (see :mod:`fieldkd.platform.models`), in eval mode."""
    from .network import build_cascade_mvs

    net = build_cascade_mvs(dict(record["config"]))
    net.load_state_dict(state["task"]["net"])
    return net.to(device).eval()
MVS_DEFAULTS = {"batch_size": 2, "labels": None}


def mvs_options(cfg: dict) -> dict:
    found = dict(cfg.get("mvs") or {})
    unknown = sorted(set(found) - set(MVS_DEFAULTS))
    if unknown:
        raise InputError("mvs", f"unknown keys {unknown}; known: {sorted(MVS_DEFAULTS)}")
    return {**MVS_DEFAULTS, **found}


def multiview(cfg: dict, split: str):
    from ...data.multiview import MultiViewData

    return MultiViewData.from_config(cfg["scene"], split)


class MVSStage(NetworkStage):
    """What the two MVS stage kinds share; ``labelled`` picks the data and the task."""

    name = "mvs"
    labelled = False
    evaluators = ("mvs",)

    def build(self, request, device) -> NetworkParts:
        from .label_data import LabelledViews
        from .label_job import load_mvs_net
        from .network import build_cascade_mvs

        cfg = request.cfg
        data = multiview(cfg, "train")
        if self.labelled:
            labels = mvs_options(cfg)["labels"]
            if not labels:
                raise InputError("mvs.labels", "a labelled MVS stage needs the folder of its pseudo-labels")
            data = LabelledViews(data, labels)
        net = build_cascade_mvs(dict(cfg.get("network") or {}))
        if request.init is not None:  # go on from a trained network of the same shape
            net.load_state_dict(load_mvs_net(request.init).state_dict())
        return NetworkParts(data, net.to(device))

    def batch_size(self, cfg: dict) -> int:
        return int(mvs_options(cfg)["batch_size"])

    def task(self, request, parts: NetworkParts, device, *, batches=None, batch_size: int | None = None, rank: int = 0,
             world: int = 1, sync=None, evaluate=None, forward=None):
        from .tasks import LabelledMVSTask, SelfSupervisedMVSTask

        size = int(batch_size or self.batch_size(request.cfg))
        # each rank draws from its own disjoint shard of the samples (Ray Train: rank, world)
        stream = batches if batches is not None else parts.data.train_batches(rank, world, size,
                                                                              int(request.cfg["seed"]))
        kind = LabelledMVSTask if self.labelled else SelfSupervisedMVSTask
        return kind(parts.net, stream, device, request.cfg.get("mvs_loss"), evaluate=evaluate, forward=forward)

    def record(self, request, parts: NetworkParts) -> dict:
        return {"kind": MODEL_KIND, "config": dict(parts.net.config)}

    def tags(self, request) -> dict[str, str]:
        tags = {"field": MODEL_KIND, "network": MODEL_KIND, "task": request.task}
        if request.init:
            tags["init"] = str(request.init)
        labels = mvs_options(request.cfg)["labels"]
        if self.labelled and labels:
            tags["labels"] = str(labels)
        return tags


@register_stage_kind
class SelfSupervisedStage(MVSStage):
    name = "mvs_self_supervised"
    labelled = False


@register_stage_kind
class LabelledStage(MVSStage):
    name = "mvs_labelled"
    labelled = True


@register_evaluator("mvs")
def evaluate_mvs_stage(ctx, request, parts, trained) -> dict[str, float]:
    """The network on the ``eval.split`` scans: fused clouds (into ``trained.checkpoint_dir/clouds``),
    DTU's accuracy and completeness, depth-map errors."""
    from .evaluation import evaluate_mvs

    cfg = request.cfg
    return evaluate_mvs(trained.field, multiview(cfg, cfg["eval"]["split"]), cfg["eval"], trained.device, run=ctx.run,
                        step=trained.result.steps, out_dir=trained.checkpoint_dir)


def label_images(out_dir, count: int) -> list[tuple[str, object]]:
    """Pictures of the first ``count`` labelled views: the teacher's depth, the label's mu (black where
    none), its sigma and the ground truth."""
    import numpy as np

    from .evaluation import colourise, depth_panels
    from .label_job import load_npz, read_manifest

    out = Path(out_dir)
    pictures = []
    for entry in read_manifest(out)["views"][:count]:
        labels = load_npz(out / entry["file"])
        pred = load_npz(out / "depths" / entry["scan"] / f"{int(entry['view']):08d}.npz")
        lo, hi = (float(x) for x in pred["depth_range"])
        mask = labels["mask"].astype(bool)
        sigma_hi = float(np.percentile(labels["sigma"][mask], 95)) if mask.any() else 1.0
        panels = [("teacher depth", colourise(pred["depth"], lo, hi)),
                  (f"label mu ({100 * mask.mean():.0f}%)", colourise(labels["mu"], lo, hi, valid=mask)),
                  ("label sigma", colourise(labels["sigma"], 0.0, max(sigma_hi, 1e-6), "magma", valid=mask))]
        if "gt_depth" in pred:
            panels.append(("ground truth", colourise(pred["gt_depth"], lo, hi, valid=pred["gt_depth"] > 0)))
        grey = np.repeat(((pred["depth"] - lo) / max(hi - lo, 1e-9)).clip(0, 1)[None], 3, axis=0)
        pictures.append((f"labels/{entry['scan']}_view_{int(entry['view']):03d}", depth_panels(grey, panels)))
    return pictures


def label_stage(ctx, stage: str, checkpoint: str, cfg: dict, options: dict) -> tuple[str, dict[str, float]]:
    """Pseudo-labels from the network of ``checkpoint`` on the training split, as the child run ``stage``
    (metrics ``labels/*``, ``manifest.json``, pictures); returns the labels folder and the metrics."""
    from ...stages import finishing
    from .label_job import make_labels

    run = ctx.child(stage, cfg)
    out = ctx.stage_dir(stage)
    device = "cuda" if float(options.get("gpus_per_worker") or 0) > 0 else "cpu"
    with finishing(ctx, [ctx.request(stage, run, cfg)]):
        summary = make_labels(checkpoint, multiview(cfg, "train"), out, options, device=device)
        metrics = {f"labels/{k}": float(v) for k, v in summary.items() if k not in ("predicted", "checked")}
        run.set_tags({"fieldkd.labels.predicted": str(summary["predicted"]),  # this attempt's work (resumes skip)
                      "fieldkd.labels.checked": str(summary["checked"])})
        run.log_metrics(metrics, 0)
        run.set_tags(ctx.tags(field=MODEL_KIND, stage=stage, task="mvs_labels", teacher_checkpoint=str(checkpoint)))
        run.log_artifact(out / "manifest.json", "labels")
        for key, picture in label_images(out, int(cfg["eval"].get("log_images") or 0)):
            run.log_image(picture, key, 0)
    return str(out), metrics
