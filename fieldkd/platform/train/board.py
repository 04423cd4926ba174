"""The run's progress board: Ray workers put their trainings' states, the driver draws them.

The board is a small actor without CPUs, named after the Ray job, so every
worker of the run (pool actors, Ray Train workers) finds it without being
told, and two runs on one cluster never share one. The driver polls it a few
times a second and hands new states to its :class:`~.display.Display`.
"""

from __future__ import annotations

import contextlib
import queue
import threading

from .display import local_display

POLL_S = 0.25
FINAL_PHASES = ("done", "finished")


def inside_ray_worker() -> bool:
    try:
        import ray
    except ImportError:
        return False
    if not ray.is_initialized():
        return False
    return ray.get_runtime_context().worker.mode == ray.WORKER_MODE


class Board:
    """The latest state of each training, by name, and the last state of each phase that
    ended since the driver last looked (so that no "done" is lost between two looks)."""

    def __init__(self):
        self.states: dict[str, dict] = {}
        self.ended: list[dict] = []

    def put(self, state: dict) -> None:
        before = self.states.get(state["name"])
        if before is not None and before.get("phase") != state.get("phase"):
            self.ended.append(before)
        self.states[state["name"]] = state

    def reset(self) -> None:
        self.states, self.ended = {}, []

    def take(self) -> list[dict]:
        """Ended phases, oldest first, then the latest states."""
        ended, self.ended = self.ended, []
        return ended + list(self.states.values())


def board_name() -> str:
    import ray

    return f"fieldkd-progress-{ray.get_runtime_context().get_job_id()}"


def find_board():
    """This job's board, or None when its driver draws no progress (e.g. a sweep)."""
    import ray

    try:
        return ray.get_actor(board_name())
    except ValueError:
        return None


class WorkerSink:
    """A Ray worker's way to report: states go to the board from a thread of its own, so a
    training never waits on Ray (on a busy machine a first call to an actor can take
    seconds, which a time budget would pay). Without a board, plain lines on stderr.

    The last state of a training is waited for: the worker's process may end as soon as
    its training returns."""

    def __init__(self):
        self.queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._run, name="fieldkd-progress-send", daemon=True).start()

    def __call__(self, state: dict) -> None:
        self.queue.put(state)
        if state.get("phase") in FINAL_PHASES:
            self.queue.join()

    def _run(self) -> None:
        import ray

        board = find_board()
        show = None if board is not None else local_display(mode="lines").show
        while True:
            state = self.queue.get()
            try:
                if show is not None:
                    show(state)
                else:
                    ref = board.put.remote(state)
                    if state.get("phase") in FINAL_PHASES:
                        ray.get(ref, timeout=30)
            except Exception:  # progress is never worth failing a training for
                pass
            finally:
                self.queue.task_done()


_sinks: dict[str, WorkerSink] = {}
_sinks_lock = threading.Lock()


def worker_sink() -> WorkerSink:
    """This process's sink for its job (one sending thread per process)."""
    with _sinks_lock:
        name = board_name()
        if name not in _sinks:
            _sinks[name] = WorkerSink()
        return _sinks[name]


@contextlib.contextmanager
def watching(enabled: bool = True):
    """In the driver: open the board, draw what trainings put on it until the block ends."""
    if not enabled or inside_ray_worker():
        yield
        return
    import ray

    # One board per job, kept for the job's life: a later run of the same driver (tests) reuses it.
    board = ray.remote(Board).options(name=board_name(), num_cpus=0, get_if_exists=True).remote()
    board.reset.remote()  # not waited for: the board's process may take seconds to start on a busy machine
    display = local_display()
    display.forget()
    stop = threading.Event()
    seen: dict[str, dict] = {}
    lock = threading.Lock()

    def refresh() -> bool:
        with lock:
            try:
                states = ray.get(board.take.remote(), timeout=30)
            except ray.exceptions.GetTimeoutError:  # a busy machine: look again later
                return True
            except Exception:  # a board lost with a dying cluster: the run reports its own error
                return False
            for state in states:
                if seen.get(state["name"]) != state:
                    seen[state["name"]] = state
                    display.show(state)
            display.tick()
            return True

    def poll() -> None:
        while True:
            last = stop.wait(POLL_S)
            if not refresh() or last:
                return

    thread = threading.Thread(target=poll, name="fieldkd-progress", daemon=True)
    thread.start()
    _refreshers.append(refresh)
    try:
        yield
    finally:
        _refreshers.remove(refresh)
        stop.set()
        thread.join(timeout=35)
        display.close()


_refreshers: list = []


def note(text: str) -> None:
    """A line from the driver, after what the board holds so far has been drawn (so that
    a training's last state comes before the news that it ended)."""
    for refresh in list(_refreshers):
        refresh()
    local_display().write(text)
