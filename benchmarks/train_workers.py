"""Ray Train students: step time with 2 workers against 1 worker.

    python benchmarks/train_workers.py [--steps 300] [--batch 1024]

Both go through the same TorchTrainer path (Parquet shards, Ray Data, DDP);
the global batch and the step count are equal, so the ratio is the price or
gain of splitting one step over two processes. On CPU each worker gets half
the cores. Writes results/train_workers.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import markdown_table, write_results  # noqa: E402

from fieldkd.platform.cli import compose_config  # noqa: E402
from fieldkd.platform.compute.session import init_ray  # noqa: E402
from fieldkd.platform.compute.students import fit_distributed  # noqa: E402
from fieldkd.platform.stages import StageRequest  # noqa: E402
from fieldkd.platform.tracking import Run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=1024)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="fieldkd-train-workers-"))
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    init_ray(dashboard=True)
    parent = Run.start("benchmarks", "train_workers", tracking_uri=uri)
    results, rows = {}, []
    for workers in (1, 2):
        cfg = compose_config([f"compute.workers={workers}", f"trainer.steps={args.steps}",
                              f"trainer.batch_rays={args.batch}", "trainer.eval_every=0", "trainer.progress=false",
                              "eval.max_views=4", "eval.log_images=0", "eval.lpips=false"])
        name = f"workers_{workers}"
        outcome = fit_distributed(StageRequest(name, parent.child(name).run_id, uri, str(workdir / "out"), cfg))
        step_ms = 1000 * outcome.seconds / outcome.steps
        results[name] = {"steps": outcome.steps, "seconds": outcome.seconds, "step_ms": step_ms,
                         "test/psnr": outcome.metrics["test/psnr"]}
        rows.append([workers, outcome.steps, step_ms, outcome.metrics["test/psnr"]])
    ratio = results["workers_2"]["step_ms"] / results["workers_1"]["step_ms"]
    results["ratio_2_to_1"] = ratio
    table = markdown_table(["workers", "steps", "ms per step", "test PSNR"], rows)
    write_results("train_workers", results,
                  f"Ray Train on CPU (gloo), default scene, global batch {args.batch} rays.\n\n{table}\n\n"
                  f"step time, 2 workers / 1 worker = {ratio:.2f}")


if __name__ == "__main__":
    main()
