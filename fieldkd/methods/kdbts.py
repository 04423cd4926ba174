"""kdbts: a multi-view density field distilled into a single-view one (methods.md §5).

A BTS network with the multi-view head is trained self-supervised on the training sequences
(``teacher``, MVBTS); at the same time, on the actor pool, the same network with the single-view
head only (``baseline``, BTS). The ``student`` starts from the teacher's checkpoint and its
single-view head learns from the teacher's multi-view densities in 3D (KDBTS). Every network is
scored on the test sequences through the head it trained (tag ``fieldkd.head``): the teacher's
numbers are the multi head's, the baseline's and the student's the single head's. With
``compute.workers=N`` the student trains on N Ray Train workers (``bts.batch_size`` split among them).
``kdbts.teacher`` uses a trained teacher's checkpoint instead of training one; ``kdbts.baseline=false``
skips the baseline; ``kdbts.student_init=baseline`` starts the student from the trained baseline
instead (with a frozen teacher copy, ``bts.teacher=frozen``); ``kdbts.student_steps`` trains the
student for that many steps (default: ``trainer.steps``, as teacher and baseline).

Summary: the student's metrics unprefixed; ``teacher/...`` and ``baseline/...`` for the others.
"""

from __future__ import annotations

import copy
from pathlib import Path

from fieldkd.platform.errors import InputError
from fieldkd.platform.networks.bts.stage import BTSTeacher, bts_options
from fieldkd.platform.stages import RunContext, prefixed, run_stages


def field_label(cfg: dict) -> str:
    return "bts"


def stage_cfg(cfg: dict, head: str) -> dict:
    """A stage's config: the trainer's GPU sizes where it sets them, and the head it trains."""
    out = copy.deepcopy(cfg)
    t = cfg["trainer"]
    for key, target in (("bts_height", "height"), ("bts_width", "width")):
        if t.get(key) is not None:
            out["scene"][target] = int(t[key])
    if t.get("bts_samples") is not None:
        out["bts"]["loss"]["n_samples"] = int(t["bts_samples"])
    out["bts"]["head"] = head
    return out


def run(ctx: RunContext) -> dict[str, float]:
    k = ctx.cfg["kdbts"]
    workers, batch = int(ctx.cfg["compute"]["workers"]), int(bts_options(ctx.cfg)["batch_size"])
    if workers > 1 and batch < workers:  # checked before anything trains
        raise InputError("bts.batch_size", f"the student's global batch of {batch} cannot be split among "
                                           f"{workers} Ray Train workers (compute.workers); raise bts.batch_size")
    from_baseline = k["student_init"] == "baseline"
    if from_baseline and not k["baseline"]:
        raise InputError("kdbts.student_init", "a student that starts from the baseline needs kdbts.baseline=true")
    if from_baseline and bts_options(ctx.cfg)["teacher"] != "frozen":
        raise InputError("kdbts.student_init", "a student that starts from the baseline learns from a separate "
                                               "teacher: set bts.teacher=frozen")
    metrics: dict[str, float] = {}
    first = []
    if k["teacher"]:  # a given teacher (e.g. for a sweep of the KD weight): not trained again
        if not Path(k["teacher"]).is_file():
            raise InputError(k["teacher"], "teacher checkpoint not found")
        source = str(k["teacher"])
    else:
        cfg = stage_cfg(ctx.cfg, "multi")
        first.append(ctx.request("teacher", ctx.child("teacher", cfg), cfg, task="bts_self_supervised"))
    if k["baseline"]:
        cfg = stage_cfg(ctx.cfg, "single")
        first.append(ctx.request("baseline", ctx.child("baseline", cfg), cfg, task="bts_self_supervised"))
    if first:  # teacher and baseline are independent: at once on the pool
        outcomes = run_stages(ctx, first)
        for name, outcome in outcomes.items():
            metrics.update(prefixed(outcome.metrics, name))
        if not k["teacher"]:
            source = outcomes["teacher"].checkpoint
    cfg = stage_cfg(ctx.cfg, "single")
    if k["student_steps"] is not None:
        cfg["trainer"]["steps"] = int(k["student_steps"])
    start = {"init": outcomes["baseline"].checkpoint, "teacher": BTSTeacher(source)} if from_baseline else {"init": source}
    request = ctx.request("student", ctx.child("student", cfg), cfg, task="bts_distilled", report=True, **start)
    student = run_stages(ctx, [request], distributed=True)["student"]  # Ray Train when compute.workers > 1
    metrics.update(prefixed(student.metrics, "student"))
    metrics.update(student.metrics)
    return metrics

