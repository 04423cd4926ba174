"""Models that rebuild from their checkpoint alone.

Every stage checkpoint carries a record of its model next to the weights (``state["model"]``):
its kind and config, plus, for a field, the box, near/far, background and render settings it was
trained with. :func:`load_model` reads the file (``weights_only``: nothing in it runs) and asks the
loader registered for that kind, so a teacher is loaded from a path, with no scene and no config,
whatever model it is. Loaders register with :func:`register_model`; the built-in ones are
imported on first use.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from .errors import InputError

BUILTIN = ("fieldkd.platform.networks.mvs.stage", "fieldkd.platform.networks.bts.stage")
_LOADERS: dict[str, object] = {}
FIELD = "field"


def register_model(kind: str):
    """Decorator: ``loader(state, record, device, source)`` rebuilds a model of ``kind``."""
    def register(loader):
        _LOADERS[kind] = loader
        return loader
    return register


def field_record(cfg: dict, scene) -> dict:
    """The record of a radiance field trained with ``cfg`` on ``scene`` (plain values only)."""
    aabb = [[float(v) for v in row] for row in scene.aabb.tolist()]
    return {"kind": FIELD, "config": dict(cfg["field"]), "aabb": aabb,
            "near": float(scene.near), "far": float(scene.far), "background": [float(v) for v in scene.background],
            "render": dict(cfg["render"])}


def model_record(checkpoint: str | Path) -> dict:
    """The model record of a checkpoint: its kind and config."""
    from .train.checkpoint import load_checkpoint

    return record_in(load_checkpoint(checkpoint), checkpoint)


def record_in(state: dict, checkpoint: str | Path) -> dict:
    record = state.get("model")
    if not isinstance(record, dict) or "kind" not in record:
        raise InputError(checkpoint, "the checkpoint does not say which model it holds (written before models "
                                     "were recorded): give its field config too")
    return record


def recorded_field(checkpoint: str | Path) -> dict | None:
    """The field config a checkpoint records, or None for one written before models were recorded."""
    from .train.checkpoint import load_checkpoint

    record = load_checkpoint(checkpoint).get("model")
    if not isinstance(record, dict):
        return None
    if record.get("kind") != FIELD:
        raise InputError(checkpoint, f"holds a {record.get('kind')!r} model, not a radiance field")
    return dict(record["config"])


def load_model(checkpoint: str | Path, device="cpu"):
    """The model of a stage checkpoint, rebuilt from what the file records; in eval mode."""
    from .train.checkpoint import load_checkpoint

    for module in BUILTIN:
        importlib.import_module(module)
    state = load_checkpoint(checkpoint)
    record = record_in(state, checkpoint)
    if record["kind"] not in _LOADERS:
        raise InputError(checkpoint, f"unknown model kind {record['kind']!r}; known: {', '.join(sorted(_LOADERS))}")
    return _LOADERS[record["kind"]](state, record, device, str(checkpoint))


@register_model(FIELD)
def load_field(state: dict, record: dict, device, source: str):
    """A radiance field and its renderer as a frozen teacher."""
    import torch

    from .distill.teacher import teacher_from_state

    return teacher_from_state(state["task"], record["config"], torch.tensor(record["aabb"], dtype=torch.float32),
                              near=record["near"], far=record["far"], background=tuple(record["background"]),
                              render_cfg=record["render"], device=device, source=source)
