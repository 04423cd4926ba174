"""Progress as a user sees it: bars in a terminal, plain lines elsewhere, and where the results are."""

from __future__ import annotations

import fcntl
import io
import json
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time

from conftest import tiny_run_overrides

from fieldkd.platform.train.display import Display
from fieldkd.platform.train.progress import Progress
from fieldkd.platform.train.progress_text import clock, describe, fraction, seconds_left
from fieldkd.platform.tracking.where import where_to_look

STATE = {"name": "baseline", "step": 100, "steps": 3000, "elapsed": 10.0, "max_seconds": 40.0, "rate": 10.0,
         "loss": 0.0123, "psnr": 21.5, "phase": "train"}


def test_the_binding_budget_sets_fraction_and_time_left():
    assert fraction(STATE) == 0.25  # 10 of 40 s, ahead of 100 of 3000 steps
    assert seconds_left(STATE) == 30.0  # not the 290 s the steps would take at 10 step/s
    by_steps = {**STATE, "max_seconds": None}
    assert abs(fraction(by_steps) - 100 / 3000) < 1e-12
    assert seconds_left(by_steps) == 290.0
    assert seconds_left({**by_steps, "rate": None}) is None
    assert seconds_left({**STATE, "elapsed": 45.0}) == 0.0


def test_clock_and_one_line_description():
    assert [clock(s) for s in (4.4, 59.6, 187, 5659)] == ["4 s", "1:00", "3:07", "1:34:19"]
    line = describe(STATE)
    assert line == "step 100/3000, loss 0.0123, psnr 21.5, 10 step/s, 30 s left"
    assert describe({**STATE, "phase": "validating"}).endswith("validating")
    done = describe({**STATE, "phase": "done", "stopped_by": "time", "elapsed": 40.2})
    assert done.endswith("finished in 40 s, time budget reached")
    assert describe({"name": "x", "phase": "finished", "what": "evaluating", "elapsed": 6.2}) == "evaluating took 6 s"


def test_reporter_measures_speed_and_sends_phases_at_once():
    sent = []
    progress = Progress("t", steps=100, max_seconds=None, sink=sent.append)
    for step in range(1, 51):
        progress.update(step, step * 0.1)  # 10 steps per second of training time
    assert len(sent) <= 2  # throttled: this loop takes far less than SEND_EVERY_S twice
    with progress.during("validating"):
        assert sent[-1]["phase"] == "validating" and sent[-1]["step"] == 50
        assert abs(sent[-1]["rate"] - 10.0) < 1e-9
    assert sent[-1]["phase"] == "train"
    progress.close("steps")
    assert sent[-1]["phase"] == "done" and sent[-1]["stopped_by"] == "steps"
    quiet = Progress("q", steps=10, enabled=False, sink=sent.append)
    quiet.update(1, 0.1)
    quiet.close("steps")
    assert sent[-1]["name"] == "t"


def test_lines_without_carriage_returns_at_most_every_interval():
    out = io.StringIO()
    display = Display("lines", stream=out, every_s=3600)
    for step in range(1, 200):
        display.show({**STATE, "step": step})
    display.show({**STATE, "phase": "validating"})
    display.show({**STATE, "step": 300})  # back to training: no news
    display.show({**STATE, "step": 400, "phase": "done", "stopped_by": "time"})
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines == ["baseline: step 1/3000, loss 0.0123, psnr 21.5, 10 step/s, 30 s left",
                     "baseline: step 100/3000, loss 0.0123, psnr 21.5, 10 step/s, validating",
                     "baseline: step 400/3000, loss 0.0123, psnr 21.5, 10 step/s, finished in 10 s, "
                     "time budget reached"]


def bar_rows(screen: str, name: str) -> list[int]:
    """The terminal rows on which each redraw of ``name``'s bar lands (cursor moves: CR, LF, ESC[nA)."""
    row, col, rows = 0, 0, []
    for token in re.findall(r"\x1b\[[0-9;]*[A-Za-z]|\r|\n|[^\x1b\r\n]+", screen):
        if token == "\r":
            col = 0
        elif token == "\n":
            row, col = row + 1, 0
        elif token.startswith("\x1b["):
            row -= int(token[2:-1] or 1) if token.endswith("A") else 0
        else:
            if col == 0 and re.match(rf"{name}: +\d+%\|", token):
                rows.append(row)
            col += len(token)
    return rows


def test_bars_redraw_in_place_one_per_training():
    out = io.StringIO()
    display = Display("bars", stream=out)
    for step in range(1, 50):
        display.show({**STATE, "step": step})
        display.show({**STATE, "name": "expert_1", "step": step})
    text = out.getvalue()
    display.close()
    first, second = bar_rows(text, "baseline"), bar_rows(text, "expert_1")
    assert len(first) >= 49 and len(second) >= 49
    assert set(first) == {0} and set(second) == {1}  # one row each, redrawn in place
    assert "30 s left" in text


