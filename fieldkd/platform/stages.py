"""Building blocks that methods compose into pipelines.

A method receives a :class:`RunContext` and calls these helpers: load the
scene, build a field, train it as a stage, evaluate and log it. Everything is
driven by the resolved config, so a method stays a short recipe.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from .atomic import copy_file
from .compute.interrupts import StageStopped, watching
from .compute.session import placement
from .distill.stage import TeacherRef
from .distill.teacher import Teacher
from .errors import InputError
from .evaluate.image import make_lpips
from .evaluate.mesh import extract_mesh, load_mesh, mesh_metrics
from .evaluate.views import evaluate_views
from .fields import build_field, pick_hash_backend
from .render.renderer import RenderConfig, Renderer
from .run_info import used_config
from .scenes import default_scene_dir, load_scene
from .scenes.limits import ReadLimits
from .scenes.scene import Scene, SceneSplit
from .stage_kinds import stage_kind
from .tracking import Run, flatten
from .tracking.run import CHECKPOINT_TAG
from .train.loop import MetricsLogger, Trainer, TrainerConfig, TrainResult
from .train.progress import activity
from .train.supervision import Supervision


@dataclass
class RunContext:
    """What a method needs: the resolved config, the top-level run, where to write."""

    cfg: dict
    run: Run
    device: torch.device
    output_dir: Path

    def stage_dir(self, stage: str) -> Path:
        return self.output_dir / stage

    def tags(self, **extra) -> dict[str, str]:
        return {"fieldkd.method": self.cfg["method"]["name"], "fieldkd.scene": scene_label(self.cfg["scene"]),
                **{f"fieldkd.{k}": str(v) for k, v in extra.items()}}

    def request(self, stage: str, run: Run | None = None, cfg: dict | None = None, **options) -> "StageRequest":
        """Describe a stage so that any process can run it (see :func:`fit_stage`);
        ``options`` are further :class:`StageRequest` fields (task, teacher, views, ...)."""
        own_run = run is not None and run.run_id != self.run.run_id
        return StageRequest(stage=stage, run_id=(run or self.run).run_id, tracking_uri=self.run.tracking_uri,
                            output_dir=str(self.output_dir), cfg=cfg or self.cfg, system_metrics=own_run, **options)

    def child(self, stage: str, cfg: dict) -> Run:
        """The stage's child run, with the stage's own resolved config as params and
        ``config.yaml``; a resumed pipeline finds the child it made before."""
        for run in self.run.children():
            if run.get().data.tags.get("fieldkd.stage") == stage:
                return Run.resume(run.run_id, run.tracking_uri)  # RUNNING again until its stage ends
        run = self.run.child(stage, tags=self.tags(stage=stage, field=cfg["field"]["name"]))
        used = used_config(cfg)
        run.log_params(flatten(used))
        run.log_text(yaml.safe_dump(used, sort_keys=False), "config.yaml")
        return run


def named_field(cfg: dict, name: str) -> dict:
    """The config of field ``name``: the run's ``field`` (with its command-line
    overrides) when that is the one named, else the preset of that name."""
    from ..conf import field_config

    return dict(cfg["field"]) if cfg["field"]["name"] == name else field_config(name)


def stage_config(cfg: dict, field: dict, trainer: dict | None = None) -> dict:
    """A stage's config: the pipeline's, with its own field and the trainer overrides that are set."""
    given = {k: v for k, v in (trainer or {}).items() if v is not None}
    return {**cfg, "field": dict(field), "trainer": {**cfg["trainer"], **given}}


@dataclass
class StageRequest:
    """Everything a stage needs, as plain data: it travels to Ray actors and Train workers.

    The stage logs into the MLflow run ``run_id`` and keeps its checkpoint in
    ``output_dir/stage`` (shared storage on a cluster), so a restarted process
    resumes it in the same run.
    """

    stage: str
    run_id: str
    tracking_uri: str
    output_dir: str
    cfg: dict
    split: str = "train"
    evaluate: bool = True
    system_metrics: bool = False  # sample this process's machine into the run (a child run of its own)
    task: str = "photometric"  # photometric: fit the split's images | distill: learn from ``teacher`` |
    #                            evaluate: only score the trained field ``teacher`` | incremental: fit
    #                            ``views`` while ``teacher`` recalls ``teacher_views`` (distill/incremental.py)
    teacher: TeacherRef | None = None  # or any reference with .load(scene, cfg, device), .field, .checkpoint
    views: list[int] | None = None  # the views of ``split`` to learn from; None: all
    init: str | None = None  # a Trainer checkpoint whose field (and occupancy grid) the stage starts from
    eval_groups: dict[str, list[int]] | None = None  # also score these views of the evaluation split,
    #                                                  as metrics "<name>/test/psnr", ...
    teacher_views: list[int] | None = None  # incremental: the views of ``split`` the teacher has seen, in
    #                                         trajectory order (its poses are interpolated between them)
    report: bool = False  # also send the final metrics to any active reporting_to sink (a Tune trial)
    launch: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex[:12])  # this driver's request, which a
    #                                         restarted actor or worker group receives again (see budget_start)

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.output_dir) / self.stage

    def training_split(self, scene: Scene) -> SceneSplit:
        split = scene.split(self.split)
        return split if self.views is None else split.subset(self.views)


@dataclass
class StageOutcome:
    stage: str
    metrics: dict[str, float]
    checkpoint: str  # a storage path, never the weights themselves
    backend: str
    steps: int
    seconds: float


@dataclass
class TrainedField:
    field: torch.nn.Module
    renderer: Renderer
    result: TrainResult
    backend: str
    checkpoint_dir: Path


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("device", f"{name!r} requested but CUDA is not available")
    return torch.device(name)


def scene_label(scene_cfg: dict) -> str:
    return scene_cfg.get("path") or f"generated:{scene_cfg.get('generate')}"


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


def monocular_depth(scene: Scene) -> bool:
    """True when the scene's depth is scale-free (MonoSDF's monocular cues): metrics align it first."""
    return scene.extras.get("depth_kind") == "monocular"


def periodic_validation(cfg: dict, scene: Scene, renderer: Renderer, field: torch.nn.Module,
                        device: torch.device):
    """The validation PSNR the trainer logs every ``trainer.eval_every`` steps (a few views only)."""
    val = scene.split("val")
    views = range(min(int(cfg["eval"]["periodic_views"]), len(val)))
    align = monocular_depth(scene)
    return lambda step: evaluate_views(renderer, field, val, views, device, prefix="val", depth_align=align).metrics


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


def pick_backend(field_cfg: dict) -> str:
    return pick_hash_backend(field_cfg["backend"]) if "backend" in field_cfg else "torch"


def make_task(request: StageRequest, parts, device: torch.device, *, evaluate=None, forward=None,
              batches=None, batch_rays: int | None = None, rank: int = 0):
    """The training task of a stage. ``batches``: a Ray Data shard (on Ray Train
    workers) to read instead of the split's pixels or the teacher's answers;
    ``batch_rays``: this process's share of the batch; ``rank`` varies the seed
    of batches drawn on the fly, so data-parallel workers see different rays."""
    batch_rays = int(batch_rays or request.cfg["trainer"]["batch_rays"])
    return stage_kind(request.task).task(request, parts, device, evaluate=evaluate, forward=forward, batches=batches,
                                         batch_size=batch_rays, rank=rank)


def supervision_of(cfg: dict) -> Supervision:
    try:
        return Supervision.from_dict(cfg.get("supervision"))
    except ValueError as exc:
        raise InputError("supervision", str(exc)) from exc


def train_stage(ctx: RunContext, request: StageRequest, parts: StageParts, run: Run) -> TrainedField:
    """Train a stage's field (resuming from the stage's checkpoint); an evaluate stage
    keeps a copy of the field it scores, so its run holds a checkpoint like the others."""
    checkpoint_dir = request.checkpoint_dir
    if not stage_kind(request.task).trains:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        if Path(request.teacher.checkpoint).resolve() != (checkpoint_dir / "last.pt").resolve():
            copy_file(request.teacher.checkpoint, checkpoint_dir / "last.pt")
        return TrainedField(parts.field, parts.renderer, TrainResult(0, 0.0, "steps", {}), parts.backend,
                            checkpoint_dir)
    cfg = ctx.cfg
    validate = periodic_validation(cfg, parts.scene, parts.renderer, parts.field, ctx.device)
    task = make_task(request, parts, ctx.device, evaluate=validate)
    with watching() as stopped:
        trainer = Trainer(trainer_config(cfg), log=also(run.log_metrics), checkpoint_dir=checkpoint_dir,
                          device=ctx.device, description=request.stage, should_stop=stopped,
                          started_at=budget_start(run, request))
        result = trainer.fit(task)
    if result.stopped_by == "stop":
        raise StageStopped(request.stage, result.steps)
    run.log_metrics({"train/steps": result.steps, "train/seconds": result.seconds}, result.steps)
    return TrainedField(parts.field, parts.renderer, result, parts.backend, checkpoint_dir)


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


def fit_stage(request: StageRequest) -> StageOutcome:
    """Train (resuming if a checkpoint exists) and evaluate one stage, in whatever process runs it.
    A stage that the driver asked to stop saves its checkpoint and raises :class:`StageStopped`.
    Kinds with a body of their own (``fit``) run it instead."""
    kind = stage_kind(request.task)
    if hasattr(kind, "fit"):
        return kind.fit(request)
    cfg = request.cfg
    run = Run(request.run_id, request.tracking_uri)
    ctx = RunContext(cfg=cfg, run=run, device=resolve_device(cfg["device"]), output_dir=Path(request.output_dir))
    parts = build_parts(request, ctx.device)  # bad input fails before the run is touched
    run.continuing()
    interval = cfg["tracking"].get("system_metrics_s")
    if request.system_metrics and interval:
        run.start_system_metrics(float(interval))
    try:
        trained = train_stage(ctx, request, parts, run)
        run.set_tags(ctx.tags(field=cfg["field"]["name"], backend=trained.backend, stage=request.stage,
                              **stage_tags(request), **placement()))
        metrics = {}
        if request.evaluate:
            with activity(request.stage, "evaluating", enabled=bool(cfg["trainer"].get("progress", True))):
                metrics = evaluate_field(ctx, trained, parts.scene, run, request.eval_groups)
        if request.report and metrics:
            report(metrics, trained.result.steps)
    finally:
        run.stop_system_metrics()
    return StageOutcome(request.stage, metrics, str(trained.checkpoint_dir / "last.pt"), trained.backend,
                        trained.result.steps, trained.result.seconds)


def stage_tags(request: StageRequest) -> dict[str, str]:
    """Lineage of a stage that learns from (or scores) another field."""
    if request.teacher is None:
        return {}
    return {"task": request.task, "teacher": request.teacher.field["name"],
            "teacher_checkpoint": request.teacher.checkpoint}


def evaluate_field(ctx: RunContext, trained: TrainedField, scene: Scene, run: Run,
                   groups: dict[str, list[int]] | None = None) -> dict[str, float]:
    """Score a trained field on the evaluation split and log renders, mesh and checkpoint;
    ``groups`` also averages the scores over named subsets of the split's views."""
    ecfg = ctx.cfg["eval"]
    split = scene.split(ecfg["split"])
    views = range(min(len(split), ecfg["max_views"] or len(split)))
    lpips, reason = make_lpips(device=str(ctx.device)) if ecfg["lpips"] else (None, "disabled by eval.lpips")
    if lpips is None:
        run.set_tags({"fieldkd.lpips": f"skipped: {reason}"})
    scores = evaluate_views(trained.renderer, trained.field, split, views, ctx.device, lpips=lpips,
                            keep_images=int(ecfg["log_images"]), depth_align=monocular_depth(scene))
    metrics = dict(scores.metrics)
    for name, group in (groups or {}).items():
        metrics.update(scores.over(group, f"{name}/{ecfg['split']}"))
    step = trained.result.steps
    for view, panel in zip(scores.views, scores.images):
        run.log_image(panel, f"{ecfg['split']}/view_{view:03d}", step)
    log_per_view(run, scores, ecfg["split"])
    if ecfg["mesh"]:
        metrics.update(evaluate_mesh(trained, scene, run, ecfg))
    run.log_metrics(metrics, step)
    final = trained.checkpoint_dir / "last.pt"
    if final.exists():
        run.set_tags({CHECKPOINT_TAG: str(final.resolve())})
        if keeps_checkpoint_artifact(ctx.cfg["tracking"]["log_checkpoint"], final):
            run.log_artifact(final, "checkpoints")
    return metrics


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


