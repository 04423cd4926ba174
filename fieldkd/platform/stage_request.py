"""What travels between the driver and the processes that run stages, as plain data: the run's
context, a stage's request, the place of a process among a stage's workers, and the outcome.

Kept apart from :mod:`.stages` so that the compute layer (actors, Ray Train workers) can carry
requests and outcomes without importing the stage code.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import yaml

from .errors import InputError
from .run_info import used_config
from .tracking import Run, flatten

if TYPE_CHECKING:
    from .distill.stage import TeacherRef
    from .render.renderer import Renderer
    from .scenes.scene import Scene, SceneSplit
    from .train.loop import TrainResult


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
    eval_views: list[int] | None = None  # render only these views of the evaluation split; None: all
    #                                      (up to eval.max_views)
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
    """A stage's trained model (a field and its renderer, or a network with ``renderer`` None)."""

    field: torch.nn.Module
    renderer: Renderer | None
    result: TrainResult
    backend: str
    checkpoint_dir: Path
    device: torch.device | None = None


@dataclass
class Place:
    """Which process of a stage this is: the only one (the default), or rank ``rank`` of ``world`` Ray
    Train workers, with its Ray Data shard and the checkpoints that Ray Train reports."""

    rank: int = 0
    world: int = 1
    device: torch.device | None = None
    shard: object = None
    checkpoints: object = None

    @property
    def lead(self) -> bool:
        """The process that logs, evaluates and returns the outcome."""
        return self.rank == 0


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("device", f"{name!r} requested but CUDA is not available")
    return torch.device(name)


def scene_label(scene_cfg: dict) -> str:
    return scene_cfg.get("path") or f"generated:{scene_cfg.get('generate')}"
