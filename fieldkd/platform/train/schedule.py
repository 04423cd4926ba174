"""Learning-rate schedules as pure functions of training progress."""

from __future__ import annotations

import math


def lr_factor(step: int, progress: float, warmup_steps: int, kind: str = "cosine",
              min_ratio: float = 0.03) -> float:
    """Multiplier of the base learning rate.

    ``progress`` in [0, 1] is how much of the stage's budget is spent: the
    larger of the step fraction and the wall-time fraction, so that a stage
    cut short by ``trainer.max_seconds`` still ends on a decayed rate.
    """
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    progress = min(max(progress, 0.0), 1.0)
    if kind == "constant":
        decay = 1.0
    elif kind == "cosine":
        decay = min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    elif kind == "exponential":
        decay = min_ratio ** progress
    else:
        raise ValueError(f"unknown schedule {kind!r} (cosine, exponential, constant)")
    return warm * decay
