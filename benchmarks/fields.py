"""Train every field type on the default scene for a fixed wall budget.

    python benchmarks/fields.py [--seconds 120] [--fields hash,mlp,kplanes,vm,grid]

Each field is trained by the real CLI in a child process (so peak memory is
that run's own), next to the plain PyTorch reference loop for the same budget.
Writes results/fields.json and results/fields.md.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import markdown_table, metric_history, run_cli, write_results  # noqa: E402
from reference_loop import train_reference  # noqa: E402

from fieldkd.platform.scenes import default_scene_dir, load_scene  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--fields", default="hash,mlp,kplanes,vm,grid")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="fieldkd-bench-"))
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    rows, results = [], {}
    for name in args.fields.split(","):
        summary = run_cli([f"field={name}", f"trainer.max_seconds={args.seconds}", "trainer.steps=1000000",
                           "trainer.eval_every=100", f"output_dir={workdir / 'outputs'}", "trainer.progress=false"],
                          env={"MLFLOW_TRACKING_URI": uri}, cwd=workdir)
        steps = metric_history(summary["run_id"], "train/steps", uri)[-1][1]
        speed = [v for _, v in metric_history(summary["run_id"], "train/samples_per_second", uri)]
        val = metric_history(summary["run_id"], "val/psnr", uri)
        entry = {"steps": int(steps), "samples_per_second": sum(speed) / len(speed),
                 "test/psnr": summary["metrics"]["test/psnr"], "test/ssim": summary["metrics"]["test/ssim"],
                 "peak_rss_gib": summary["peak_rss_gib"], "val_psnr_curve": val,
                 "wall_seconds": summary["wall_seconds"]}
        results[name] = entry
        rows.append([name, entry["steps"], entry["samples_per_second"], entry["test/psnr"], entry["test/ssim"],
                     val[0][1] if val else float("nan"), val[-1][1] if val else float("nan"),
                     entry["peak_rss_gib"]])
        print(rows[-1], flush=True)

    scene = load_scene("blender", default_scene_dir("default", "blender"))
    reference = train_reference(scene, args.seconds)
    reference["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    results["reference"] = reference
    rows.append(["reference (plain loop, hash)", reference["steps"], reference["samples_per_second"],
                 reference["test/psnr"], reference["test/ssim"], "", "", reference["peak_rss_gib"]])
    gain = results["hash"]["test/psnr"] - reference["test/psnr"] if "hash" in results else None
    table = markdown_table(
        ["field", "steps", "samples/s", "test PSNR", "test SSIM", "first val PSNR", "last val PSNR", "peak RSS GiB"],
        rows)
    table = (f"Default scene, {args.seconds:.0f} s wall budget per field, 2 CPU cores.\n\n{table}\n\n"
             + (f"fieldkd hash vs the plain reference loop: {gain:+.2f} dB\n" if gain is not None else ""))
    write_results("fields", {"seconds": args.seconds, "results": results, "hash_gain_db": gain}, table)


if __name__ == "__main__":
    main()
