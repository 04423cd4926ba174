"""dac: divide and conquer (methods.md §2).

1. partition: the training views into ``dac.experts`` groups of similar views
   (azimuth sectors around an object, Louvain communities of a covisibility
   or frustum-overlap graph otherwise), recorded as a view -> expert table and
   a camera plot on the parent run;
2. experts: one field per group, trained concurrently on the actor pool, each
   scored on all test views and on the test views of its own sector;
3. student_distilled: one field distilled from all experts on every training
   ray, each ray taught by the expert that owns its view (Ray Train path);
4. student: that field fine-tuned on the images;
5. baseline (``dac.with_baseline``): one field trained on all views for as many
   steps as distillation and fine-tuning took together.

Summary: the fine-tuned student's metrics unprefixed (and as ``student/``),
``student_distilled/``, ``expert_k/`` (with ``expert_k/own/``) and ``baseline/``.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager

import numpy as np

from fieldkd.platform.distill.experts import ExpertsRef
from fieldkd.platform.distill.stage import TeacherRef
from fieldkd.platform.errors import InputError
from fieldkd.platform.scenes.partition import ViewPartition, partition_figure, split_views
from fieldkd.platform.stages import RunContext, load_scene_from_config, prefixed, run_stages, stage_config


def partition(ctx: RunContext) -> tuple[ViewPartition, np.ndarray]:
    """Split the training views and record the split on the parent run; also
    returns the expert of each evaluation view."""
    cfg, dac = ctx.cfg, ctx.cfg["dac"]
    scene = load_scene_from_config(cfg["scene"])
    train = scene.split("train")
    try:
        found = split_views(train, scene.aabb, int(dac["experts"]), method=dac["partition"], graph=dac["graph"],
                            overlap=float(dac["overlap"]), points=int(dac["graph_points"]), seed=int(cfg["seed"]))
    except ValueError as exc:
        raise InputError("dac", str(exc)) from exc
    names = [os.path.relpath(p, scene.source) for p in train.frame_paths]
    ctx.run.log_text(found.table(names), "partition/views.tsv")
    test = scene.split(cfg["eval"]["split"])
    tests = found.assign(test.cameras)
    figure = partition_figure(found, {f"{cfg['eval']['split']} views": (test.cameras.centers.numpy(), tests)})
    ctx.run.log_figure(figure, "partition/cameras.png")
    ctx.run.set_tags({"fieldkd.partition": found.method + (f"/{found.graph}" if found.graph else "")})
    ctx.run.log_metrics({f"partition/expert_{k}/views": len(group) for k, group in enumerate(found.groups)}, 0)
    return found, tests


@contextmanager
def timed(metrics: dict, phase: str):
    """Wall seconds of a pipeline phase, as ``time/PHASE`` (the parallel expert phase against its stages' own)."""
    started = time.perf_counter()
    yield
    metrics[f"time/{phase}"] = time.perf_counter() - started


def run(ctx: RunContext) -> dict[str, float]:
    cfg, dac = ctx.cfg, ctx.cfg["dac"]
    if cfg["distill"]["inquirer"] != "training_rays":
        raise InputError("distill.inquirer", "each expert teaches the rays of its own views: use training_rays")
    split, test_owner = partition(ctx)
    field, times = cfg["field"], {}

    expert_cfg = stage_config(cfg, field, dac["expert"]["trainer"])
    experts = []
    for k, views in enumerate(split.groups):
        own_tests = [int(i) for i in np.flatnonzero(test_owner == k)]
        experts.append(ctx.request(f"expert_{k}", ctx.child(f"expert_{k}", expert_cfg), expert_cfg, views=views,
                                   eval_groups={"own": own_tests}))
    with timed(times, "experts"):
        trained = run_stages(ctx, experts)
    teachers = ExpertsRef(tuple(TeacherRef(trained[r.stage].checkpoint, field) for r in experts),
                          tuple(int(o) for o in split.owner))

    distill_cfg = stage_config(cfg, field, dac["distill"]["trainer"])
    request = ctx.request("student_distilled", ctx.child("student_distilled", distill_cfg), distill_cfg,
                          task="distill", teacher=teachers)
    with timed(times, "student_distilled"):
        distilled = run_stages(ctx, [request], distributed=True)["student_distilled"]

    tune_cfg = stage_config(cfg, field, dac["finetune"]["trainer"])
    request = ctx.request("student", ctx.child("student", tune_cfg), tune_cfg, init=distilled.checkpoint)
    with timed(times, "student"):
        tuned = run_stages(ctx, [request], distributed=True)["student"]

    metrics = {**tuned.metrics, **prefixed(tuned.metrics, "student"),
               **prefixed(distilled.metrics, "student_distilled")}
    for name, outcome in trained.items():
        metrics.update(prefixed(outcome.metrics, name))
    if dac["with_baseline"]:
        # The same student steps, however the stages were bounded: no time limit of its own.
        steps = {"steps": distilled.steps + tuned.steps, "max_seconds": None}
        baseline_cfg = stage_config(cfg, field)
        baseline_cfg["trainer"].update(steps)
        request = ctx.request("baseline", ctx.child("baseline", baseline_cfg), baseline_cfg)
        with timed(times, "baseline"):
            metrics.update(prefixed(run_stages(ctx, [request], distributed=True)["baseline"].metrics, "baseline"))
    return {**metrics, **times}
