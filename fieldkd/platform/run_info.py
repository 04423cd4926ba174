"""What a run shows in MLflow besides its metrics: its name and the params it logs.

Params are the resolved config of what the run uses. The root config holds
groups that only some methods read (``SHARED_OPTIONAL``); a method's yaml lists
the ones it reads under ``method.uses``, and the others are left out of its
params. Groups that a method's yaml adds (``teacher``, ``dac``, ...) exist only
in that method's config, so they are always logged.
"""

from __future__ import annotations

import time
from pathlib import Path

# Root-config groups read only by the methods that say so (``method.uses``) or, for ``tune``, by a sweep.
SHARED_OPTIONAL = ("distill", "tune")


def used_config(cfg: dict, also: tuple[str, ...] = ()) -> dict:
    """``cfg`` without the optional groups that its method does not use (``also``: groups kept anyway)."""
    uses = set((cfg.get("method") or {}).get("uses") or ()) | set(also)
    return {k: v for k, v in cfg.items() if k not in SHARED_OPTIONAL or k in uses}


def scene_name(scene_cfg: dict) -> str:
    """A short scene name: the folder's name, or the generated scene's."""
    path = scene_cfg.get("path")
    return Path(str(path).rstrip("/")).name if path else str(scene_cfg.get("generate") or "scene")


def run_name(cfg: dict, field_label: str | None = None, now: float | None = None) -> str:
    """``pvd hash→mlp default 2026-12-03 14:05``: method, field(s), scene and start time (UTC).

    A ``run_name`` given in the config wins."""
    if cfg.get("run_name"):
        return str(cfg["run_name"])
    stamp = time.strftime("%Y-%m-%d %H:%M", time.gmtime(time.time() if now is None else now))
    field = field_label or cfg["field"]["name"]
    return f"{cfg['method']['name']} {field} {scene_name(cfg['scene'])} {stamp}"


def short_value(value) -> str:
    """3e-3 rather than 0.003, 512 rather than 512.0: values as a run name shows them."""
    if isinstance(value, float):
        if value == int(value) and abs(value) < 1e6:
            return str(int(value))
        if value != 0 and not 1e-2 <= abs(value) < 1e4:
            mantissa, exponent = f"{value:.2e}".split("e")
            return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
        return f"{value:.4g}"
    return str(value)


def trial_name(trial_id: str, values: dict) -> str:
    """``trial_07 lr=3e-3``: Tune's trial number and the sampled values under their last key part."""
    number = trial_id.rsplit("_", 1)[-1]
    label = f"trial_{int(number):02d}" if number.isdigit() else f"trial_{trial_id}"
    sampled = " ".join(f"{str(k).rsplit('.', 1)[-1]}={short_value(v)}" for k, v in sorted(values.items()))
    return f"{label} {sampled}".strip()
