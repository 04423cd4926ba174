"""Shared benchmark plumbing: run the CLI as a child process and measure it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def run_cli(args: list[str], env: dict | None = None, cwd: str | Path | None = None) -> dict:
    """Run ``fieldkd run ARGS``; return its summary plus wall time and peak RSS (GiB)."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "fieldkd.platform.cli", "run", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env={**os.environ, **(env or {})}, cwd=cwd, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"fieldkd run {' '.join(args)} exited with {proc.returncode}")
    summary = json.loads(out.strip().splitlines()[-1])
    summary["wall_seconds"] = time.perf_counter() - started
    summary["peak_rss_gib"] = usage.ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux
    return summary


def resumable_run(workdir: Path, name: str, args: list[str]) -> dict:
    """The summary of one ``fieldkd run ARGS`` under ``workdir`` (its outputs and MLflow store there),
    read back from ``workdir/runs/NAME.json`` when it finished before: a rerun skips it."""
    done = workdir / "runs" / f"{name}.json"
    if done.exists():
        return json.loads(done.read_text())
    summary = run_cli([*args, f"output_dir={workdir / 'outputs'}", "trainer.progress=false",
                       "tracking.system_metrics_s=0"],
                      env={"MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}"}, cwd=workdir)
    done.parent.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(summary, indent=1))
    return summary


def stage_metrics(summary: dict, stage: str) -> dict:
    """The metrics a pipeline's summary gives for ``stage`` (``stage/KEY``), unprefixed."""
    prefix = f"{stage}/"
    return {k[len(prefix):]: v for k, v in summary["metrics"].items() if k.startswith(prefix)}


def command_line() -> str:
    """How this benchmark was started, for its results: ``python benchmarks/NAME.py ARGS``."""
    return " ".join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]])


def metric_history(run_id: str, key: str, tracking_uri: str) -> list[tuple[int, float]]:
    from mlflow.tracking import MlflowClient

    history = MlflowClient(tracking_uri).get_metric_history(run_id, key)
    return sorted((m.step, m.value) for m in history)


def write_results(name: str, payload: dict, table: str, out_dir: Path | None = None) -> None:
    """``NAME.json`` and ``NAME.md`` into ``out_dir`` (default ``results/``); the table is printed too."""
    out = Path(out_dir) if out_dir is not None else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (out / f"{name}.md").write_text(table + "\n")
    print(table)


def markdown_table(header: list[str], rows: list[list]) -> str:
    def fmt(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def hash_against_loop(scene_dir: Path, workdir: Path, seconds: float,
                      loop_near_far: tuple[float, float] | None = None, overrides: list[str] = ()) -> dict:
    """fieldkd's hash baseline on the blender scene in ``scene_dir`` for ``seconds`` of training, then the
    plain reference loop (``reference_loop.py``) on it for the same seconds.

    The CLI's outputs and MLflow store go under ``workdir``. ``loop_near_far``: the loop's sampling
    range (its near 2 / far 6 when None); ``overrides``: more ``KEY=VALUE`` for the run. Returns the CLI summary plus its ``train/steps`` and
    ``train/seconds`` (``fieldkd``), the loop's result (``reference``), the arguments of the
    ``fieldkd run`` (``args``, with the scene folder as DIR) and ``gain_db`` (fieldkd - loop, test PSNR).
    """
    import reference_loop  # torch and the engine: only for the benchmarks that train
    from mlflow.tracking import MlflowClient

    from fieldkd.platform.scenes import load_scene

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    shown = ["method=baseline", "field=hash", "scene=blender", "scene.path=DIR", f"trainer.max_seconds={seconds:g}",
             "trainer.steps=1000000", *overrides]
    args = [f"scene.path={scene_dir}" if a == "scene.path=DIR" else a for a in shown]
    summary = run_cli([*args, f"output_dir={workdir / 'outputs'}", "trainer.progress=false"],
                      env={"MLFLOW_TRACKING_URI": uri}, cwd=workdir)
    final = MlflowClient(uri).get_run(summary["run_id"]).data.metrics
    summary["train/steps"] = int(final.get("train/steps", 0))
    summary["train/seconds"] = final.get("train/seconds")
    saved = reference_loop.NEAR, reference_loop.FAR  # the loop's render() reads them at every step
    if loop_near_far is not None:
        reference_loop.NEAR, reference_loop.FAR = loop_near_far
    try:
        reference = reference_loop.train_reference(load_scene("blender", scene_dir), seconds)
    finally:
        reference_loop.NEAR, reference_loop.FAR = saved
    reference["near"], reference["far"] = loop_near_far or saved
    return {"fieldkd": summary, "reference": reference, "args": shown,
            "gain_db": summary["metrics"]["test/psnr"] - reference["test/psnr"]}

