"""kdmvs: knowledge distillation for self-supervised multi-view stereo (methods.md §4).

A cascade MVS network is trained self-supervised (``teacher``); its depth maps of the training
views become probabilistic pseudo-labels by cross-view consistency (``labels_1``, a Ray Data
job), and a student trains from scratch on them (``student_1``). With ``kdmvs.rounds`` R > 1
each student is the next round's teacher (``labels_2``, ``student_2``, ...). Every network is
scored on the test scans (fused clouds, DTU's metrics). ``kdmvs.labels.kind=hard`` trains the
students on the labels' means only (the ablation); ``kdmvs.teacher`` labels with a trained teacher's
checkpoint instead of training one.

Summary: the final student's metrics unprefixed; ``teacher/...``, ``student_k/...`` and
``labels_k/...`` for every stage.
"""

from __future__ import annotations

import copy
from pathlib import Path

from fieldkd.platform.errors import InputError
from fieldkd.platform.networks.mvs.stage import label_stage
from fieldkd.platform.stages import RunContext, prefixed, run_stages

LABEL_KINDS = ("prob", "hard")


def field_label(cfg: dict) -> str:
    return "cascade_mvs"


def stage_cfg(cfg: dict, uncertainty: bool, labels: str | None = None, hard: bool = False) -> dict:
    """A stage's config: the GPU sizes where the trainer sets them, the teacher's uncertainty head,
    and a student's labels and loss."""
    out = copy.deepcopy(cfg)
    t = cfg["trainer"]
    for key, target in (("mvs_height", "height"), ("mvs_width", "width")):
        if t.get(key) is not None:
            out["scene"][target] = int(t[key])
    if t.get("mvs_hypotheses") is not None:
        out["network"]["hypotheses"] = [int(n) for n in t["mvs_hypotheses"]]
    out["network"]["uncertainty"] = uncertainty
    out["mvs"] = {**cfg["mvs"], "labels": labels}
    loss = cfg["kdmvs"]["student_loss"] if labels else cfg["kdmvs"]["teacher_loss"]
    out["mvs_loss"] = {**dict(loss or {}), **({"hard": hard} if labels else {})}
    return out


def run(ctx: RunContext) -> dict[str, float]:
    k = ctx.cfg["kdmvs"]
    rounds, kind = int(k["rounds"]), k["labels"]["kind"]
    if kind not in LABEL_KINDS:
        raise InputError("kdmvs.labels.kind", f"one of {', '.join(LABEL_KINDS)}, got {kind!r}")
    if rounds < 1:
        raise InputError("kdmvs.rounds", f"must be at least 1, got {rounds}")
    job = {key: value for key, value in k["labels"].items() if key != "kind"}

    if k["teacher"]:  # a given teacher (e.g. for a sweep of the label thresholds): not trained again
        if not Path(k["teacher"]).is_file():
            raise InputError(k["teacher"], "teacher checkpoint not found")
        metrics, source = {}, str(k["teacher"])
    else:
        cfg = stage_cfg(ctx.cfg, uncertainty=True)
        (teacher,) = run_stages(ctx, [ctx.request("teacher", ctx.child("teacher", cfg), cfg,
                                                  task="mvs_self_supervised")]).values()
        metrics, source = prefixed(teacher.metrics, "teacher"), teacher.checkpoint
    for r in range(1, rounds + 1):
        labels, found = label_stage(ctx, f"labels_{r}", source, stage_cfg(ctx.cfg, uncertainty=False), job)
        metrics.update(prefixed({key.split("/", 1)[1]: v for key, v in found.items()}, f"labels_{r}"))
        cfg = stage_cfg(ctx.cfg, uncertainty=False, labels=labels, hard=kind == "hard")
        (student,) = run_stages(ctx, [ctx.request(f"student_{r}", ctx.child(f"student_{r}", cfg), cfg,
                                                  task="mvs_labelled", report=True)], distributed=True).values()
        metrics.update(prefixed(student.metrics, f"student_{r}"))
        source = student.checkpoint
    metrics.update(student.metrics)
    return metrics
