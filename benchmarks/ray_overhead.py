"""What running on Ray costs a `fieldkd run`: start-up and scheduling.

    python benchmarks/ray_overhead.py [--seconds 180]

Both sides are whole child processes with the same time-bounded training
(`trainer.max_seconds`) and the same evaluation:

- ray: `fieldkd run method=baseline ...` (starts local Ray, trains in an actor, shuts Ray down);
- inline: the same stage called in one plain Python process, no Ray at all.

overhead = wall(ray) - wall(inline). Targets: <= 10 s and <= 5% of a 3-minute run.
Writes results/ray_overhead.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import markdown_table, run_cli, write_results  # noqa: E402

INLINE = """
import sys
from fieldkd.platform.cli import compose_config
from fieldkd.platform.stages import StageRequest, fit_stage
from fieldkd.platform.tracking import Run
cfg = compose_config(sys.argv[1:])
run = Run.start(cfg["tracking"]["experiment"], "inline")
fit_stage(StageRequest("baseline", run.run_id, run.tracking_uri, cfg["output_dir"] + "/" + run.run_id, cfg))
run.finish()
"""


def run_inline(args: list[str], env: dict, cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", INLINE, *args], env={**os.environ, **env}, cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=180.0)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="fieldkd-overhead-"))
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}"}
    overrides = [f"trainer.max_seconds={args.seconds}", "trainer.steps=1000000", "trainer.progress=false",
                 "eval.lpips=false", f"output_dir={workdir / 'out'}"]
    run_cli(overrides[:1] + ["trainer.steps=1"] + overrides[2:], env=env, cwd=workdir)  # warm caches, scene
    ray_wall = run_cli(overrides, env=env, cwd=workdir)["wall_seconds"]
    inline_wall = run_inline(overrides, env, workdir)
    overhead = ray_wall - inline_wall
    share = overhead / ray_wall
    payload = {"train_seconds": args.seconds, "ray_wall": ray_wall, "inline_wall": inline_wall,
               "overhead_seconds": overhead, "overhead_share": share, "targets": {"seconds": 10, "share": 0.05}}
    table = markdown_table(["mode", "wall s"],
                           [["fieldkd run (on Ray)", ray_wall], ["same stage, no Ray", inline_wall]])
    write_results("ray_overhead", payload,
                  f"`fieldkd run method=baseline` with trainer.max_seconds={args.seconds:g}.\n\n{table}\n\n"
                  f"Ray overhead: {overhead:.1f} s = {100 * share:.1f}% of the run (targets <= 10 s, <= 5%).")


if __name__ == "__main__":
    main()
