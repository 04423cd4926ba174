"""What a training reports about its progress, and where the report goes.

A training sends its state (step, budgets, elapsed time, speed, last loss and
PSNR, what it is doing) a few times a second to a sink:

- inside a Ray worker of a ``fieldkd run``, to the run's progress board, a
  small actor that the driver polls and draws (:mod:`.board`, :mod:`.display`).
  Ray forwards a worker's stderr line by line with a prefix, so a bar redrawn
  in place by the worker would reach the user as one endless line. A worker
  whose job has no board (a Tune trial) prints plain lines;
- outside Ray (a test, a benchmark), to a display in this process: bars in a
  terminal, plain lines otherwise.

The state is a plain dict, so that it crosses processes as it is; the
functions that read it are pure and tested on their own.
"""

from __future__ import annotations

import collections
import contextlib
import time
from typing import Callable

from .board import inside_ray_worker, worker_sink
from .display import local_display
from .progress_text import DONE, FINISHED, TRAIN

__all__ = ["Counter", "Progress", "activity", "default_sink", "inside_ray_worker"]

Sink = Callable[[dict], None]

SEND_EVERY_S = 0.5  # the most often a training sends its state while it trains
RATE_WINDOW_S = 10.0  # steps per second are measured over this much recent time


class Progress:
    """A training's reporter: the trainer calls ``update`` every step; it sends at most
    every :data:`SEND_EVERY_S` seconds, and at once when the phase changes."""

    def __init__(self, name: str, steps: int, max_seconds: float | None = None, enabled: bool = True,
                 sink: Sink | None = None, unit: str = "step"):
        self.enabled = enabled
        self.sink = (sink or default_sink()) if enabled else None
        self.state = {"name": name, "step": 0, "steps": int(steps), "elapsed": 0.0, "unit": unit,
                      "max_seconds": float(max_seconds) if max_seconds else None,
                      "rate": None, "loss": None, "psnr": None, "phase": TRAIN}
        self.samples: collections.deque = collections.deque()
        self.sent_at = 0.0

    def update(self, step: int, elapsed: float, metrics: dict | None = None) -> None:
        if not self.enabled:
            return
        self.samples.append((elapsed, step))
        while len(self.samples) > 2 and elapsed - self.samples[1][0] >= RATE_WINDOW_S:
            self.samples.popleft()
        (t0, s0), (t1, s1) = self.samples[0], self.samples[-1]
        self.state.update(step=step, elapsed=elapsed, rate=(s1 - s0) / (t1 - t0) if t1 > t0 else None)
        for key in ("loss", "psnr"):
            if metrics and f"train/{key}" in metrics:
                self.state[key] = float(metrics[f"train/{key}"])
        now = time.monotonic()
        if now - self.sent_at >= SEND_EVERY_S:
            self._send(now)

    def phase(self, text: str, **fields) -> None:
        """Say what the training does now (``train``, ``validating``, ``done``...); sent at once."""
        if self.enabled:
            self.state.update(phase=text, **fields)
            self._send(time.monotonic())

    @contextlib.contextmanager
    def during(self, text: str):
        """A phase for the length of a block, then back to training."""
        self.phase(text)
        try:
            yield
        finally:
            self.phase(TRAIN)

    def close(self, stopped_by: str) -> None:
        self.phase(DONE, stopped_by=stopped_by)

    def _send(self, now: float) -> None:
        self.sent_at = now
        self.sink(dict(self.state))


class Counter:
    """Progress of a loop over items (views rendered, ...) with tqdm's ``update(n)``."""

    def __init__(self, name: str, total: int, enabled: bool = True, unit: str = "item"):
        self.progress = Progress(name, total, enabled=enabled, unit=unit)
        self.count, self.started = 0, time.perf_counter()

    def __enter__(self) -> "Counter":
        return self

    def update(self, n: int = 1) -> None:
        self.count += n
        self.progress.update(self.count, time.perf_counter() - self.started)

    def __exit__(self, *exc) -> None:
        self.progress.close("steps")


@contextlib.contextmanager
def activity(name: str, text: str, enabled: bool = True):
    """Report a stage's work after training (e.g. its final evaluation) under its name."""
    if not enabled:
        yield
        return
    sink = default_sink()
    started = time.monotonic()
    state = {"name": name, "step": 0, "steps": 0, "elapsed": 0.0, "phase": text}
    sink(state)
    try:
        yield
    finally:
        sink({**state, "phase": FINISHED, "what": text, "elapsed": time.monotonic() - started})


def default_sink() -> Sink:
    """The run's progress board when this process is one of its Ray workers, else a local display."""
    if inside_ray_worker():
        return worker_sink()
    return local_display().show