def test_where_to_look_names_the_run_the_command_and_the_url():
    lines = where_to_look("sqlite:////data/mlflow.db", "fieldkd", "3", "abc123")
    assert lines[0] == "fieldkd: run abc123 is in MLflow, experiment 'fieldkd' (id 3)"
    assert lines[1].split() == ["mlflow", "ui", "--backend-store-uri", "sqlite:////data/mlflow.db", "--host",
                                "127.0.0.1", "--port", "5000"]
    assert lines[2].endswith("http://127.0.0.1:5000/#/experiments/3/runs/abc123?workflowType=machine_learning")
    served = where_to_look("http://10.0.0.5:5000/", "fieldkd", "3", "abc123")
    assert served[-1].endswith("http://10.0.0.5:5000/#/experiments/3/runs/abc123?workflowType=machine_learning")
    assert not any("mlflow ui" in line for line in served)


def fieldkd_command(tiny_blender, tmp_path, *extra):
    overrides = tiny_run_overrides(tiny_blender, tmp_path / "out", steps=100000)
    return [sys.executable, "-m", "fieldkd.platform.cli", "run", "method=baseline", *overrides, *extra]


def env_for(tmp_path, **extra):
    return {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", **extra}


def test_not_in_a_terminal_a_few_plain_lines_then_where_the_results_are(tiny_blender, tmp_path):
    proc = subprocess.run(fieldkd_command(tiny_blender, tmp_path, "trainer.max_seconds=8"), cwd=tmp_path,
                          env=env_for(tmp_path, FIELDKD_PROGRESS_SECONDS="2"), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    err = proc.stderr
    assert "\r" not in err
    lines = err.splitlines()
    assert len(lines) <= 30, err
    assert max(len(line) for line in lines) < 400
    progress = [line for line in lines if line.startswith("baseline: step ")]
    assert 2 <= len(progress) <= 12, err  # ~8 s of training at one line per 2 s, plus start and end
    assert any(re.search(r"\d+ s left$", line) for line in progress)
    assert progress[-1].endswith("time budget reached")
    assert any(line.startswith("baseline: evaluat") for line in lines)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    run_id = summary["run_id"]
    told = "\n".join(lines[-3:])
    assert f"run {run_id} is in MLflow" in told
    assert f"mlflow ui --backend-store-uri sqlite:///{tmp_path / 'mlflow.db'} --host 127.0.0.1" in told
    assert re.search(rf"http://127\.0\.0\.1:5000/#/experiments/\d+/runs/{run_id}\?workflowType=machine_learning$", told)


def read_pty(master: int, proc: subprocess.Popen, timeout: float) -> bytes:
    found, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            found += chunk
        elif proc.poll() is not None:
            break
    return found


def test_in_a_terminal_one_bar_redrawn_in_place_with_time_left(tiny_blender, tmp_path):
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen(fieldkd_command(tiny_blender, tmp_path, "trainer.max_seconds=8"), cwd=tmp_path,
                            env=env_for(tmp_path, TERM="xterm"), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    try:
        screen = read_pty(master, proc, timeout=600).decode(errors="replace")
        out, _ = proc.communicate(timeout=60)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, screen[-3000:]
    bar_redraws = re.findall(r"\rbaseline: +\d+%\|[^\r\n]*", screen)
    assert len(bar_redraws) >= 3, screen[-3000:]
    left = [int(m) for m in re.findall(r"step \d+/100000, .*?(\d+) s left", "\n".join(bar_redraws))]
    assert left and max(left) <= 8  # the time budget binds: seconds left, not 100000 steps' worth
    # In place: the redraws land on one or two rows (a line printed above the bar moves it down once),
    # and Ray's forwarded worker output (prefixed lines) carries no bar.
    rows = bar_rows(screen, "baseline")
    assert len(rows) >= 3 and len(set(rows)) <= 3, rows
    assert not re.search(r"\(TrainingActor[^\n]*%\|", screen)
    assert "evaluating" in screen
    assert json.loads(out.decode().strip().splitlines()[-1])["run_id"]


def test_lines_say_now_and_then_that_a_long_evaluation_goes_on(monkeypatch):
    import fieldkd.platform.train.display as display_module

    monkeypatch.setattr(display_module, "BUSY_LINE_S", 0.0)
    out = io.StringIO()
    display = Display("lines", stream=out, every_s=0.5)
    display.show({"name": "baseline", "step": 0, "steps": 0, "elapsed": 0.0, "phase": "evaluating"})
    display.tick()  # too soon
    time.sleep(0.6)
    display.tick()
    lines = out.getvalue().splitlines()
    assert lines[0] == "baseline: evaluating"
    assert len(lines) == 2 and re.fullmatch(r"baseline: evaluating, \d s so far", lines[1])
