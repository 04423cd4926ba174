"""Evaluators, registered by name: what scores a stage's trained model after training.

An evaluator is ``fn(ctx, request, parts, trained) -> metrics``: it reads its settings from
``ctx.cfg["eval"]``, logs its own pictures and artifacts to ``ctx.run`` and returns its metrics;
a stage kind lists the evaluators that apply to its model (``kind.evaluators``). Built in: ``views``
(PSNR, SSIM, LPIPS, depth of rendered views) and ``mesh`` (marching cubes, Chamfer, F-score) for
fields, ``mvs`` (fused point clouds, DTU's accuracy and completeness) for MVS networks.
"""

from __future__ import annotations

import importlib

from .errors import InputError

BUILTIN = ("fieldkd.platform.field_evaluation", "fieldkd.platform.networks.mvs.stage",
           "fieldkd.platform.networks.bts.stage")
_EVALUATORS: dict[str, object] = {}


def register_evaluator(name: str):
    def register(fn):
        _EVALUATORS[name] = fn
        return fn
    return register


def evaluator(name: str):
    for module in BUILTIN:
        importlib.import_module(module)
    if name not in _EVALUATORS:
        raise InputError("evaluator", f"unknown evaluator {name!r}; one of {', '.join(sorted(_EVALUATORS))}")
    return _EVALUATORS[name]


def evaluate_stage(ctx, request, kind, parts, trained) -> dict[str, float]:
    """Every evaluator of the stage's kind, in order; their metrics together."""
    metrics: dict[str, float] = {}
    for name in kind.evaluators:
        metrics.update(evaluator(name)(ctx, request, parts, trained))
    return metrics
