"""Drawing the progress of any number of trainings on stderr.

- In a terminal: one bar per training, redrawn in place, that fills by
  whichever budget binds first and says the time left; work without steps
  (validation, the final evaluation) shows a spinner.
- Anywhere else (CI, ``ray job submit``, a file): one plain line per training
  every ``FIELDKD_PROGRESS_SECONDS`` (10) seconds and when its phase changes,
  never a carriage return.

``FIELDKD_PROGRESS=bars|lines|off`` overrides the choice.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from tqdm import tqdm

from .progress_text import DONE, FINISHED, TRAIN, clock, describe, fraction

SPINNER = "|/-\\"
BAR_UNITS = 1000
BUSY_LINE_S = 60.0  # lines mode: how often long work without steps (an evaluation) says it goes on
MODES = ("bars", "lines", "off")


class _Bar(tqdm):
    """A tqdm bar whose text after the bar is ours alone (tqdm's postfix starts with a comma)."""

    text = ""

    @property
    def format_dict(self):
        return {**super().format_dict, "text": self.text}


def chosen_mode(stream) -> str:
    wanted = os.environ.get("FIELDKD_PROGRESS", "auto").strip().lower()
    if wanted in MODES:
        return wanted
    return "bars" if hasattr(stream, "isatty") and stream.isatty() else "lines"


def line_interval() -> float:
    try:
        return max(0.5, float(os.environ.get("FIELDKD_PROGRESS_SECONDS", "10")))
    except ValueError:
        return 10.0


class Display:
    """Takes progress states (see :mod:`.progress_text`) and draws them; thread-safe."""

    def __init__(self, mode: str | None = None, stream=None, every_s: float | None = None):
        self.stream = stream or sys.stderr
        self.mode = mode or chosen_mode(self.stream)
        self.every_s = every_s or line_interval()
        self.lock = threading.RLock()
        self.last: dict[str, dict] = {}
        self.printed_at: dict[str, float] = {}
        self.phase_since: dict[str, float] = {}
        self.bars: dict = {}
        self.spin = 0

    def show(self, state: dict) -> None:
        with self.lock:
            name, phase = state["name"], state.get("phase", TRAIN)
            before = self.last.get(name)
            if before is None or before.get("phase") != phase:
                self.phase_since[name] = time.monotonic()
            self.last[name] = state
            if self.mode == "lines":
                self._line(state, before)
            elif self.mode == "bars":
                self._bar(state)

    def tick(self) -> None:
        """Turn the spinners of trainings busy with work that has no steps; in lines mode, say
        now and then that such work still goes on."""
        with self.lock:
            self.spin += 1
            now = time.monotonic()
            for name, state in self.last.items():
                if self.mode == "lines" and state.get("phase") not in (TRAIN, DONE, FINISHED) \
                        and now - self.printed_at.get(name, now) >= max(self.every_s, BUSY_LINE_S):
                    print(f"{name}: {describe(state)}, {clock(now - self.phase_since[name])} so far",
                          file=self.stream, flush=True)
                    self.printed_at[name] = now
            for name, bar in self.bars.items():
                if self.last[name].get("phase") != TRAIN:
                    bar.text = self._text(self.last[name])
                    bar.refresh()

    def write(self, text: str) -> None:
        """A line of our own that does not break the bars."""
        with self.lock:
            if self.mode == "bars" and self.bars:
                tqdm.write(text, file=self.stream)
            else:
                print(text, file=self.stream, flush=True)

    def close(self) -> None:
        with self.lock:
            for bar in self.bars.values():
                bar.close()
            self.bars.clear()

    def forget(self) -> None:
        """Start afresh (a new run in the same process)."""
        with self.lock:
            self.close()
            self.last, self.printed_at, self.phase_since = {}, {}, {}

    def _line(self, state: dict, before: dict | None) -> None:
        name, phase = state["name"], state.get("phase", TRAIN)
        now = time.monotonic()
        # A return to training after a validation is no news; every other change is.
        news = before is None or (before.get("phase") != phase and phase != TRAIN)
        if news or now - self.printed_at.get(name, float("-inf")) >= self.every_s:
            print(f"{name}: {describe(state)}", file=self.stream, flush=True)
            self.printed_at[name] = now

    def _bar(self, state: dict) -> None:
        name, phase = state["name"], state.get("phase", TRAIN)
        bar = self.bars.get(name)
        if phase in (DONE, FINISHED):
            if bar is not None:
                bar.close()
                del self.bars[name]
            if phase == DONE:
                self.write(f"{name}: {describe(state)}")
            return
        done = round(fraction(state) * BAR_UNITS) if state.get("steps") else BAR_UNITS
        if bar is None:
            bar = self.bars[name] = _Bar(total=BAR_UNITS, initial=done, desc=name, file=self.stream, leave=False,
                                         dynamic_ncols=True, bar_format="{desc}: {percentage:3.0f}%|{bar}| {text}")
        bar.n = done
        bar.text = self._text(state)
        bar.refresh()

    def _text(self, state: dict) -> str:
        text = describe(state)
        if state.get("phase", TRAIN) == TRAIN:
            return text
        busy = time.monotonic() - self.phase_since.get(state["name"], time.monotonic())
        return f"{text} {SPINNER[self.spin % len(SPINNER)]} {busy:.0f} s"


_local: dict[str, Display] = {}
_local_lock = threading.Lock()


def local_display(mode: str | None = None) -> Display:
    """This process's display (one per mode), for trainings that report here."""
    with _local_lock:
        key = mode or "auto"
        # Anew when stderr was replaced since (a redirect, a test's capture): never a closed stream.
        if key not in _local or _local[key].stream is not sys.stderr:
            _local[key] = Display(mode)
        return _local[key]
