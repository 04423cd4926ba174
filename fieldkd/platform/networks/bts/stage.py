"""Stages that train a BTS density field over driving sequences, in the shape of the platform's
stage kinds (``build``, ``task``, ``batch_size``, ``validation``, ``shards``, ``record``, ``tags``,
``evaluate``):

- ``bts_self_supervised``: image reconstruction alone, through the head ``bts.head`` names
  ("multi": the MVBTS teacher; "single": the single-view BTS baseline);
- ``bts_distilled``: the single-view head learns from the multi-view head of the network in
  ``request.init`` (the teacher's checkpoint) in 3D, besides image reconstruction
  (:class:`.tasks.DistilledBTSTask`). ``bts.teacher=shared`` (official): one network, the student
  starting from the teacher's weights; ``frozen``: a separate frozen copy of the teacher.

Both are scored by :func:`.evaluation.evaluate_bts` on the test split, through the head the stage
trains (``head_of``): every number carries it as the run tag ``fieldkd.head``. The config
sections read: ``scene`` (a KITTI-360-layout folder, conf/scene/kitti360.yaml), ``bts`` (``head``,
``teacher``, ``batch_size``, ``network``: :data:`.model.DEFAULTS`, ``loss``:
:data:`.tasks.TASK_DEFAULTS`), ``trainer``, ``eval`` (``bts_*`` keys, :data:`.evaluation.EVAL_DEFAULTS`).

:func:`fit_bts_stage` runs one such stage in any process (an actor, a Tune trial) from a
:class:`~fieldkd.platform.stages.StageRequest`; :func:`run_bts_stages` runs several at once on the
actor pool.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ...errors import InputError

MODEL_KIND = "bts"
BTS_DEFAULTS = {"head": "multi", "teacher": "shared", "batch_size": 1, "network": {}, "loss": {}}
TEACHER_KINDS = ("shared", "frozen")


def bts_options(cfg: dict) -> dict:
    found = dict(cfg.get("bts") or {})
    unknown = sorted(set(found) - set(BTS_DEFAULTS))
    if unknown:
        raise InputError("bts", f"unknown keys {unknown}; known: {sorted(BTS_DEFAULTS)}")
    out = {**BTS_DEFAULTS, **{k: v for k, v in found.items() if v is not None}}
    if out["head"] not in ("single", "multi"):
        raise InputError("bts.head", f"one of single, multi; got {out['head']!r}")
    if out["teacher"] not in TEACHER_KINDS:
        raise InputError("bts.teacher", f"one of {', '.join(TEACHER_KINDS)}; got {out['teacher']!r}")
    return out


def sequence_data(scene: dict):
    """The data module a ``scene`` section (conf/scene/kitti360.yaml) describes: it trains on
    ``<split_dir>/train_files.txt`` and evaluates on ``test_files.txt``. A null path is the bundled
    generated driving set."""
    from ...data.sequences import SequenceData
    from ...scenes.kitti_generator import default_kitti_dir
    from ...scenes.limits import ReadLimits

    root = Path(scene["path"]) if scene.get("path") else default_kitti_dir(progress=False)
    splits = root / str(scene.get("split_dir") or "splits")
    files = {name: splits / f"{name}_files.txt" for name in ("train", "test")}
    for path in files.values():
        if not path.is_file():
            raise InputError(path, "split file not found (see scene.split_dir)")
    return SequenceData(root, split_file=files["train"], eval_split_file=files["test"],
                        offsets=scene.get("offsets") or (0, 1), height=int(scene.get("height") or 64),
                        width=int(scene.get("width") or 192), lidar_sweeps=int(scene.get("lidar_sweeps") or 20),
                        limits=ReadLimits.from_config(scene), fisheyes=bool(scene.get("fisheyes", False)),
                        fisheye_offset=int(scene.get("fisheye_offset", 10)),
                        fisheye_turn=scene.get("fisheye_turn") or (0, -15))


def load_bts_net(checkpoint, device="cpu"):
    """The BTS network of a stage checkpoint (``last.pt``); nothing in the file is run (``weights_only``)."""
    from ...train.checkpoint import load_checkpoint
    from .model import build_bts

    state = load_checkpoint(checkpoint)
    task = state.get("task")
    if not isinstance(task, dict) or "net" not in task or "net_config" not in task:
        raise InputError(checkpoint, "not a checkpoint of a BTS network (no task.net and task.net_config)")
    config = {**dict(task["net_config"]), "pretrained": None}  # the weights are here: no user file again
    net = build_bts(config)
    net.load_state_dict(task["net"])
    return net.to(device)


@dataclass
class BTSParts:
    """What a BTS stage builds; ``field``/``renderer``/``backend`` as the stage runner names a stage's
    model (here the network; it renders itself)."""

    data: object  # a SequenceData
    field: torch.nn.Module
    teacher: torch.nn.Module | None = None  # distillation: the network whose multi head teaches
    renderer: None = None
    backend: str = "torch"

    @property
    def net(self) -> torch.nn.Module:
        return self.field


class BTSStage:
    """What the two BTS stage kinds share; ``distilled`` picks the task."""

    name = "bts"
    distilled = False
    evaluators = ("bts",)

    def head_of(self, cfg: dict) -> str:
        """The head this stage trains, and so the one its scores come from."""
        return "single" if self.distilled else bts_options(cfg)["head"]

    def build(self, request, device) -> BTSParts:
        from .model import build_bts

        cfg = request.cfg
        options = bts_options(cfg)
        data = sequence_data(cfg["scene"])
        teacher = None
        if request.init is not None:  # go on from a trained network (the student: from its teacher)
            net = load_bts_net(request.init, device)
        elif self.distilled:
            raise InputError("init", "a distilled BTS stage needs its teacher's checkpoint")
        else:
            net = build_bts(dict(options["network"])).to(device)
        if self.distilled:
            teacher = net if options["teacher"] == "shared" else load_bts_net(request.init, device)
        return BTSParts(data, net, teacher)

    def batch_size(self, cfg: dict) -> int:
        return int(bts_options(cfg)["batch_size"])

    def task(self, request, parts: BTSParts, device, *, batches=None, batch_size: int | None = None, rank: int = 0,
             world: int = 1, sync=None, evaluate=None, forward=None):
        from .tasks import DistilledBTSTask, SelfSupervisedBTSTask

        cfg = request.cfg
        size = int(batch_size or self.batch_size(cfg))
        stream = batches if batches is not None else parts.data.train_batches(rank, world, size, int(cfg["seed"]))
        loss = dict(bts_options(cfg)["loss"])
        if self.distilled:
            return DistilledBTSTask(parts.net, parts.teacher, stream, device, loss, evaluate=evaluate)
        return SelfSupervisedBTSTask(parts.net, stream, device, loss, head=self.head_of(cfg), evaluate=evaluate)

    def validation(self, request, parts, device):
        return lambda step: {}  # scoring casts every test frame's grid and rays: done once, after training

    def shards(self, request) -> str | None:
        return None

    def record(self, request, parts: BTSParts) -> dict:
        return {"kind": MODEL_KIND, "config": dict(parts.net.config)}

    def tags(self, request, trained=None) -> dict[str, str]:
        options = bts_options(request.cfg)
        tags = {"network": MODEL_KIND, "task": request.task, "head": self.head_of(request.cfg)}
        if request.init:
            tags["init"] = str(request.init)
        if self.distilled:
            tags["kd_teacher"] = options["teacher"]
        return tags

    def evaluate(self, ctx, trained, run, request) -> dict[str, float]:
        return bts_evaluator(trained, run, request.cfg, self.head_of(request.cfg))


class SelfSupervisedStage(BTSStage):
    name = "bts_self_supervised"
    distilled = False


class DistilledStage(BTSStage):
    name = "bts_distilled"
    distilled = True


KINDS = {k.name: k() for k in (SelfSupervisedStage, DistilledStage)}


def bts_evaluator(trained, run, cfg: dict, head: str) -> dict[str, float]:
    """The ``bts`` evaluator: ``trained.field`` through ``head`` on the test split's frames."""
    from .evaluation import evaluate_bts
    from .tasks import task_config

    views = task_config(bts_options(cfg)["loss"])["encoder_views"]
    return evaluate_bts(trained.field, sequence_data(cfg["scene"]), cfg["eval"], head=head,
                        views=views, run=run, step=trained.result.steps)