def log_per_view(run: Run, scores, split: str) -> None:
    """The scores of each view: an MLflow table (``renders/<split>_per_view.json``) and a TSV."""
    columns = {"view": scores.views, **scores.per_view}
    run.log_table(columns, f"renders/{split}_per_view.json")
    rows = ["\t".join(columns)] + ["\t".join(str(values[i]) if name == "view" else f"{values[i]:.4f}"
                                              for name, values in columns.items()) for i in range(len(scores.views))]
    run.log_text("\n".join(rows) + "\n", f"renders/{split}_per_view.tsv")


def evaluate_mesh(trained: TrainedField, scene: Scene, run: Run, ecfg: dict) -> dict[str, float]:
    """Marching cubes on the density, then Chamfer / F-score against the scene's mesh."""
    from .scenes.ply import write_ply

    field = trained.field
    # A field with a surface of its own (an SDF's zero level) says where it is; else a density level.
    surface, level = field.surface() if hasattr(field, "surface") else (field.density, float(ecfg["mesh_level"]))
    try:
        verts, faces = extract_mesh(surface, scene.aabb, resolution=int(ecfg["mesh_resolution"]),
                                    level=level, device=next(field.parameters()).device)
    except ValueError as exc:
        run.set_tags({"fieldkd.mesh": f"skipped: {exc}"})
        return {}
    world = scene.extras.get("world_from_scene")
    if world is not None:  # the ground truth and the F-score threshold are in world units
        world = np.asarray(world, dtype=np.float64)
        verts = (verts @ world[:3, :3].T + world[:3, 3]).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mesh.ply"
        write_ply(path, verts, faces)
        run.log_artifact(path, "mesh")
    if scene.mesh_path is None:
        return {}
    gt_verts, gt_faces = load_mesh(scene.mesh_path)
    found = mesh_metrics(verts, faces, gt_verts, gt_faces, threshold=float(ecfg["mesh_threshold"]))
    return {f"mesh/{k}": v for k, v in found.items() if k in ("chamfer", "fscore", "accuracy", "completeness")}


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
            return {requests[0].stage: fit_distributed(requests[0])}
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
