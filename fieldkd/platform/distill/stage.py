"""A distillation stage from config: the teacher, where it is asked, the batches, the task.

Everything is read from the stage's resolved config (its ``distill`` section
and its ``trainer``), and the teacher travels as plain data, a
:class:`TeacherRef` (a checkpoint *path* in storage and the teacher's field
config), so the same stage runs in an actor, in a Tune trial or on Ray Train
workers.

Batches come on the fly (``distill.source=fly``: the teacher answers every
step) or from a teacher-sample store (``store``: ``distill.store_batches``
batches written once as Parquet next to the stage's checkpoint, then
replayed). Ray Train workers read the same store through Ray Data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import InputError
from ..render.renderer import Renderer
from ..scenes.cameras import surrounds
from ..scenes.scene import Scene
from ..train.photometric import PixelSampler
from .filters import FrustumFilter
from .inquirers import CameraBoxInquirer, SphereInquirer, TrainingRayInquirer
from .samples import OnTheFlySource, SampleLayout
from .schedule import ScheduleConfig
from .store import DatasetShardSource, StoreSource, write_store
from .task import DistillationTask, DistillConfig
from .teacher import Teacher, load_teacher

INQUIRERS = ("auto", "sphere", "hemisphere", "camera_box", "training_rays")
STORE = "teacher_store"


@dataclass(frozen=True)
class TeacherRef:
    """Where a trained teacher lives: its checkpoint (shared storage) and field config."""

    checkpoint: str
    field: dict

    def load(self, scene: Scene, cfg: dict, device) -> Teacher:
        if not Path(self.checkpoint).exists():
            raise InputError(self.checkpoint, "teacher checkpoint not found")
        return load_teacher(self.checkpoint, self.field, scene.aabb, near=scene.near, far=scene.far,
                            background=scene.background, render_cfg=cfg["render"], device=device)


def make_inquirer(kind: str, scene: Scene, seed: int):
    """``distill.inquirer``: random poses around an object or in the camera box, or training rays."""
    if kind not in INQUIRERS:
        raise InputError("distill.inquirer", f"unknown inquirer {kind!r}; one of {', '.join(INQUIRERS)}")
    train = scene.split("train")
    if kind == "auto":
        kind = "sphere" if surrounds(train.cameras, scene.aabb.mean(0)) else "camera_box"
    if kind in ("sphere", "hemisphere"):
        return SphereInquirer(train.cameras, scene.aabb, elevation="cameras" if kind == "sphere" else "hemisphere",
                              seed=seed)
    if kind == "camera_box":
        return CameraBoxInquirer(train.cameras, seed=seed)
    return TrainingRayInquirer(train, with_colours=True, seed=seed)


def schedule_of(cfg: dict) -> ScheduleConfig:
    distill = cfg["distill"]
    if "stages" not in distill:
        raise InputError("distill.stages", "this method sets no distillation schedule")
    try:
        return ScheduleConfig.from_dict({"decay": {}, **distill})
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError("distill.stages", f"bad distillation schedule: {exc}") from exc


def distill_config(cfg: dict) -> DistillConfig:
    distill = cfg["distill"]
    return DistillConfig.from_dict({**distill, "batch_rays": int(cfg["trainer"]["batch_rays"]),
                                    "total_steps": int(cfg["trainer"]["steps"])})


def fly_source(cfg: dict, scene: Scene, teacher: Teacher, renderer: Renderer, seed: int, device) -> OnTheFlySource:
    inquirer = make_inquirer(cfg["distill"]["inquirer"], scene, seed)
    return OnTheFlySource(inquirer, teacher, SampleLayout.from_renderer(renderer), seed=seed, device=device)


def store_path(checkpoint_dir: Path) -> Path:
    return Path(checkpoint_dir) / STORE


def ensure_store(cfg: dict, scene: Scene, teacher: Teacher, renderer: Renderer, directory: Path,
                 device="cpu") -> Path:
    """Write the stage's teacher-sample store unless an identical one is complete."""
    source = fly_source(cfg, scene, teacher, renderer, int(cfg["seed"]), device)
    return write_store(directory, source, int(cfg["distill"]["store_batches"]), int(cfg["trainer"]["batch_rays"]))


def batch_source(cfg: dict, scene: Scene, teacher: Teacher, renderer: Renderer, store_dir: Path, device, *,
                 batches=None, batch_rays: int, rank: int = 0):
    """Where a stage's batches come from: a Ray Data shard of the store (Ray Train
    workers), the store read in order, or the teacher asked on the fly (seeded by rank)."""
    layout = SampleLayout.from_renderer(renderer)
    if batches is not None:
        return DatasetShardSource(batches, layout.samples_per_ray, batch_rays, device)
    if cfg["distill"]["source"] == "store":
        return StoreSource(ensure_store(cfg, scene, teacher, renderer, store_dir, device), layout, device)
    return fly_source(cfg, scene, teacher, renderer, int(cfg["seed"]) + rank, device)


def distill_task(cfg: dict, scene: Scene, student, renderer: Renderer, teacher: Teacher, source, device, *,
                 evaluate=None, forward=None) -> DistillationTask:
    """The distillation task of a stage's config; ``source`` gives its batches."""
    filters = [FrustumFilter(scene.split("train").cameras)] if cfg["distill"].get("frustum") else []
    config = distill_config(cfg)
    real = None
    if config.real_weight > 0:
        generator = torch.Generator().manual_seed(int(cfg["seed"]) + 1)
        real = PixelSampler(scene.split("train"), torch.device(device), generator=generator)
    return DistillationTask(student, renderer, teacher, source, schedule_of(cfg), config, device,
                            filters=filters, real=real, evaluate=evaluate, forward=forward)
