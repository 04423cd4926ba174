"""Distillation loss terms, an open set registered by name.

A term is a function ``fn(pred, target, ctx) -> scalar tensor | None`` of two
dicts, the student's predictions and the targets (the teacher's answers or
labels, and the masks of what to learn from), registered with the keys it
reads from each. ``ctx.kind`` is the norm of its differences (``distill.loss``
or ``distill.kinds[name]``) and ``ctx.config`` the task's config, for the
term's own knobs. A term returns ``None`` when its input is absent from this
batch (ground truth on teacher rays): it is then left out of the step.

Its weight and decay come from the schedule (``distill.weights``,
``distill.decay``, the stages' term lists: :mod:`.schedule`), and a task logs
each term it computed as ``distill/<name>``. Adding a term is one function::

    @register_term("opacity", predictions=("render_weights",), targets=("render_opacity", "ray_keep"))
    def opacity(pred, target, ctx):
        return difference(pred["render_weights"].sum(-1), target["render_opacity"], ctx.kind, target["ray_keep"])

Registration order is the order terms are summed and logged in.

Built in, for a radiance-field student (:class:`~.task.DistillationTask`):
``feature``, ``density``, ``colour``, ``alpha`` (live samples), ``rgb``,
``depth``, ``interlevel``, ``gt_rgb`` (rays); for a multi-view stereo student
whose predictions are ``{"prob_volume", "hypotheses"}`` (B, D, H, W) and
targets ``{"mu", "sigma", "mask"}`` (B, H, W): ``gaussian_kl`` (KL of the
volume's Gaussian to the label's, sigmas clamped at ``ctx.config.min_sigma``;
``ctx.config.kl_direction`` may turn it round)
and ``depth_ce`` (cross-entropy at the hypothesis nearest to mu).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import torch

from ..errors import InputError
from ..render.composite import composite
from .losses import (MIN_SIGMA, alpha_loss, colour_loss, density_loss, depth_loss, feature_loss, gaussian_kl,
                     hypothesis_cross_entropy, interlevel_loss, interval_edges, rgb_loss, sample_alphas,
                     volume_moments)

Inputs = Mapping[str, Any]


@dataclass(frozen=True)
class TermContext:
    kind: str  # the norm of the term's differences (losses.KINDS)
    config: Any = None  # the task's config, for knobs of a term (density clip, min sigma, ...)


@dataclass(frozen=True)
class Term:
    name: str
    fn: Callable[[Inputs, Inputs, TermContext], torch.Tensor | None]
    predictions: tuple[str, ...]  # keys of the student's predictions it reads
    targets: tuple[str, ...]  # keys of the targets (teacher, labels, masks) it reads
    feature: bool = False  # trains an intermediate feature only: off when teacher or student has none

    def __call__(self, pred: Inputs, target: Inputs, ctx: TermContext) -> torch.Tensor | None:
        return self.fn(pred, target, ctx)


_TERMS: dict[str, Term] = {}


def register_term(name: str, *, predictions: Iterable[str] = (), targets: Iterable[str] = (), feature: bool = False):
    """Decorator: register ``fn(pred, target, ctx)`` as the term ``name``."""
    def register(fn):
        if name in _TERMS:
            raise ValueError(f"distillation term {name!r} is already registered")
        _TERMS[name] = Term(name, fn, tuple(predictions), tuple(targets), feature)
        return fn
    return register


def unregister_term(name: str) -> None:
    _TERMS.pop(name, None)


def term_names() -> tuple[str, ...]:
    return tuple(_TERMS)


def feature_terms() -> tuple[str, ...]:
    return tuple(name for name, term in _TERMS.items() if term.feature)


def get_term(name: str, where: str = "distill.weights") -> Term:
    if name not in _TERMS:
        raise InputError(where, f"unknown distillation term {name!r}; known: {', '.join(_TERMS)}")
    return _TERMS[name]


def check_reads(names: Iterable[str], predictions: Iterable[str], targets: Iterable[str],
                where: str = "distill.stages") -> None:
    """Every term in ``names`` finds what it reads among a task's ``predictions`` and ``targets``."""
    predictions, targets = set(predictions), set(targets)
    for name in names:
        term = get_term(name, where)
        missing = [f"prediction {k}" for k in term.predictions if k not in predictions]
        missing += [f"target {k}" for k in term.targets if k not in targets]
        if missing:
            raise InputError(where, f"term {name!r} reads {', '.join(missing)}, which this task does not provide")


