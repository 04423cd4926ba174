"""Many independent trainings at once, each on its own Ray actor.

Experts, teachers, incremental streams and seeds are all the same thing to
the pool: a picklable function and its keyword arguments, run with the CPUs
and GPU fraction it asks for. Trainings that do not fit wait for resources;
an actor is released as soon as its training ends, so the next one can start.

A training must be resumable from storage: its checkpoint directory and its
MLflow run id travel in its arguments, never tensors through the object
store. When its actor dies, Ray restarts the actor and retries the call, and
the training continues from its last checkpoint in the same MLflow run.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..train.board import note
from ..train.progress import inside_ray_worker
from . import interrupts
from .session import init_ray, pin_threads


@dataclass
class Training:
    name: str
    fn: Callable[..., Any]  # a module-level function, so that it pickles by reference
    kwargs: dict = field(default_factory=dict)
    num_cpus: float = 1.0
    num_gpus: float = 0.0


@dataclass
class Outcome:
    name: str
    result: Any
    started: float  # wall-clock interval of the (last) attempt, for overlap and speed-up checks
    finished: float
    node_id: str
    pid: int


class TrainingActor:
    """Runs one training; the actor's process is the training's process."""

    def __init__(self, num_cpus: float):
        self.threads = pin_threads(num_cpus)

    def run(self, fn, kwargs):
        import ray

        started = time.time()
        result = fn(**kwargs)
        return result, started, time.time(), ray.get_runtime_context().get_node_id(), os.getpid()

    def pid(self) -> int:
        return os.getpid()


def run_inline(trainings: list[Training]) -> dict[str, Outcome]:
    """One after another in this process: used when already inside a Ray worker
    (a Tune trial), whose resources are its own to use."""
    outcomes = {}
    for t in trainings:
        started = time.time()
        result = t.fn(**t.kwargs)
        outcomes[t.name] = Outcome(t.name, result, started, time.time(), "", os.getpid())
    return outcomes


def start_actors(trainings: list[Training], max_restarts: int) -> dict[str, Any]:
    import ray

    remote = ray.remote(TrainingActor)
    return {t.name: remote.options(num_cpus=t.num_cpus, num_gpus=t.num_gpus, max_restarts=max_restarts,
                                   max_task_retries=max_restarts).remote(t.num_cpus)
            for t in trainings}


def run_trainings(trainings: list[Training], max_restarts: int = 3,
                  actors: dict[str, Any] | None = None) -> dict[str, Outcome]:
    """Run all trainings concurrently as far as resources allow; results by name.

    ``actors`` may come from :func:`start_actors` (to reach them while they
    run, e.g. to observe or kill one). A training that raises fails the call
    with its error; the others are stopped. After Ctrl-C (see :mod:`.interrupts`)
    the trainings save their checkpoints, and :class:`~.interrupts.Interrupted` is raised.
    """
    names = [t.name for t in trainings]
    if len(set(names)) != len(names):
        raise ValueError(f"training names must be unique: {names}")
    if inside_ray_worker():
        return run_inline(trainings)
    import ray

    init_ray()
    actors = actors or start_actors(trainings, max_restarts)
    pending = {actors[t.name].run.remote(t.fn, t.kwargs): t.name for t in trainings}
    outcomes: dict[str, Outcome] = {}
    try:
        with interrupts.waiting():  # Ctrl-C: the trainings save their checkpoints and stop
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                name = pending.pop(done[0])
                try:
                    result, started, finished, node, pid = ray.get(done[0])
                except Exception:
                    if interrupts.requested() and pending:  # the others are stopping too: let them save
                        ray.wait(list(pending), num_returns=len(pending), timeout=interrupts.STOP_GRACE_S)
                    raise
                outcomes[name] = Outcome(name, result, started, finished, node, pid)
                ray.kill(actors[name])  # frees its resources for trainings still waiting
                note(f"fieldkd: {name} finished in {finished - started:.1f} s")
    finally:
        for name, actor in actors.items():
            if name not in outcomes:
                ray.kill(actor, no_restart=True)
    return outcomes
