"""Building blocks that methods compose into pipelines.

A method receives a :class:`RunContext` and calls these helpers: load the
scene, build a field, train it as a stage, evaluate and log it. Everything is
driven by the resolved config, so a method stays a short recipe.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .compute.ddp import agreed_seconds, any_worker, average_gradients, replica_spread, share_rank0_state
from .compute.interrupts import StageStopped, watching
from .compute.session import placement
from .distill.teacher import Teacher
from .errors import InputError
from .evaluators import evaluate_stage
from .fields import build_field, pick_hash_backend
from .render.renderer import RenderConfig, Renderer
from .scenes import default_scene_dir, load_scene
from .scenes.limits import ReadLimits
from .scenes.scene import Scene
from .stage_kinds import stage_kind
from .stage_request import Place, RunContext, StageOutcome, StageRequest, TrainedField, resolve_device
from .tracking import Run
from .tracking.run import CHECKPOINT_TAG
from .train.loop import MetricsLogger, Trainer, TrainerConfig, TrainResult
from .train.progress import activity
from .train.supervision import Supervision


def named_field(cfg: dict, name: str) -> dict:
    """The config of field ``name``: the run's ``field`` (with its command-line
    overrides) when that is the one named, else the preset of that name."""
    from ..conf import field_config

    return dict(cfg["field"]) if cfg["field"]["name"] == name else field_config(name)


def stage_config(cfg: dict, field: dict, trainer: dict | None = None) -> dict:
    """A stage's config: the pipeline's, with its own field and the trainer overrides that are set."""
    given = {k: v for k, v in (trainer or {}).items() if v is not None}
    return {**cfg, "field": dict(field), "trainer": {**cfg["trainer"], **given}}


READ_OPTIONS = ("missing_frames", "center_crop", "depth_scale")  # scene.* keys that go to the reader


def load_scene_from_config(scene_cfg: dict) -> Scene:
    limits = ReadLimits.from_config(scene_cfg)
    path = scene_cfg.get("path")
    if not path:
        if not scene_cfg.get("generate"):
            raise InputError("scene.path", "no scene given: set scene.path=DIR or scene.generate=NAME")
        path = default_scene_dir(scene_cfg["generate"], scene_cfg["format"])
    aabb = torch.tensor(scene_cfg["aabb"], dtype=torch.float32) if scene_cfg.get("aabb") else None
    return load_scene(scene_cfg["format"], path, background=tuple(scene_cfg["background"]),
                      downscale=int(scene_cfg.get("downscale", 1)), aabb=aabb,
                      near=scene_cfg.get("near"), far=scene_cfg.get("far"),
                      limits=limits,
                      **{k: scene_cfg[k] for k in READ_OPTIONS if scene_cfg.get(k) is not None})


def make_field(field_cfg: dict, scene: Scene, device: torch.device):
    """Build the configured field; returns it and the backend it runs on."""
    options = {k: v for k, v in field_cfg.items() if k != "name"}
    backend = pick_backend(field_cfg)
    if "backend" in options:
        options["backend"] = backend
    return build_field(field_cfg["name"], scene.aabb, **options).to(device), backend


def make_renderer(cfg: dict, scene: Scene, device: torch.device) -> Renderer:
    render = RenderConfig(**cfg["render"])
    return Renderer(scene.aabb, scene.near, scene.far, scene.background, render).to(device)


def trainer_config(cfg: dict, **overrides) -> TrainerConfig:
    values = {**cfg["trainer"], "seed": cfg["seed"], **overrides}
    return TrainerConfig.from_dict(values)


@dataclass
class StageParts:
    """What a process builds for a stage of a field before training it (see :mod:`.field_stages`)."""

    scene: Scene
    field: torch.nn.Module
    renderer: Renderer
    backend: str
    teacher: Teacher | None = None


def build_parts(request: StageRequest, device: torch.device):
    """What the stage's kind builds before training: for a field, the scene, the field to train (or, to
    evaluate, the given one) and its renderer."""
    return stage_kind(request.task).build(request, device)


def start_from(checkpoint: str, field: torch.nn.Module, renderer: Renderer) -> None:
    """Load a trained field and its occupancy grid (a stage's ``last.pt``) to go on training it."""
    from .train.checkpoint import load_checkpoint

    if not Path(checkpoint).exists():
        raise InputError(checkpoint, "checkpoint to start from not found")
    task = load_checkpoint(checkpoint)["task"]
    field.load_state_dict(task["field"])
    renderer.load_state_dict(task["renderer"])


def sync_proposal(task, proposal: torch.nn.Module) -> None:
    """Data-parallel workers: the proposal networks (render.sampler=proposal) run outside the field's
    DDP wrapper, so they start from rank 0's weights and their gradients are averaged by hand."""
    import torch.distributed as dist

    with torch.no_grad():
        for p in proposal.parameters():
            dist.broadcast(p.data, src=0)
    params = list(proposal.parameters())
    before = getattr(task, "sync_gradients", None)

    def sync() -> None:
        if before is not None:
            before()
        average_gradients(params)

    task.sync_gradients = sync


def pick_backend(field_cfg: dict) -> str:
    return pick_hash_backend(field_cfg["backend"]) if "backend" in field_cfg else "torch"


def supervision_of(cfg: dict) -> Supervision:
    try:
        return Supervision.from_dict(cfg.get("supervision"))
    except ValueError as exc:
        raise InputError("supervision", str(exc)) from exc


def train_stage(ctx: RunContext, request: StageRequest, kind, parts, place: Place) -> TrainResult | None:
    """Train the stage's model at ``place`` (resuming from the stage's checkpoint); None when the driver
    asked Ray Train workers to stop (their checkpoint is saved; the driver raises)."""
    cfg, device, world = ctx.cfg, ctx.device, place.world
    forward = None
    if world > 1 and kind.gradient_sync == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(parts.field, **kind.ddp_options)
    total = kind.batch_size(cfg)
    if total < world:
        raise InputError("batch size", f"a global batch of {total} cannot be split among {world} workers")
    validate = kind.validation(request, parts, device) if place.lead else None
    task = kind.task(request, parts, device, evaluate=validate, forward=forward, batches=place.shard,
                     batch_size=total // world, rank=place.rank, world=world)
    task.model_record = kind.record(request, parts)  # saved with every checkpoint
    if world > 1 and kind.gradient_sync == "all_reduce":
        trainable = [p for p in parts.field.parameters() if p.requires_grad]
        task.sync_gradients = lambda: average_gradients(trainable)
    if world > 1 and getattr(getattr(parts, "renderer", None), "proposal", None) is not None:
        sync_proposal(task, parts.renderer.proposal)
    if world > 1 and kind.shares_grid and parts.renderer.grid is not None:
        share_grid_after_refresh(task, parts.renderer.grid, int(cfg["render"]["occupancy_update_every"]))
    clock, any_rank = (agreed_seconds, any_worker(device)) if world > 1 else (None, None)
    with watching() as stopped:
        trainer = Trainer(trainer_config(cfg), log=also(ctx.run.log_metrics) if ctx.run else None,
                          checkpoint_dir=None if place.checkpoints else request.checkpoint_dir,
                          checkpoints=place.checkpoints, device=device, show_progress=place.lead,
                          description=f"{request.stage} x{world}" if world > 1 else request.stage,
                          clock=clock, any_rank=any_rank, should_stop=stopped,
                          started_at=budget_start(ctx.run, request) if ctx.run else None)
        result = trainer.fit(task)
    if result.stopped_by == "stop":
        if world > 1:
            return None
        raise StageStopped(request.stage, result.steps)
    done = {"train/steps": result.steps, "train/seconds": result.seconds}
    if world > 1:  # every rank takes part in the check
        done.update({"train/workers": world, "train/replica_spread": replica_spread(parts.field)})
    if ctx.run:
        ctx.run.log_metrics(done, result.steps)
    return result


def share_grid_after_refresh(task, grid: torch.nn.Module, every: int) -> None:
    """Data-parallel workers take rank 0's occupancy grid after each refresh."""
    update = task.after_step

    def after_step(step: int) -> None:
        update(step)
        if step % every == 0:
            share_rank0_state(grid)

    task.after_step = after_step


_REPORT_SINKS: list[MetricsLogger] = []


@contextlib.contextmanager
def reporting_to(sink: MetricsLogger):
    """Send every metric that stages in this process log also to ``sink``
    (e.g. a Tune trial's ``tune.report``), however deep the method calls them."""
    _REPORT_SINKS.append(sink)
    try:
        yield
    finally:
        _REPORT_SINKS.remove(sink)


def report(metrics: dict, step: int) -> None:
    """Send metrics to the sinks of any active :func:`reporting_to` only."""
    for sink in list(_REPORT_SINKS):
        sink(metrics, step)


def also(log: MetricsLogger) -> MetricsLogger:
    """Log to MLflow and to the sinks of any active :func:`reporting_to`."""
    sinks = list(_REPORT_SINKS)
    if not sinks:
        return log

    def fan_out(metrics: dict, step: int) -> None:
        log(metrics, step)
        for sink in sinks:
            sink(metrics, step)

    return fan_out


def budget_start(run: Run, request: StageRequest) -> float | None:
    """Wall time of the stage's first start by this request, kept as a tag of its run: a
    restarted process without a checkpoint goes on with the time budget, not anew. A new
    driver (``resume=``) sends a new request, whose budget starts from its checkpoint.
    None on the first start: the budget then starts with the training loop itself, not
    with this (possibly slow) write to the tracking store."""
    tag = f"fieldkd.started.{request.stage}"
    token, _, when = run.get().data.tags.get(tag, "").partition(" ")
    if token == request.launch and when:
        return float(when)
    run.set_tags({tag: f"{request.launch} {time.time():.3f}"})
    return None


def fit_stage(request: StageRequest, place: Place | None = None) -> StageOutcome | None:
    """Train (resuming if a checkpoint exists) and evaluate one stage of any kind, in whatever process
    runs it: an actor, a Tune trial, or each Ray Train worker (``place``). Only the lead process logs,
    evaluates and returns the outcome. A stage that the driver asked to stop saves its checkpoint and
    raises :class:`StageStopped` (Ray Train workers return None, and the driver raises)."""
    place = place or Place()
    kind = stage_kind(request.task)
    cfg = request.cfg
    device = place.device or resolve_device(cfg["device"])
    torch.manual_seed(int(cfg["seed"]))  # a fresh model's initial weights follow the run's seed
    parts = kind.build(request, device)  # bad input fails before the run is touched
    run = Run(request.run_id, request.tracking_uri).continuing() if place.lead else None
    ctx = RunContext(cfg=cfg, run=run, device=device, output_dir=Path(request.output_dir))
    if run:  # what the stage trains, before it does: a failed or stopped stage still says so (its
        # stage name comes after training: a sweep's trial run keeps its own until then)
        run.set_tags({f"fieldkd.{k}": str(v) for k, v in kind.tags(request).items()})
    interval = cfg["tracking"].get("system_metrics_s")
    if run and request.system_metrics and interval:
        run.start_system_metrics(float(interval))
    try:
        result = train_stage(ctx, request, kind, parts, place) if kind.trains else kind.keep(request)
        if result is None or not place.lead:
            return None
        workers = {"workers": place.world} if place.world > 1 else {}
        run.set_tags(ctx.tags(backend=parts.backend, stage=request.stage, **kind.tags(request), **workers,
                              **placement()))
        trained = TrainedField(parts.field, parts.renderer, result, parts.backend, request.checkpoint_dir, device)
        metrics = {}
        if request.evaluate:
            started = time.perf_counter()
            with activity(request.stage, "evaluating", enabled=bool(cfg["trainer"].get("progress", True))):
                metrics = evaluate_stage(ctx, request, kind, parts, trained)
            # what scoring cost beside training (train/seconds), on the run only: not a score
            run.log_metrics({**metrics, "eval/seconds": time.perf_counter() - started}, result.steps)
            keep_checkpoint(ctx, run, request.checkpoint_dir / "last.pt")
        if request.report and metrics:
            report(metrics, result.steps)
    finally:
        if run:
            run.stop_system_metrics()
    return StageOutcome(request.stage, metrics, str(request.checkpoint_dir / "last.pt"), parts.backend,
                        result.steps, result.seconds)


def stage_tags(request: StageRequest) -> dict[str, str]:
    """Lineage of a stage that learns from (or scores) another field."""
    if request.teacher is None:
        return {}
    return {"task": request.task, "teacher": request.teacher.field["name"],
            "teacher_checkpoint": request.teacher.checkpoint}


def keep_checkpoint(ctx: RunContext, run: Run, final: Path) -> None:
    """Name the stage's final checkpoint on its run (and log a copy where ``output_dir`` will not last)."""
    if final.exists():
        run.set_tags({CHECKPOINT_TAG: str(final.resolve())})
        if keeps_checkpoint_artifact(ctx.cfg["tracking"]["log_checkpoint"], final):
            run.log_artifact(final, "checkpoints")


VOLATILE = ("/tmp", "/var/tmp", "/dev/shm")  # plus the system's temp folder


def keeps_checkpoint_artifact(setting, checkpoint: Path) -> bool:
    """Whether a stage's final checkpoint is also logged to MLflow (``tracking.log_checkpoint``).

    The checkpoint always stays in ``output_dir`` and the run names it (tag
    ``fieldkd.checkpoint``). ``auto`` logs a second copy only where ``output_dir``
    will not last: under a temporary folder, as a ``ray job``'s working directory is.
    """
    if isinstance(setting, bool) or str(setting).lower() in ("true", "false"):
        return str(setting).lower() == "true"
    if str(setting).lower() != "auto":
        raise InputError("tracking.log_checkpoint", f"must be auto, true or false, got {setting!r}")
    path = Path(checkpoint).resolve()
    volatile = {Path(p).resolve() for p in (*VOLATILE, tempfile.gettempdir())}
    return any(path.is_relative_to(folder) for folder in volatile)


def prefixed(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    return {f"{prefix}/{k}": v for k, v in metrics.items()} if prefix else dict(metrics)


def run_stages(ctx: RunContext, requests: list[StageRequest], distributed: bool = False) -> dict[str, StageOutcome]:
    """Run stages on Ray: concurrently on the actor pool, or one stage on Ray
    Train workers when ``distributed`` and ``compute.workers`` > 1."""
    from .compute.pool import Training, run_trainings
    from .compute.resources import training_resources

    compute = ctx.cfg["compute"]
    if distributed and int(compute["workers"]) > 1:
        from .compute.students import fit_distributed

        if len(requests) != 1:
            raise ValueError("a distributed stage trains one model")
        with finishing(ctx, requests):
            return {requests[0].stage: fit_distributed(requests[0], fit_stage)}
    num_cpus, num_gpus = training_resources(compute, len(requests))
    trainings = [Training(r.stage, fit_stage, {"request": r}, num_cpus, num_gpus) for r in requests]
    with finishing(ctx, requests):
        outcomes = run_trainings(trainings, max_restarts=int(compute["max_restarts"]))
    return {name: outcome.result for name, outcome in outcomes.items()}


def fit_sequence(requests: list[StageRequest]) -> list[StageOutcome]:
    """Stages one after another in this process: a stream whose stages start from
    (and learn from) the checkpoints of the ones before."""
    return [fit_stage(r) for r in requests]


def run_streams(ctx: RunContext, streams: dict[str, list[StageRequest]]) -> dict[str, list[StageOutcome]]:
    """Several streams at once on the actor pool, each a sequence of stages in one actor."""
    from .compute.pool import Training, run_trainings
    from .compute.resources import training_resources

    compute = ctx.cfg["compute"]
    num_cpus, num_gpus = training_resources(compute, len(streams))
    trainings = [Training(name, fit_sequence, {"requests": requests}, num_cpus, num_gpus)
                 for name, requests in streams.items()]
    with finishing(ctx, [r for requests in streams.values() for r in requests]):
        outcomes = run_trainings(trainings, max_restarts=int(compute["max_restarts"]))
    return {name: outcome.result for name, outcome in outcomes.items()}


@contextlib.contextmanager
def finishing(ctx: RunContext, requests: list[StageRequest]):
    """Close the stages' own child runs: FINISHED when all went well, KILLED when the
    driver was interrupted, else FAILED."""
    own = [Run(r.run_id, ctx.run.tracking_uri) for r in requests if r.run_id != ctx.run.run_id]
    try:
        yield
    except BaseException as exc:
        for run in own:
            run.finish("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    for run in own:
        run.finish()
