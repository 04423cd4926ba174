"""Distillation as a training task (the Task protocol of ``train/loop.py``).

Each step takes a :class:`~.samples.DistillBatch` from a source (on the fly
from an inquirer and the frozen teacher, or from a teacher-sample store: the
two give identical batches), evaluates the student at exactly the batch's
live sample points, composites it on the same intervals, and adds the loss
terms the stage schedule switches on. Terms are registered by name in
:mod:`.terms` and read the step's predictions and targets (``PREDICTIONS``,
``TARGETS`` below); the built-in ones:

- ``feature``, ``density`` (clipped teacher raw density), ``colour``, ``alpha``
  on the live samples that every filter keeps;
- ``rgb``, ``depth``, ``interlevel`` on the rays that every filter keeps
  (depth only where the teacher's opacity exceeds ``depth_min_opacity``);
- ``gt_rgb`` against ground-truth colours when the batch has them;
- optionally an MSE on real-image batches (``real``: any ray source with
  ``sample(n) -> (rays, colours)``), weighted ``real_weight``;
- the student's own regularisers.

A student rendered with proposal networks (``render.sampler=proposal``) has them
sample each batch's rays too: the ``interlevel`` term then supervises their
histograms with the teacher's weights (DaC); in steps without that term they
learn the student's own composited weights, as in photometric training
(``distill/proposal``).

Logged: ``distill/<term>`` for every term in use, ``distill/stage`` (1-based),
``distill/psnr_to_teacher`` (also as ``train/psnr``: the student's batch render
against the teacher's), ``train/psnr_gt`` and ``train/psnr_real`` where there
is ground truth, and each filter's ``distill/filter/<name>/<stat>``.

The student's renderer provides the background and, for evaluation, the
occupancy grid; give it the teacher's first with
:func:`~.samples.occupancy_from_teacher` (PVD's student marches the teacher's
grid). With ``update_occupancy`` the grid is refreshed from the student
during training; batches are then no longer independent of the student, so
keep it off when comparing with a store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch

from ..evaluate.image import mse_to_psnr
from ..fields.radiance import RadianceField
from ..render.composite import composite
from ..render.renderer import Renderer
from .filters import combine
from .losses import DENSITY_CLIP
from .samples import DistillBatch, empty_output
from .schedule import ScheduleConfig, stage_at, weights_at
from .teacher import Teacher
from .terms import TermContext, check_reads, get_term

# The keys of the student's predictions and of the targets that training_step gives each term.
PREDICTIONS = ("feature", "raw_density", "density", "rgb", "render_rgb", "render_depth", "render_weights",
               "proposal_levels")
TARGETS = ("feature", "raw_density", "density", "rgb", "render_rgb", "render_depth", "render_opacity", "gt_rgb",
           "t_starts", "t_ends", "live", "keep", "ray_keep")


class BatchSource(Protocol):
    def next(self, n: int) -> DistillBatch: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


@dataclass
class DistillConfig:
    batch_rays: int = 256
    total_steps: int = 3000  # stage boundaries are fractions of this (or of ``progress``)
    loss: str = "norm_l2"  # the norm of every difference (PVD's normL2); see losses.KINDS
    kinds: dict[str, str] = field(default_factory=dict)  # per-term override, e.g. {"rgb": "mse"}
    density_clip: tuple[float, float] | None = DENSITY_CLIP
    density_saturate: bool = False
    depth_min_opacity: float = 0.5
    real_batch_rays: int = 0  # 0: batch_rays
    real_weight: float = 1.0
    regularize: bool = True
    update_occupancy: bool = False

    @classmethod
    def from_dict(cls, values: dict) -> "DistillConfig":
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        if known.get("density_clip") is not None:
            known["density_clip"] = tuple(float(v) for v in known["density_clip"])
        return cls(**known)


class DistillationTask:
    def __init__(self, student: RadianceField, renderer: Renderer, teacher: Teacher, source: BatchSource,
                 schedule: ScheduleConfig, config: DistillConfig, device: torch.device, *, filters=(),
                 real=None, evaluate: Callable[[int], dict] | None = None, forward: torch.nn.Module | None = None,
                 progress: Callable[[int], float] | None = None):
        """``forward`` is the module the student is called through (e.g. wrapped in
        DDP); ``progress(step)`` in [0, 1] replaces ``step / total_steps`` for the
        stage schedule (e.g. the wall-time fraction of a timed run)."""
        self.student = student
        self.forward = forward or student
        self.renderer = renderer
        self.teacher = teacher
        self.source = source
        self.schedule = schedule
        self.cfg = config
        self.device = torch.device(device)
        self.filters = list(filters)
        self.real = real
        self._evaluate = evaluate
        self.progress = progress
        self._fraction: float | None = None  # the trainer's fraction of the binding budget
        self.skip_feature_stage = not (student.has_feature and teacher.has_feature)
        # A term this task cannot feed (e.g. one for a multi-view stereo student) fails here, not mid-run.
        check_reads({t for s in schedule.stages for t in s.terms}, PREDICTIONS, TARGETS)

    def param_groups(self, lr: float) -> list[dict]:
        return self.student.param_groups(lr) + self.renderer.param_groups(lr)

    def on_progress(self, fraction: float) -> None:
        """Called by the trainer before each step: how far the run is through its step or time budget."""
        self._fraction = fraction

    def _progress(self, step: int) -> float | None:
        return self.progress(step) if self.progress else self._fraction

    def weights(self, step: int) -> dict[str, float]:
        return weights_at(step, self.cfg.total_steps, self.schedule, self.skip_feature_stage, self._progress(step))

    def _kind(self, term: str) -> str:
        return self.cfg.kinds.get(term, self.cfg.loss)

    def training_step(self, step: int):
        cfg = self.cfg
        batch = self.source.next(cfg.batch_rays).to(self.device)
        weights = self.weights(step)
        ray_keep, keep, metrics = combine(batch, self.filters)
        live, t = batch.live, batch.teacher
        n_live = int(live.sum())
        if n_live:
            out = self.forward(batch.positions[live], batch.directions)
            # A zero connected to every output, so that a step whose terms are all off or
            # empty still has a gradient (of zeros), and DDP sees every parameter used
            # even in stage 1, where only the feature counts.
            anchor = (out.raw_density.sum() + out.rgb.sum()
                      + (out.feature.sum() if out.feature is not None else 0.0)) * 0.0
        else:  # nothing to ask the student (not every encoding accepts an empty batch)
            out = empty_output(self.student, self.device)
            anchor = sum(p.sum() for p in self.student.parameters()) * 0.0

        densities = batch.t_starts.new_zeros(batch.t_starts.shape).masked_scatter(live, out.density.float())
        colours = batch.t_starts.new_zeros(*live.shape, 3).masked_scatter(
            live[..., None].expand(*live.shape, 3), out.rgb.float())
        render = composite(densities, batch.t_starts, batch.t_ends, colours, self.renderer.background)
        render["depth"] = render["depth"] * batch.rays.z_scale
        proposal = self.renderer.proposal
        levels = (proposal.sample(batch.rays.origins, batch.rays.directions, batch.t_near, batch.t_far,
                                  jitter=True).levels if proposal is not None else None)

        # What the registered terms read (terms.py); a term is computed when its weight is not 0.
        pred = {"feature": out.feature, "raw_density": out.raw_density, "density": out.density.float(),
                "rgb": out.rgb, "render_rgb": render["rgb"], "render_depth": render["depth"],
                "render_weights": render["weights"], "proposal_levels": levels}
        target = {"feature": t.feature, "raw_density": t.raw_density, "density": t.density, "rgb": t.rgb,
                  "render_rgb": batch.teacher_rgb, "render_depth": batch.teacher_depth,
                  "render_opacity": batch.teacher_opacity, "gt_rgb": batch.colours, "t_starts": batch.t_starts,
                  "t_ends": batch.t_ends, "live": live, "keep": keep, "ray_keep": ray_keep}
        terms: dict[str, torch.Tensor] = {}
        for name, weight in weights.items():
            if weight:
                value = get_term(name)(pred, target, TermContext(self._kind(name), cfg))
                if value is not None:
                    terms[name] = value

        if levels is not None and "interlevel" not in terms:
            edges = torch.cat([batch.t_starts, batch.t_ends[:, -1:]], dim=-1)
            terms["proposal"] = proposal.loss(levels, edges, render["weights"])
            weights = {**weights, "proposal": self.renderer.cfg.proposal_loss_weight}
        loss = anchor
        for term, value in terms.items():
            loss = loss + weights[term] * value
        if cfg.regularize:
            loss = loss + self.student.regularization()
        n_samples = n_live

        with torch.no_grad():
            to_teacher = torch.mean((render["rgb"] - batch.teacher_rgb) ** 2).item()
        stage, _ = stage_at(step, cfg.total_steps, self.schedule, self.skip_feature_stage, self._progress(step))
        metrics.update({f"distill/{k}": float(v.detach()) for k, v in terms.items()})
        metrics.update({"distill/stage": float(stage + 1), "distill/psnr_to_teacher": mse_to_psnr(to_teacher),
                        "train/psnr": mse_to_psnr(to_teacher)})
        if batch.colours is not None:
            with torch.no_grad():
                metrics["train/psnr_gt"] = mse_to_psnr(torch.mean((render["rgb"] - batch.colours) ** 2).item())

        if self.real is not None and cfg.real_weight > 0:
            rays, target = self.real.sample(cfg.real_batch_rays or cfg.batch_rays)
            real = self.renderer.render_rays(self.forward, rays, train=True)
            mse = torch.mean((real["rgb"].float() - target) ** 2)
            loss = loss + cfg.real_weight * mse + real.get("proposal_loss", 0.0)
            metrics["train/psnr_real"] = mse_to_psnr(mse.item())
            n_samples += real["n_samples"]
        return loss, metrics, n_samples

    def after_step(self, step: int) -> None:
        if self.cfg.update_occupancy:
            self.renderer.update_occupancy(self.student, step)

    def evaluate(self, step: int) -> dict:
        return self._evaluate(step) if self._evaluate else {}

    def state_dict(self) -> dict:
        state = {"field": self.student.state_dict(), "renderer": self.renderer.state_dict(),
                 "source": self.source.state_dict()}
        generator = getattr(getattr(self.real, "generator", None), "get_state", None)
        if generator is not None:
            state["real_generator"] = generator()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.student.load_state_dict(state["field"])
        self.renderer.load_state_dict(state["renderer"])
        self.source.load_state_dict(state["source"])
        if "real_generator" in state and getattr(self.real, "generator", None) is not None:
            self.real.generator.set_state(state["real_generator"])
