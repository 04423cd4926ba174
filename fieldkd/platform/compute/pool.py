"""Many independent trainings at once, each on its own Ray actor.

Experts, teachers, incremental streams and seeds are all the same thing to
the pool: a picklable function and its keyword arguments, run with the CPUs
and GPU fraction it asks for. A training must be resumable from storage (its
checkpoint directory and MLflow run id travel in its arguments), so that when
its actor dies Ray restarts the actor, retries the call, and the training
continues from its last checkpoint in the same MLflow run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

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
    started: float  # wall-clock interval on the worker, for checking overlap and speed-up
    finished: float
    node_id: str


class _Worker:
    """Runs one training; the actor's process is the training's process."""

    def __init__(self, num_cpus: float):
        self.threads = pin_threads(num_cpus)

    def run(self, fn, kwargs):
        import ray

        started = time.time()
        result = fn(**kwargs)
        return result, started, time.time(), ray.get_runtime_context().get_node_id()

    def pid(self) -> int:
        import os

        return os.getpid()


def run_trainings(trainings: list[Training], max_restarts: int = 3) -> dict[str, Outcome]:
    """Run all trainings concurrently (as far as resources allow); results by name.

    A training whose actor crashes is retried up to ``max_restarts`` times. A
    training that raises fails the whole call with its error.
    """
    import ray

    init_ray()
    names = [t.name for t in trainings]
    if len(set(names)) != len(names):
        raise ValueError(f"training names must be unique: {names}")
    remote_worker = ray.remote(_Worker)
    actors, pending = {}, {}
    for t in trainings:
        actor = remote_worker.options(num_cpus=t.num_cpus, num_gpus=t.num_gpus, max_restarts=max_restarts,
                                      max_task_retries=max_restarts).remote(t.num_cpus)
        actors[t.name] = actor
        pending[actor.run.remote(t.fn, t.kwargs)] = t.name
    outcomes: dict[str, Outcome] = {}
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            name = pending.pop(done[0])
            result, started, finished, node = ray.get(done[0])
            outcomes[name] = Outcome(name, result, started, finished, node)
    finally:
        for actor in actors.values():
            ray.kill(actor)
    return outcomes
