"""benchmarks/gpu_check.sh runs on a machine without a GPU too: CUDA tests skipped, the runs on the CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from gpu_check import first_crossings


def test_first_crossings_are_the_first_times_at_or_above_each_threshold():
    curve = [(1.0, 20.0), (2.0, 25.0), (3.0, 24.0), (4.0, 28.5), (5.0, 27.0)]
    assert first_crossings(curve) == {"25dB": 2.0, "28dB": 4.0, "30dB": None}


def test_the_gpu_check_runs_on_the_cpu(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--seconds", "600", "--out", str(out),
                           "trainer.steps=12",  # bounded by steps, not by a loaded machine's seconds
                           "trainer.eval_every=6",  # 12 CPU steps may end before the first 2 s validation
                           "trainer.batch_rays=256", "trainer.log_every=2", "eval.max_views=1", "eval.log_images=0",
                           "eval.periodic_views=1", "tracking.system_metrics_s=0", "field.log2_hashmap_size=12"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads((out / "gpu_check.json").read_text())
    assert figures["device"] == "cpu"
    tests = figures["cuda_tests"]
    assert tests["exit_code"] == 0 and tests["failed"] == 0 and tests["skipped"] >= 3 and tests["passed"] == 0, tests
    run = figures["runs"]["torch"]
    assert set(figures["runs"]) == {"torch"}  # no tinycudann run without CUDA
    assert run["steps"] > 0 and run["samples_per_second_median"] > 0
    assert run["val_psnr_curve"] and set(run["seconds_to"]) == {"25dB", "28dB", "30dB"}
    assert "s to 25 dB" in (out / "gpu_check.md").read_text()
