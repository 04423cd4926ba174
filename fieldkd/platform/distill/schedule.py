"""Progressive distillation stages: which loss terms count at a step, and how much.

A schedule is a list of stages, each lasting until a fraction of the run, and
the terms it switches on; every term has a weight and an optional decay per
step. PVD's (methods.md §1), as fractions of the official 30k steps:

- stage 1 (until 2k/30k): feature only;
- stage 2 (until 5k/30k): + pre-activation density + per-sample colour;
- stage 3 (the rest): + rendered rgb;
- weights rgb 1.0, feature / density / colour 0.002; the feature weight decays
  x0.995 per step (from step 0).

When teacher or student has no intermediate feature (a grid), the stages that
train only feature terms are skipped: the next stage starts at step 0, and the
feature weight is 0 throughout.

The terms are those registered in :mod:`.terms` (an open set); a term flagged
``feature`` there is one that such a skip turns off.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .terms import feature_terms, term_names


@dataclass(frozen=True)
class Stage:
    name: str
    until: float  # fraction of the run at which the stage ends; the last stage's is 1.0
    terms: tuple[str, ...]


@dataclass(frozen=True)
class ScheduleConfig:
    stages: tuple[Stage, ...]
    weights: dict[str, float]
    decay: dict[str, float] = field(default_factory=dict)  # multiplied in once per step

    def __post_init__(self):
        unknown = ({t for s in self.stages for t in s.terms} | set(self.weights) | set(self.decay)) - set(term_names())
        if unknown:
            raise ValueError(f"unknown distillation term(s) {', '.join(sorted(unknown))}; "
                             f"known: {', '.join(term_names())}")
        bounds = [s.until for s in self.stages]
        if not self.stages or bounds != sorted(bounds) or bounds[-1] < 1.0:
            raise ValueError(f"stage ends must be increasing and the last must reach 1.0, got {bounds}")

    @classmethod
    def from_dict(cls, values: dict) -> "ScheduleConfig":
        """From plain config data: {"stages": [{"name", "until", "terms"}], "weights": {}, "decay": {}}."""
        stages = tuple(Stage(s["name"], float(s["until"]), tuple(s["terms"])) for s in values["stages"])
        return cls(stages, {k: float(v) for k, v in values["weights"].items()},
                   {k: float(v) for k, v in (values.get("decay") or {}).items()})

    def to_dict(self) -> dict:
        return {"stages": [{"name": s.name, "until": s.until, "terms": list(s.terms)} for s in self.stages],
                "weights": dict(self.weights), "decay": dict(self.decay)}


def pvd_schedule(stage1_until: float = 2000 / 30000, stage2_until: float = 5000 / 30000,
                 rgb: float = 1.0, feature: float = 0.002, density: float = 0.002, colour: float = 0.002,
                 feature_decay: float = 0.995) -> ScheduleConfig:
    return ScheduleConfig(
        stages=(Stage("feature", stage1_until, ("feature",)),
                Stage("volume", stage2_until, ("feature", "density", "colour")),
                Stage("render", 1.0, ("feature", "density", "colour", "rgb"))),
        weights={"feature": feature, "density": density, "colour": colour, "rgb": rgb},
        decay={"feature": feature_decay},
    )


def _stages(config: ScheduleConfig, skip_feature_stage: bool) -> list[Stage]:
    if not skip_feature_stage:
        return list(config.stages)
    kept = [s for s in config.stages if not set(s.terms) <= set(feature_terms())]
    return kept or [Stage("none", 1.0, ())]


def _fraction(step: int, total_steps: int, progress: float | None) -> float:
    if progress is not None:
        return float(progress)
    return step / max(int(total_steps), 1)


def stage_at(step: int, total_steps: int, config: ScheduleConfig, skip_feature_stage: bool = False,
             progress: float | None = None) -> tuple[int, Stage]:
    """(index among the stages in use, stage) at ``step``; ``progress`` in [0, 1]
    overrides ``step / total_steps`` (e.g. the wall-time fraction of a timed run)."""
    fraction = _fraction(step, total_steps, progress)
    stages = _stages(config, skip_feature_stage)
    for index, stage in enumerate(stages):
        if fraction < stage.until:
            return index, stage
    return len(stages) - 1, stages[-1]


def weights_at(step: int, total_steps: int, config: ScheduleConfig, skip_feature_stage: bool = False,
               progress: float | None = None) -> dict[str, float]:
    """Weight of every registered term at ``step``, in registration order: 0 for terms the current stage
    leaves out."""
    _, stage = stage_at(step, total_steps, config, skip_feature_stage, progress)
    weights = dict.fromkeys(term_names(), 0.0)
    skipped = feature_terms() if skip_feature_stage else ()
    for term in stage.terms:
        if term in skipped:
            continue
        weights[term] = config.weights.get(term, 0.0) * config.decay.get(term, 1.0) ** step
    return weights