@dataclass
class TrainedNet:
    field: torch.nn.Module
    result: object  # a TrainResult
    device: torch.device
    checkpoint_dir: Path


def fit_bts_stage(request):
    """Train (resuming from the stage's checkpoint) and score one BTS stage; returns a StageOutcome."""
    from ...compute.interrupts import StageStopped, watching
    from ...compute.session import placement
    from ...stages import (
        RunContext,
        StageOutcome,
        also,
        budget_start,
        report,
        resolve_device,
        trainer_config,
    )
    from ...tracking import Run
    from ...train.loop import Trainer

    if request.task not in KINDS:
        raise InputError("task", f"unknown BTS stage task {request.task!r}; one of {', '.join(KINDS)}")
    kind, cfg = KINDS[request.task], request.cfg
    device = resolve_device(cfg["device"])
    torch.manual_seed(int(cfg["seed"]))
    run = Run(request.run_id, request.tracking_uri)
    ctx = RunContext(cfg=cfg, run=run, device=device, output_dir=Path(request.output_dir))
    parts = kind.build(request, device)  # bad input fails before the run is touched
    run.continuing()
    # the head is known before training: a failed or stopped stage still says which head it trained
    run.set_tags(ctx.tags(field=MODEL_KIND, backend="torch", stage=request.stage, **kind.tags(request)))
    started = time.perf_counter()
    task = kind.task(request, parts, device, evaluate=kind.validation(request, parts, device))
    with watching() as stopped:
        trainer = Trainer(trainer_config(cfg), log=also(run.log_metrics), checkpoint_dir=request.checkpoint_dir,
                          device=device, description=request.stage, should_stop=stopped,
                          started_at=budget_start(run, request))
        result = trainer.fit(task)
    if result.stopped_by == "stop":
        raise StageStopped(request.stage, result.steps)
    run.log_metrics({"train/steps": result.steps, "train/seconds": result.seconds}, result.steps)
    run.set_tags(ctx.tags(**placement()))
    metrics = {}
    if request.evaluate:
        metrics = kind.evaluate(ctx, TrainedNet(parts.net, result, device, request.checkpoint_dir), run, request)
        run.log_metrics(metrics, result.steps)
        if request.report and metrics:
            report(metrics, result.steps)
    checkpoint = request.checkpoint_dir / "last.pt"
    if checkpoint.exists():
        from ...tracking.run import CHECKPOINT_TAG

        run.set_tags({CHECKPOINT_TAG: str(checkpoint.resolve())})
    return StageOutcome(request.stage, metrics, str(checkpoint), "torch", result.steps,
                        time.perf_counter() - started)


def run_bts_stages(ctx, requests: list) -> dict:
    """Independent BTS stages at once on the actor pool (one after another inline inside a Tune
    trial); their child runs are closed after. Returns StageOutcomes by stage name."""
    from ...compute.pool import Training, run_trainings
    from ...compute.resources import training_resources
    from ...stages import finishing

    compute = ctx.cfg["compute"]
    num_cpus, num_gpus = training_resources(compute, len(requests))
    trainings = [Training(r.stage, fit_bts_stage, {"request": r}, num_cpus, num_gpus) for r in requests]
    with finishing(ctx, requests):
        outcomes = run_trainings(trainings, max_restarts=int(compute["max_restarts"]))
    return {name: outcome.result for name, outcome in outcomes.items()}
