"""Learning from a stream of images without forgetting: a stage of an incremental run.

The stage starts from the previous stage's field, which is also frozen as the
teacher. Real batches (random pixels of the stage's own views) alternate
with teacher batches: a pose drawn along the trajectory of the views the
teacher has seen (:class:`~.inquirers.TrajectoryInquirer`), kept only if the
teacher is sure of it (:class:`~.filters.UncertaintyFilter`, redrawn up to a
cap), and rendered by the teacher; its colour, depth and normals replace the
ground truth. Teacher batches weigh ``kd_weight(r)``, where r is the
fraction of the whole stream done (``distill.stream_span`` places the stage
in it), so that teaching grows as more of the past needs keeping.

Config (the stage's ``distill`` section): ``kd_weight``, ``kd_ramp``
(sin2 | constant), ``stream_span``, ``uncertainty_threshold`` (null: no
filter), ``uncertainty_level`` (pose | ray), ``uncertainty_tries``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..scenes.cameras import Rays
from ..train.photometric import PhotometricTask
from ..train.supervision import Supervision, Targets
from .filters import UncertaintyFilter
from .inquirers import TrajectoryInquirer
from .teacher import Teacher

RAMPS = ("sin2", "constant")


def kd_weight(r: float, weight: float = 1.0, ramp: str = "sin2") -> float:
    """The weight of teacher batches when a fraction r of the stream is done: weight * sin^2(pi r / 2)."""
    if ramp not in RAMPS:
        raise ValueError(f"kd ramp must be one of {RAMPS}, got {ramp!r}")
    r = min(max(float(r), 0.0), 1.0)
    return float(weight) * (math.sin(0.5 * math.pi * r) ** 2 if ramp == "sin2" else 1.0)


@dataclass
class StreamConfig:
    kd_weight: float = 1.0
    kd_ramp: str = "sin2"
    stream_span: tuple[float, float] = (0.0, 1.0)
    uncertainty_threshold: float | None = None
    uncertainty_level: str = "pose"
    uncertainty_tries: int = 8

    @classmethod
    def from_dict(cls, distill: dict) -> "StreamConfig":
        span = tuple(float(v) for v in distill.get("stream_span") or (0.0, 1.0))
        if len(span) != 2 or not 0.0 <= span[0] <= span[1] <= 1.0:
            raise ValueError(f"distill.stream_span must be [start, end] with 0 <= start <= end <= 1, got {span}")
        threshold = distill.get("uncertainty_threshold")
        found = cls(float(distill.get("kd_weight", 1.0)), str(distill.get("kd_ramp", "sin2")), span,
                    None if threshold is None else float(threshold), str(distill.get("uncertainty_level", "pose")),
                    int(distill.get("uncertainty_tries", 8)))
        kd_weight(0.0, found.kd_weight, found.kd_ramp)  # validates the ramp
        if found.uncertainty_tries < 1:
            raise ValueError("distill.uncertainty_tries must be >= 1")
        return found

    def stream_fraction(self, stage_fraction: float) -> float:
        start, end = self.stream_span
        return start + min(max(stage_fraction, 0.0), 1.0) * (end - start)


class IncrementalTask(PhotometricTask):
    """Real batches of this stage's views, alternating 1:1 with filtered teacher batches."""

    def __init__(self, field, renderer, train, batch_rays: int, device, teacher: Teacher,
                 inquirer: TrajectoryInquirer, stream: StreamConfig, supervision: Supervision | None = None,
                 evaluate=None, forward=None):
        super().__init__(field, renderer, train, batch_rays, device, evaluate=evaluate, forward=forward,
                         supervision=supervision)
        self.teacher, self.inquirer, self.stream = teacher, inquirer, stream
        self.filter = (UncertaintyFilter(stream.uncertainty_threshold, stream.uncertainty_level)
                       if stream.uncertainty_threshold is not None else None)
        self.fraction = 0.0
        self.counts = {"draws": 0, "accepted": 0, "skipped": 0}
        self.last: dict[str, float] = {}  # the latest metrics of both kinds of batch, logged together

    def on_progress(self, fraction: float) -> None:
        self.fraction = float(fraction)

    def teacher_batch(self) -> tuple[Rays | None, Targets | None, dict[str, float]]:
        """Draw poses until the filter accepts one (at most ``uncertainty_tries``): its rays and
        the teacher's renders as targets; (None, None, stats) when every draw was rejected."""
        tries = self.stream.uncertainty_tries if self.filter is not None else 1
        stats: dict[str, float] = {}
        for _ in range(tries):
            rays = self.inquirer.sample(self.batch_rays).rays
            rendered = self.teacher.render(rays)
            self.counts["draws"] += 1
            keep = torch.ones(len(rays), dtype=torch.bool, device=rendered["rgb"].device)
            if self.filter is not None:
                result = self.filter(rendered)
                keep = result.ray_keep
                stats = {f"distill/filter/uncertainty/{k}": v for k, v in result.stats.items()}
            if bool(keep.any()):
                self.counts["accepted"] += 1
                return rays, self.targets(rendered, keep), stats
        self.counts["skipped"] += 1
        return None, None, stats

    def targets(self, rendered: dict, keep: torch.Tensor) -> Targets:
        solid = rendered["opacity"] >= self.supervision.min_opacity
        depth = torch.where(solid, rendered["depth"], torch.zeros_like(rendered["depth"]))
        normal = rendered.get("normal")
        if normal is not None:
            unit = normal / normal.norm(dim=-1, keepdim=True).clamp(min=1e-6)
            normal = torch.where(solid[:, None], unit, torch.zeros_like(unit))
        return Targets(rendered["rgb"], depth, normal, keep)

    def acceptance(self) -> dict[str, float]:
        draws = max(self.counts["draws"], 1)
        return {"distill/filter/uncertainty/acceptance": self.counts["accepted"] / draws,
                "distill/skipped_batches": float(self.counts["skipped"])}

    def training_step(self, step: int):
        weight = kd_weight(self.stream.stream_fraction(self.fraction), self.stream.kd_weight, self.stream.kd_ramp)
        rays = None
        if step % 2 == 1 and weight > 0:
            rays, targets, stats = self.teacher_batch()
            self.last.update({**stats, **self.acceptance(), "distill/kd_weight": weight})
        if rays is None:  # a real batch (also in place of a teacher batch that found no sure pose)
            loss, metrics, n_samples = self.fit(*self.real_batch())
        else:
            # The teacher's depth is metric in the scene's own units: compared as it is.
            loss, metrics, n_samples = self.fit(rays, targets, depth_mode="plain")
            loss = weight * loss
            metrics = {k.replace("train/", "distill/"): v for k, v in metrics.items()}
        self.last.update(metrics)
        return loss + self.field.regularization(), dict(self.last), n_samples

    def state_dict(self) -> dict:
        return {**super().state_dict(), "inquirer": self.inquirer.state_dict(), "counts": dict(self.counts)}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if "inquirer" in state:
            self.inquirer.load_state_dict(state["inquirer"])
            self.counts.update(state["counts"])


def incremental_task(request, parts, device, batch_rays: int, supervision: Supervision, *, rank: int = 0,
                     evaluate=None, forward=None) -> IncrementalTask:
    """The task of an ``incremental`` stage (a :class:`~fieldkd.platform.stages.StageRequest`)."""
    from ..errors import InputError

    cfg = request.cfg
    if parts.teacher is None or not request.teacher_views:
        raise InputError("teacher_views", "an incremental stage needs a teacher and the views it has seen")
    try:
        stream = StreamConfig.from_dict(cfg["distill"])
    except ValueError as exc:
        raise InputError("distill", str(exc)) from exc
    past = parts.scene.split(request.split).cameras[torch.as_tensor(request.teacher_views)]
    inquirer = TrajectoryInquirer(past, rays_per_pose=batch_rays, seed=int(cfg["seed"]) + 7919 * rank, device=device)
    return IncrementalTask(parts.field, parts.renderer, request.training_split(parts.scene), batch_rays, device,
                           parts.teacher, inquirer, stream, supervision, evaluate=evaluate, forward=forward)