# --- a radiance-field student: per live sample (``keep`` of them) and per ray (``ray_keep``) ---

@register_term("feature", predictions=("feature",), targets=("feature", "keep"), feature=True)
def _feature(pred, target, ctx):
    return feature_loss(pred["feature"], target["feature"], ctx.kind, target["keep"])


@register_term("density", predictions=("raw_density",), targets=("raw_density", "keep"))
def _density(pred, target, ctx):
    return density_loss(pred["raw_density"], target["raw_density"], ctx.kind, ctx.config.density_clip,
                        ctx.config.density_saturate, target["keep"])


@register_term("colour", predictions=("rgb",), targets=("rgb", "keep"))
def _colour(pred, target, ctx):
    return colour_loss(pred["rgb"], target["rgb"], ctx.kind, target["keep"])


@register_term("alpha", predictions=("density",), targets=("density", "t_starts", "t_ends", "live", "keep"))
def _alpha(pred, target, ctx):
    live = target["live"]
    starts, ends = target["t_starts"][live], target["t_ends"][live]
    return alpha_loss(sample_alphas(pred["density"], starts, ends), sample_alphas(target["density"], starts, ends),
                      ctx.kind, target["keep"])


@register_term("rgb", predictions=("render_rgb",), targets=("render_rgb", "ray_keep"))
def _rgb(pred, target, ctx):
    return rgb_loss(pred["render_rgb"], target["render_rgb"], ctx.kind, target["ray_keep"])


@register_term("depth", predictions=("render_depth",), targets=("render_depth", "render_opacity", "ray_keep"))
def _depth(pred, target, ctx):
    # Only rays the teacher sees as solid: a background ray's depth means nothing.
    solid = target["ray_keep"] & (target["render_opacity"] > ctx.config.depth_min_opacity)
    return depth_loss(pred["render_depth"], target["render_depth"], ctx.kind, solid)


@register_term("interlevel", predictions=("render_weights",),
               targets=("density", "t_starts", "t_ends", "live", "ray_keep"))
def _interlevel(pred, target, ctx):
    """The teacher's weights bound the student's proposal histograms (``pred["proposal_levels"]``,
    a list of (edges, weights) per level, where the student samples with proposal networks: DaC),
    or else the student's own weights on the teacher's intervals."""
    live, keep = target["live"], target["ray_keep"]
    dense = target["density"].new_zeros(live.shape)  # the teacher's live densities, zero at dead samples
    dense[live] = target["density"]
    edges = interval_edges(target["t_starts"], target["t_ends"])[keep]
    teacher_w = composite(dense, target["t_starts"], target["t_ends"])["weights"][keep]
    levels = pred.get("proposal_levels")
    if levels:
        return sum(interlevel_loss(level_edges[keep], level_w[keep], edges, teacher_w)
                   for level_edges, level_w in levels)
    return interlevel_loss(edges, pred["render_weights"][keep], edges, teacher_w)


@register_term("gt_rgb", predictions=("render_rgb",), targets=("gt_rgb", "ray_keep"))
def _gt_rgb(pred, target, ctx):
    if target["gt_rgb"] is None:  # teacher rays: no ground truth
        return None
    return rgb_loss(pred["render_rgb"], target["gt_rgb"], ctx.kind, target["ray_keep"])


# --- a multi-view stereo student: a probability volume over depth hypotheses, labels (mu, sigma) ---

@register_term("gaussian_kl", predictions=("prob_volume", "hypotheses"), targets=("mu", "sigma", "mask"))
def _gaussian_kl(pred, target, ctx):
    mean, std = volume_moments(pred["prob_volume"], pred["hypotheses"])
    min_sigma = getattr(ctx.config, "min_sigma", MIN_SIGMA)
    direction = getattr(ctx.config, "kl_direction", "student||label")
    return gaussian_kl(target["mu"], target["sigma"], mean, std, min_sigma, target["mask"], direction)


@register_term("depth_ce", predictions=("prob_volume", "hypotheses"), targets=("mu", "mask"))
def _depth_ce(pred, target, ctx):
    return hypothesis_cross_entropy(pred["prob_volume"], pred["hypotheses"], target["mu"], target["mask"])
