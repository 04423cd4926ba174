"""Ctrl-C and SIGTERM of the driver: the running stages checkpoint and return, then the run stops.

The driver's handler does not tear down what runs on Ray. It raises a stop flag
that every training process watches (a named Ray actor of this job, looked up
every half second by a watcher thread); the training loop sees it at its next
step, saves a checkpoint and returns. While the driver waits for stages
(:func:`waiting`), the handler only raises the flag, and the interrupt is raised
once the stages are back; elsewhere it is raised at once. A second signal ends
the process at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)
POLL_S = 0.5       # how often a training process looks for the stop flag
STOP_GRACE_S = 120.0  # how long the driver waits for stopped stages to save their checkpoints


class Interrupted(KeyboardInterrupt):
    """The driver got SIGINT or SIGTERM; ``run_id`` is the run to resume, once known."""

    def __init__(self, signum: int, run_id: str | None = None):
        self.signum, self.run_id = signum, run_id
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # what a shell reports for a process ended by that signal


class StageStopped(Exception):
    """A stage saw the stop flag: it saved its checkpoint and gave up the rest of its work."""

    def __init__(self, stage: str, step: int):
        self.stage, self.step = stage, step
        super().__init__(f"stage {stage} stopped at step {step} (checkpoint saved)")

    def __reduce__(self):
        return (type(self), (self.stage, self.step))


class _State:
    signum: int | None = None
    depth = 0          # nesting of handling()
    waiting = 0        # nesting of waiting()
    flag = None        # the stop flag actor, kept referenced until the driver exits
    raised = None      # the thread that raises the flag


_state = _State()


def flag_name() -> str:
    """The stop flag of this Ray job: the driver's, its actors' and its Train workers' alike."""
    import ray

    return f"fieldkd-stop-{ray.get_runtime_context().get_job_id()}"


def requested() -> int | None:
    """The signal that asked this driver to stop, if any."""
    return _state.signum


def _raise_flag() -> None:
    try:
        import ray

        if ray.is_initialized():
            flag = ray.remote(num_cpus=0)(_StopFlag)
            _state.flag = flag.options(name=flag_name(), max_restarts=0).remote()
    except Exception:  # Ray is going away: its processes stop with it anyway
        pass


class _StopFlag:
    """Its existence under :func:`flag_name` is the flag."""


def _handler(signum, frame) -> None:
    if _state.signum is not None:
        os.write(2, f"fieldkd: {signal.Signals(signum).name} again: stopping now\n".encode())
        os._exit(128 + signum)
    _state.signum = signum
    # Ray calls do not belong in a signal handler: a thread raises the flag.
    _state.raised = threading.Thread(target=_raise_flag, name="fieldkd-stop", daemon=True)
    _state.raised.start()
    if not _state.waiting:
        raise Interrupted(signum)
    os.write(2, f"\nfieldkd: {signal.Signals(signum).name}: the stages save their checkpoints and stop "
                f"(again to stop at once)\n".encode())


@contextlib.contextmanager
def handling() -> Iterator[None]:
    """SIGINT and SIGTERM stop the driver as :class:`Interrupted` (main thread only; a
    no-op elsewhere). Nestable: entered again after ``ray.init``, which sets its own."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    for sig in SIGNALS:
        signal.signal(sig, _handler)
    _state.depth += 1
    try:
        yield
    finally:
        _state.depth -= 1
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if not _state.depth:
            _state.signum, _state.flag, _state.raised = None, None, None


@contextlib.contextmanager
def waiting() -> Iterator[None]:
    """The driver waits for stages that stop on their own: a signal in here raises the
    flag only, and :class:`Interrupted` is raised when the block ends."""
    _state.waiting += 1
    try:
        yield
    except Exception as exc:
        if _state.signum is not None:
            raise Interrupted(_state.signum) from exc
        raise
    finally:
        _state.waiting -= 1
    if _state.signum is not None:
        raise Interrupted(_state.signum)


def check() -> None:
    """Raise :class:`Interrupted` now if the driver was asked to stop."""
    if _state.signum is not None:
        raise Interrupted(_state.signum)


def call_aside(fn: Callable[[], object]) -> object:
    """``fn()`` in a helper thread while this one waits (and takes signals). Ray Train
    installs a SIGINT handler of its own when started from the main thread, which would
    end its workers before they save their checkpoints."""
    box: dict = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:  # handed to the waiting thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="fieldkd-aside", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.2)
    if "error" in box:
        raise box["error"]
    return box.get("result")


@contextlib.contextmanager
def watching() -> Iterator[Callable[[], bool]]:
    """In a training process: yields a cheap ``stopped()`` that turns True once the
    driver raised the stop flag. Without Ray (or with no driver flag) it stays False."""
    seen, done = threading.Event(), threading.Event()
    try:
        import ray

        name = flag_name() if ray.is_initialized() else None
    except Exception:
        name = None
    if name is None:
        yield seen.is_set
        return

    def poll() -> None:
        while not done.wait(POLL_S):
            try:
                ray.get_actor(name)
            except ValueError:  # no flag (yet)
                continue
            except Exception:  # Ray is shutting down
                return
            seen.set()
            return

    thread = threading.Thread(target=poll, name="fieldkd-stop-watch", daemon=True)
    thread.start()
    try:
        yield seen.is_set
    finally:
        done.set()
