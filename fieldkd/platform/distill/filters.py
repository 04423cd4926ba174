"""Filters: which inquired rays and samples the student should learn from.

A filter is any callable ``filter(batch) -> FilterResult`` with a ``name``.
It sees the whole :class:`~.samples.DistillBatch` (rays, sample points, the
teacher's answers) and returns keep-masks, per ray and/or per live sample,
with statistics such as its acceptance rate. The distillation task combines
every filter's masks (a ray or sample must pass all of them) and logs the
statistics as ``distill/filter/<name>/<stat>``. Filters run when a batch is
trained on, not when it is stored, so a stored batch serves any filter.

Here: the frustum mask (keep what lies inside at least one training camera's
view), and the uncertainty filter, which judges rendered rays (a dict with
the teacher's per-ray ``uncertainty``) rather than samples: it keeps a whole
pose or single rays whose rendered uncertainty is below a threshold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch

from ..scenes.cameras import Cameras, visible
from .samples import DistillBatch


@dataclass
class FilterResult:
    ray_keep: torch.Tensor | None = None  # (R,) bool
    sample_keep: torch.Tensor | None = None  # (L,) bool, over the batch's live samples in order
    stats: dict[str, float] = field(default_factory=dict)


class Filter(Protocol):
    name: str

    def __call__(self, batch: DistillBatch) -> FilterResult: ...


def in_frustum(points: torch.Tensor, cameras: Cameras, near: float = 0.0, chunk: int = 16) -> torch.Tensor:
    """(N,) True where a point projects inside the image of at least one camera,
    in front of it (camera depth > ``near``)."""
    points = points.reshape(-1, 3).float()
    inside = torch.zeros(points.shape[0], dtype=torch.bool, device=points.device)
    for start in range(0, len(cameras), chunk):
        inside |= visible(points, cameras[torch.arange(start, min(start + chunk, len(cameras)))], near).any(dim=0)
    return inside


class FrustumFilter:
    """Keep samples inside at least one training camera's frustum, and rays whose
    live samples lie there for at least ``min_fraction`` (rays with no live
    sample are kept: they cost nothing and teach that space is empty)."""

    name = "frustum"

    def __init__(self, cameras: Cameras, min_fraction: float = 0.5, near: float = 0.0,
                 level: str = "both"):
        if level not in ("samples", "rays", "both"):
            raise ValueError("level must be 'samples', 'rays' or 'both'")
        self.cameras, self.min_fraction, self.near, self.level = cameras, float(min_fraction), float(near), level

    def __call__(self, batch: DistillBatch) -> FilterResult:
        live = batch.live
        seen = in_frustum(batch.positions[live], self.cameras, self.near)
        per_ray_live = live.sum(dim=-1)
        per_ray_seen = torch.zeros_like(live).masked_scatter(live, seen).sum(dim=-1)
        ray_keep = (per_ray_live == 0) | (per_ray_seen >= self.min_fraction * per_ray_live)
        stats = {"sample_acceptance": float(seen.float().mean()) if seen.numel() else 1.0,
                 "ray_acceptance": float(ray_keep.float().mean()) if ray_keep.numel() else 1.0}
        return FilterResult(ray_keep if self.level in ("rays", "both") else None,
                            seen if self.level in ("samples", "both") else None, stats)


def combine(batch: DistillBatch, filters) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """Run every filter; (ray mask (R,), live-sample mask (L,), stats). A sample of a
    rejected ray is rejected too."""
    ray_keep = torch.ones(len(batch), dtype=torch.bool, device=batch.live.device)
    sample_keep = torch.ones(int(batch.live.sum()), dtype=torch.bool, device=batch.live.device)
    stats: dict[str, float] = {}
    for f in filters:
        result = f(batch)
        if result.ray_keep is not None:
            ray_keep &= result.ray_keep.to(ray_keep.device)
        if result.sample_keep is not None:
            sample_keep &= result.sample_keep.to(sample_keep.device)
        stats.update({f"distill/filter/{f.name}/{k}": float(v) for k, v in result.stats.items()})
    ray_of_sample = torch.arange(len(batch), device=batch.live.device)[:, None].expand_as(batch.live)[batch.live]
    sample_keep &= ray_keep[ray_of_sample]
    return ray_keep, sample_keep, stats


class UncertaintyFilter:
    """Keep what the teacher is sure of: a pose whose mean rendered uncertainty is
    below ``threshold`` (``level="pose"``: all its rays or none), or each ray whose
    own is (``level="ray"``)."""

    name = "uncertainty"
    LEVELS = ("pose", "ray")

    def __init__(self, threshold: float, level: str = "pose"):
        if level not in self.LEVELS:
            raise ValueError(f"uncertainty filter level must be one of {self.LEVELS}, got {level!r}")
        self.threshold, self.level = float(threshold), level

    def __call__(self, rendered: dict) -> FilterResult:
        if "uncertainty" not in rendered:
            raise ValueError("the uncertainty filter needs a teacher with an uncertainty head (field.uncertainty=true)")
        beta = rendered["uncertainty"].reshape(-1)
        mean = float(beta.mean()) if beta.numel() else 0.0
        if self.level == "pose":
            keep = torch.full_like(beta, mean < self.threshold, dtype=torch.bool)
        else:
            keep = beta < self.threshold
        accepted = float(keep.float().mean()) if keep.numel() else 0.0
        return FilterResult(ray_keep=keep, stats={"mean_uncertainty": mean, "ray_acceptance": accepted})
