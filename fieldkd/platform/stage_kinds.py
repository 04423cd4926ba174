"""Stage kinds, registered by name: what a stage of each ``StageRequest.task`` builds and trains.

A kind is an object with

- ``build(request, device)``: the parts a process builds before training (data, model, teacher);
  bad input fails here, before the stage's run is touched;
- ``task(request, parts, device, *, evaluate, forward, batches, batch_size, rank, world)``: the
  Trainer task of one process (``forward``: a DDP wrapper of the model on Ray Train workers,
  ``batches``: a Ray Data shard, ``batch_size``: this process's share, ``rank``/``world``: which
  part of the data it draws);
- ``batch_size(cfg)``: the global batch, split among Ray Train workers;
- ``validation(request, parts, device)``: the periodic check the trainer logs (``step -> metrics``);
- ``shards(request)``: the Parquet shards Ray Train workers stream, or None when each worker
  draws its own batches;
- ``record(request, parts)``: what the model is, saved with every checkpoint (:mod:`.models`);
- ``tags(request)``: the stage's run tags; ``evaluators``: the names of its evaluators
  (:mod:`.evaluators`);
- ``trains`` (False for a kind that only scores a given model, which then has ``keep(request)``),
  and for data-parallel workers ``gradient_sync`` ("ddp": the task calls ``forward``, the model
  wrapped in DDP with ``ddp_options``; "all_reduce": gradients averaged after each backward pass,
  for tasks that call the model part by part) and ``shares_grid``.

:func:`.stages.fit_stage` runs any kind's stage in an actor, a Tune trial or on each Ray Train worker.

Kinds register with :func:`register_stage_kind` when their module is imported; the built-in
modules are imported on first lookup, so the platform names no kind in an if-chain.
"""

from __future__ import annotations

import importlib

from .errors import InputError

BUILTIN = ("fieldkd.platform.field_stages", "fieldkd.platform.networks.mvs.stage",
           "fieldkd.platform.networks.bts.stage")
_KINDS: dict[str, object] = {}


def register_stage_kind(cls):
    """Class decorator: one instance of ``cls`` serves the stages of task ``cls.name``."""
    _KINDS[cls.name] = cls()
    return cls


def stage_kinds() -> dict[str, object]:
    for module in BUILTIN:
        importlib.import_module(module)
    return dict(_KINDS)


def stage_kind(task: str):
    kinds = stage_kinds()
    if task not in kinds:
        raise InputError("task", f"unknown stage task {task!r}; one of {', '.join(sorted(kinds))}")
    return kinds[task]
