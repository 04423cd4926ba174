"""What a training's progress state says, as numbers and as one line of text.

A state is a plain dict: ``name``, ``step``, ``steps``, ``elapsed`` (seconds),
``max_seconds`` (None: no time budget), ``rate`` (steps per second, recent),
``loss``, ``psnr``, ``phase`` and, once done, ``stopped_by``. Phases:
``train``; ``done`` (training over); any other text is work without steps
(``validating``, ``evaluating``), ended by ``finished``.
"""

from __future__ import annotations

TRAIN, DONE, FINISHED = "train", "done", "finished"


def fraction(state: dict) -> float:
    """How far the training is, by whichever budget binds first (as the learning-rate schedule sees it)."""
    done = state["step"] / state["steps"] if state["steps"] else 0.0
    if state.get("max_seconds"):
        done = max(done, state["elapsed"] / state["max_seconds"])
    return min(1.0, done)


def seconds_left(state: dict) -> float | None:
    """Time until the first budget ends: the steps left at the current speed, or the time budget left."""
    found = []
    rate = state.get("rate") or 0.0
    if rate > 0:
        found.append((state["steps"] - state["step"]) / rate)
    if state.get("max_seconds"):
        found.append(state["max_seconds"] - state["elapsed"])
    return max(0.0, min(found)) if found else None


def clock(seconds: float) -> str:
    """45 s, 3:07, 1:34:19."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}:{secs:02d}"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def describe(state: dict) -> str:
    """One line about a training: step, loss, PSNR, speed and time left, or what it is doing."""
    phase = state.get("phase", TRAIN)
    if phase == FINISHED:
        return f"{state.get('what', 'work')} took {clock(state['elapsed'])}"
    if not state.get("steps"):
        return phase
    parts = [f"{state.get('unit', 'step')} {state['step']}/{state['steps']}"]
    for key in ("loss", "psnr"):
        if state.get(key) is not None:
            parts.append(f"{key} {state[key]:.4g}")
    if state.get("rate"):
        parts.append(f"{state['rate']:.3g} {state.get('unit', 'step')}/s")
    if phase == TRAIN:
        left = seconds_left(state)
        if left is not None:
            parts.append(f"{clock(left)} left")
    elif phase == DONE:
        parts.append(f"finished in {clock(state['elapsed'])}")
        if state.get("stopped_by") == "time":
            parts.append("time budget reached")
    else:
        parts.append(phase)
    return ", ".join(parts)
