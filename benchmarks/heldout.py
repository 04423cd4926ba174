"""The held-out target: fieldkd's hash baseline against the plain loop, same wall time.

    python benchmarks/heldout.py [--seconds 180]

Generates the `heldout` procedural object scene (80x80, 60 training views, the
shape of the evaluation scene we are measured on), runs
`fieldkd run method=baseline field=hash scene=blender scene.path=DIR
trainer.max_seconds=SECONDS`, then the reference loop for the same time.
Writes results/heldout.json and results/heldout.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import hash_against_loop, markdown_table, write_results  # noqa: E402

from fieldkd.platform.scenes import write_scene  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--scene", default="heldout")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="fieldkd-heldout-"))
    scene_dir = write_scene(args.scene, workdir / "scene", "blender", width=80, height=80,
                            n_train=60, n_val=10, n_test=20)
    result = hash_against_loop(scene_dir, workdir, args.seconds)
    summary, reference, gain = result["fieldkd"], result["reference"], result["gain_db"]
    table = markdown_table(
        ["loop", "test PSNR", "test SSIM", "wall s"],
        [["fieldkd baseline (hash)", summary["metrics"]["test/psnr"], summary["metrics"]["test/ssim"],
          summary["wall_seconds"]],
         ["plain reference loop (hash, 48 samples, near 2 / far 6)", reference["test/psnr"],
          reference["test/ssim"], reference["train_seconds"]]])
    table = f"Scene `{args.scene}` 80x80, 60 train views, {args.seconds:.0f} s each, 2 CPU cores.\n\n{table}\n\n" \
            f"Gain: {gain:+.2f} dB (target: at least +2.5 dB)\n"
    write_results(f"heldout_{args.scene}", {"seconds": args.seconds, "fieldkd": summary,
                                            "reference": reference, "gain_db": gain}, table)


if __name__ == "__main__":
    main()
