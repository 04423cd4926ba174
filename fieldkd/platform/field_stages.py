"""The stage kinds of per-scene fields (see :mod:`.stage_kinds`): a field and its renderer over one
scene's rays.

- ``photometric``: fit the split's images (or the views a request names);
- ``distill``: learn from a frozen teacher at the teacher's own sample points;
- ``incremental``: fit new views while the previous stage's field recalls the ones it saw;
- ``evaluate``: score a trained field (the request's ``teacher``) without training.
"""

from __future__ import annotations

import torch

from .field_evaluation import periodic_validation
from .models import field_record
from .stage_kinds import register_stage_kind
from .stages import (
    StageParts,
    StageRequest,
    load_scene_from_config,
    make_field,
    make_renderer,
    pick_backend,
    stage_tags,
    start_from,
    supervision_of,
)


class FieldStage:
    """What the field kinds share: a fresh field (or one a request starts from) and its renderer."""

    name = ""
    trains = True
    needs_teacher = True
    shares_grid = False  # data-parallel workers take rank 0's occupancy grid after each refresh
    ddp_options = {"forward_sync_buffers": False}  # the grid is shared from rank 0 after a refresh instead
    gradient_sync = "ddp"  # the task renders through ``forward``, the field wrapped in DDP
    evaluators = ("views", "mesh")

    def build(self, request: StageRequest, device: torch.device) -> StageParts:
        scene = load_scene_from_config(request.cfg["scene"])
        if self.needs_teacher and request.teacher is None:
            raise ValueError(f"a {request.task} stage needs a teacher")
        field, backend = make_field(request.cfg["field"], scene, device)
        renderer = make_renderer(request.cfg, scene, device)
        if request.init is not None:
            start_from(request.init, field, renderer)
        teacher = request.teacher.load(scene, request.cfg, device) if self.needs_teacher else None
        return StageParts(scene, field, renderer, backend, teacher)

    def shards(self, request: StageRequest) -> str | None:
        return None

    def batch_size(self, cfg: dict) -> int:
        return int(cfg["trainer"]["batch_rays"])

    def validation(self, request, parts, device):
        """The validation PSNR the trainer logs every ``trainer.eval_every`` steps (a few views)."""
        return periodic_validation(request.cfg, parts.scene, parts.renderer, parts.field, device)

    def record(self, request, parts) -> dict:
        """The field's kind, config, box and rendering settings: a teacher rebuilds from the checkpoint alone."""
        return field_record(request.cfg, parts.scene)

    def tags(self, request) -> dict[str, str]:
        return {"field": request.cfg["field"]["name"], **stage_tags(request)}


@register_stage_kind
class Photometric(FieldStage):
    name = "photometric"
    needs_teacher = False
    shares_grid = True

    def task(self, request, parts, device, *, evaluate=None, forward=None, batches=None, batch_size, rank=0, world=1):
        from .data.rays import ShardRays
        from .train.photometric import PhotometricTask

        rays = ShardRays(batches, batch_size, device) if batches is not None else request.training_split(parts.scene)
        return PhotometricTask(parts.field, parts.renderer, rays, batch_size, device, evaluate=evaluate,
                               forward=forward, supervision=supervision_of(request.cfg))

    def shards(self, request):
        from .data.rays import write_ray_shards

        scene = load_scene_from_config(request.cfg["scene"])
        return str(write_ray_shards(request.training_split(scene), request.checkpoint_dir / "rays",
                                    seed=request.cfg["seed"]))


@register_stage_kind
class Distill(FieldStage):
    name = "distill"

    def build(self, request, device):
        from .distill.samples import occupancy_from_teacher
        from .distill.teacher import inherit_colour_head

        parts = super().build(request, device)
        occupancy_from_teacher(parts.renderer, parts.teacher)  # the student marches the teacher's grid
        if request.cfg["distill"].get("inherit_colour_head") and request.init is None:
            inherit_colour_head(parts.field, parts.teacher)
        return parts

    def task(self, request, parts, device, *, evaluate=None, forward=None, batches=None, batch_size, rank=0, world=1):
        from .distill.stage import batch_source, distill_task, store_path

        cfg = request.cfg
        source = batch_source(cfg, parts.scene, parts.teacher, parts.renderer, store_path(request.checkpoint_dir),
                              device, batches=batches, batch_rays=batch_size, rank=rank)
        stage_cfg = {**cfg, "trainer": {**cfg["trainer"], "batch_rays": batch_size}}
        return distill_task(stage_cfg, parts.scene, parts.field, parts.renderer, parts.teacher, source, device,
                            evaluate=evaluate, forward=forward)

    def shards(self, request):
        """The teacher's answers as a store (``distill.source=store``), written once with the teacher."""
        from .distill.stage import ensure_store, store_path
        from .stages import resolve_device

        cfg = request.cfg
        if cfg["distill"]["source"] != "store":
            return None
        device = resolve_device(cfg["device"])
        parts = self.build(request, device)
        return str(ensure_store(cfg, parts.scene, parts.teacher, parts.renderer, store_path(request.checkpoint_dir),
                                device))


@register_stage_kind
class Incremental(FieldStage):
    name = "incremental"

    def task(self, request, parts, device, *, evaluate=None, forward=None, batches=None, batch_size, rank=0, world=1):
        from .distill.incremental import incremental_task

        return incremental_task(request, parts, device, batch_size, supervision_of(request.cfg), rank=rank,
                                evaluate=evaluate, forward=forward)


@register_stage_kind
class Evaluate(FieldStage):
    name = "evaluate"
    trains = False

    def build(self, request, device):
        if request.teacher is None:
            raise ValueError("an evaluate stage needs a teacher")
        scene = load_scene_from_config(request.cfg["scene"])
        trained = request.teacher.load(scene, request.cfg, device)
        return StageParts(scene, trained.field, trained.renderer, pick_backend(request.cfg["field"]))

    def keep(self, request):
        """No training: a copy of the scored field's checkpoint, so its run holds one like the others."""
        from pathlib import Path

        from .atomic import copy_file
        from .train.loop import TrainResult

        request.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        if Path(request.teacher.checkpoint).resolve() != (request.checkpoint_dir / "last.pt").resolve():
            copy_file(request.teacher.checkpoint, request.checkpoint_dir / "last.pt")
        return TrainResult(0, 0.0, "steps", {})
