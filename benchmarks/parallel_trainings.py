"""Two independent trainings: in parallel on the actor pool versus one after the other.

    python benchmarks/parallel_trainings.py [--steps 600] [--field hash]

Parallel: both at once, 1 CPU each. Sequential: one after the other, all
CPUs each (2 on the reference machine). Same steps, same scene (the bundled
default), fresh checkpoints for every training. Target: parallel <= 0.65x.
Writes results/parallel_trainings.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import markdown_table, write_results  # noqa: E402

from fieldkd.platform.cli import compose_config  # noqa: E402
from fieldkd.platform.compute.pool import Training, run_trainings  # noqa: E402
from fieldkd.platform.compute.session import init_ray, machine_cpus  # noqa: E402
from fieldkd.platform.stages import StageRequest, fit_stage  # noqa: E402
from fieldkd.platform.tracking import Run  # noqa: E402


def trainings(cfg, parent: Run, names, num_cpus, out: Path) -> list[Training]:
    return [Training(n, fit_stage, {"request": StageRequest(n, parent.child(n).run_id, parent.tracking_uri,
                                                            str(out), cfg)}, num_cpus=num_cpus) for n in names]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--field", default="hash")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="fieldkd-parallel-"))
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    cfg = compose_config([f"field={args.field}", f"trainer.steps={args.steps}", "trainer.eval_every=0",
                          "trainer.progress=false", "eval.max_views=4", "eval.log_images=0", "eval.lpips=false"])
    cpus = machine_cpus()
    init_ray()
    parent = Run.start("benchmarks", "parallel_trainings", tracking_uri=uri)

    started = time.perf_counter()
    sequential = {}
    for name in ("seq_a", "seq_b"):
        sequential.update(run_trainings(trainings(cfg, parent, [name], cpus, workdir / "out")))
    sequential_s = time.perf_counter() - started

    started = time.perf_counter()
    parallel = run_trainings(trainings(cfg, parent, ["par_a", "par_b"], 1, workdir / "out"))
    parallel_s = time.perf_counter() - started
    a, b = parallel["par_a"], parallel["par_b"]
    overlap = max(0.0, min(a.finished, b.finished) - max(a.started, b.started))

    ratio = parallel_s / sequential_s
    payload = {"steps": args.steps, "field": args.field, "cpus": cpus, "sequential_seconds": sequential_s,
               "parallel_seconds": parallel_s, "ratio": ratio, "target_ratio": 0.65, "overlap_seconds": overlap,
               "psnr": {n: o.result.metrics["test/psnr"] for n, o in {**parallel, **sequential}.items()}}
    table = markdown_table(["mode", "CPUs per training", "wall s (2 trainings)", "ratio"],
                           [["sequential", cpus, sequential_s, 1.0], ["parallel", 1, parallel_s, ratio]])
    write_results("parallel_trainings", payload,
                  f"Two {args.field} trainings of {args.steps} steps on the default scene, {cpus} CPUs.\n\n{table}\n\n"
                  f"parallel / sequential = {ratio:.2f} (target <= 0.65); the parallel runs overlapped "
                  f"{overlap:.1f} s.")


if __name__ == "__main__":
    main()
