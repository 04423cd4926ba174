"""The GPU check: CUDA tests, hash training samples/s, and time to 25 / 28 / 30 dB on the default scene.

    bash benchmarks/gpu_check.sh [--seconds 90] [--out DIR] [overrides...]

On a GPU machine (``device=cuda``, ``trainer=gpu``) it runs, in well under 8 minutes:

1. the CUDA-marked tests (``pytest -m cuda``: CPU/GPU parity of the hash field and the MVS network,
   tinycudann against the torch hash grid where tinycudann is importable);
2. ``fieldkd run method=baseline field=hash trainer=gpu`` on the default scene for ``--seconds``,
   with ``val/psnr`` every 2 s: the training samples/s the trainer logged and the seconds since the
   stage's run started at which ``val/psnr`` first reached 25, 28 and 30 dB;
3. the same with ``field.backend=tcnn`` when tinycudann is importable.

Without a GPU it runs the same on the CPU (the CUDA tests skip, the runs use ``device=cpu``), so the
script itself is tested in CI. Figures go to ``gpu_check.json`` and ``gpu_check.md`` in ``--out``
(default: ``$OUT`` when set, else ``benchmarks/results``). Extra ``key=value`` arguments are passed to
both runs (for a smaller check).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, command_line, markdown_table, run_cli

ROOT = Path(__file__).resolve().parents[1]
THRESHOLDS = (25.0, 28.0, 30.0)
# The files with CUDA-marked tests (collecting the whole suite would take longer than they run).
CUDA_TEST_FILES = ("tests/test_cuda.py", "tests/test_fields_hashgrid.py")


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"


def cuda_tests() -> dict:
    """``pytest -m cuda``: counts of passed, failed and skipped tests, from pytest's last line."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", *CUDA_TEST_FILES],
                          cwd=ROOT, capture_output=True, text=True, check=False)
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?)", last)}
    return {"exit_code": proc.returncode, "summary": last, **{k: counts.get(k, 0) for k in ("passed", "failed", "skipped")},
            "failures": proc.stdout[-3000:] if proc.returncode not in (0, 5) else ""}


def first_crossings(curve: list[tuple[float, float]], thresholds=THRESHOLDS) -> dict[str, float | None]:
    """Seconds at which ``value`` first reaches each threshold, from (seconds, value) points in time order."""
    return {f"{t:g}dB": next((s for s, v in curve if v >= t), None) for t in thresholds}


def stage_curves(tracking_uri: str, run_id: str) -> tuple[list[tuple[float, float]], list[float], dict]:
    """The training stage under the summary's run: (seconds since it started, val/psnr), its samples/s
    and its final metrics."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    parent = client.get_run(run_id)
    runs = [parent, *client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{run_id}'")]
    for run in runs:  # the training stage: the run with training speeds (a short one may have no val/psnr yet)
        rates = [m.value for m in client.get_metric_history(run.info.run_id, "train/samples_per_second")]
        if rates:
            start = run.info.start_time
            history = client.get_metric_history(run.info.run_id, "val/psnr")
            curve = sorted(((m.timestamp - start) / 1000.0, m.value) for m in history)
            return curve, rates, run.data.metrics
    return [], [], {}


def training_check(label: str, device: str, seconds: float, overrides: list[str], workdir: Path) -> dict:
    uri = f"sqlite:///{workdir / f'{label}.db'}"
    args = ["method=baseline", "field=hash", "trainer=gpu", f"device={device}", f"trainer.max_seconds={seconds}",
            "trainer.steps=100000000", "trainer.eval_every_seconds=2", "trainer.progress=false",
            "eval.lpips=false", f"output_dir={workdir / label}", *overrides]
    summary = run_cli(args, env={"MLFLOW_TRACKING_URI": uri}, cwd=workdir)
    curve, rates, final = stage_curves(uri, summary["run_id"])
    rates = sorted(rates)
    return {"command": "fieldkd run " + " ".join(args), "test_psnr": summary["metrics"].get("test/psnr"),
            "steps": final.get("train/steps"), "wall_seconds": summary["wall_seconds"],
            "samples_per_second_median": rates[len(rates) // 2] if rates else None,
            "best_val_psnr": max((v for _, v in curve), default=None),
            "seconds_to": first_crossings(curve), "val_psnr_curve": curve}


def report(figures: dict) -> str:
    rows = []
    for label, run in figures["runs"].items():
        reached = [run["seconds_to"][f"{t:g}dB"] for t in THRESHOLDS]
        rows.append([label, run["samples_per_second_median"] or float("nan"), run["best_val_psnr"] or float("nan"),
                     *[f"{s:.1f}" if s is not None else "not reached" for s in reached]])
    table = markdown_table(["field backend", "train samples/s (median)", "best val PSNR (dB)",
                            *[f"s to {t:g} dB" for t in THRESHOLDS]], rows)
    tests = figures["cuda_tests"]
    return (f"# GPU check on {figures['device_name']}\n\n`{figures['command']}`\n\n"
            f"CUDA tests: {tests['summary'] or 'none ran'}\n\n{table}\n\n"
            f"Seconds are since the training stage's run started; each run had {figures['seconds']:g} s.\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--out", default=os.environ.get("OUT") or str(RESULTS))
    parser.add_argument("--skip-tests", action="store_true")
    args, overrides = parser.parse_known_args()
    device = "cuda" if cuda_available() else "cpu"
    workdir = Path(tempfile.mkdtemp(prefix="fieldkd-gpu-check-"))
    figures = {"command": command_line(), "device": device, "device_name": device_name(), "seconds": args.seconds,
               "cuda_tests": {"summary": "", "passed": 0, "failed": 0, "skipped": 0} if args.skip_tests
               else cuda_tests(), "runs": {}}
    figures["runs"]["torch"] = training_check("torch", device, args.seconds, ["field.backend=torch", *overrides],
                                              workdir)
    if device == "cuda" and importlib.util.find_spec("tinycudann") is not None:
        figures["runs"]["tcnn"] = training_check("tcnn", device, args.seconds, ["field.backend=tcnn", *overrides],
                                                 workdir)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(figures, indent=2) + "\n")
    text = report(figures)
    (out / "gpu_check.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
