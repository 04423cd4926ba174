"""The hash grid's compiled CPU kernel against its torch operations: speed, and the same training.

    python benchmarks/hash_kernel.py [--points 65536] [--steps 1000] [--seed 0]

1. The hash field's forward and forward+backward on ``--points`` random points, both paths,
   on 1 and 2 threads (as ``field_speed.py``).
2. Two copies of the default baseline training (``field.hash_kernel=torch`` and ``=compiled``)
   stepped in lockstep from the same seed, each step's random draws seeded alike, to
   ``--steps``: the largest parameter difference between them along the way (zero where the
   kernel rounds as torch's embedding_bag does), each copy's training seconds and its test PSNR.
Writes results/hash_kernel.md and .json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import command_line, markdown_table, write_results  # noqa: E402
from field_speed import bench_field  # noqa: E402
from step_speed import Run, scene_of  # noqa: E402

from fieldkd.platform.config import compose_config  # noqa: E402
from fieldkd.platform.evaluate.views import evaluate_views  # noqa: E402

PATHS = ("torch", "compiled")


def field_speeds(points: int) -> list[dict]:
    rows = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for kernel in PATHS:
            r = bench_field("hash", {"backend": "torch", "hash_kernel": kernel}, points, repeats=3)
            rows.append({"threads": threads, "kernel": kernel, **r})
    torch.set_num_threads(1)
    return rows


def lockstep(steps: int, seed: int) -> dict:
    cfgs = {k: compose_config(["method=baseline", f"field.hash_kernel={k}", f"seed={seed}"]) for k in PATHS}
    scene = scene_of(cfgs["torch"])
    runs = {k: Run(k, cfgs[k], scene) for k in PATHS}
    seconds = dict.fromkeys(PATHS, 0.0)
    largest = 0.0
    for step in range(steps):
        for kernel, run in runs.items():
            torch.manual_seed(seed * 100003 + step)  # the same rays and jitter for both copies
            phases, _ = run.step()
            seconds[kernel] += sum(phases.values())
        fields = [dict(runs[k].task.field.named_parameters()) for k in PATHS]
        largest = max(largest, max((fields[0][n] - fields[1][n]).abs().max().item() for n in fields[0]))
    test = scene.split("test")
    views = list(range(min(10, len(test))))
    psnr = {k: evaluate_views(r.task.renderer, r.task.field, test, views=views).metrics["test/psnr"]
            for k, r in runs.items()}
    return {"steps": steps, "seed": seed, "largest_parameter_difference": largest,
            "training_seconds": seconds, "test_psnr": psnr, "eval_views": len(views)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=65536)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    load_before = " ".join(f"{v:.1f}" for v in os.getloadavg())
    speeds = field_speeds(args.points)
    same = lockstep(args.steps, args.seed)
    load_after = " ".join(f"{v:.1f}" for v in os.getloadavg())
    rows = []
    for threads in (1, 2):
        ops, c = [next(r for r in speeds if r["threads"] == threads and r["kernel"] == k) for k in PATHS]
        for key, label in (("forward_s", "forward"), ("fwd_bwd_s", "forward+backward"), ("density_s", "density")):
            rows.append([threads, label, f"{ops[key]:.3f}", f"{c[key]:.3f}", f"{ops[key] / c[key]:.2f}x"])
    speed_table = markdown_table(["threads", f"hash field, {args.points} points", "torch operations (s)",
                                  "compiled kernel (s)", "speed-up"], rows)
    secs, psnr = same["training_seconds"], same["test_psnr"]
    text = (f"# The hash grid's compiled CPU kernel against its torch operations\n\n`{command_line()}`\n\n"
            f"Load average {load_before} before, {load_after} after ({os.cpu_count()} cores).\n\n{speed_table}\n\n"
            f"Two default baseline trainings, torch operations and compiled kernel, stepped in lockstep "
            f"({same['steps']} steps, seed {same['seed']}, each step's draws seeded alike, 1 thread): largest "
            f"parameter difference at any step **{same['largest_parameter_difference']:.3g}**; training "
            f"{secs['torch']:.1f} s against {secs['compiled']:.1f} s ({secs['torch'] / secs['compiled']:.2f}x); "
            f"test PSNR on {same['eval_views']} views {psnr['torch']:.3f} and {psnr['compiled']:.3f} dB.")
    write_results("hash_kernel", {"command": command_line(), "load_average_before": load_before,
                                  "load_average_after": load_after, "field_speed": speeds, "lockstep": same}, text)


if __name__ == "__main__":
    main()
