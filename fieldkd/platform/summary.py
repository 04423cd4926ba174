"""The numbers that go into the JSON summary line (`fieldkd run`, `fieldkd sweep`)."""

from __future__ import annotations

import math
import numbers


def is_finite(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def finite(metrics: dict) -> dict:
    """JSON has no infinities: report them as null."""
    return {k: (float(v) if is_finite(v) else None) for k, v in metrics.items()}
