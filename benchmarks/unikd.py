"""UNIKD against its baselines on the indoor scenes, and the uncertainty-threshold sweep.

    python benchmarks/unikd.py [--scenes indoor,indoor_b] [--chunks 5] [--steps 600]
        [--sweep-samples 6] [--workdir /tmp/fieldkd-bench/unikd] [--name unikd] [-- extra overrides]

1. On each scene: `fieldkd run method=unikd scene=NAME unikd.chunks=T trainer.steps=S`
   with every baseline (finetune, nofilter, joint) in the same pipeline.
   Targets: UNIKD's PSNR on chunk 0's views after the last chunk >= fine-tuning's
   + 2 dB; UNIKD's all-view PSNR within 2 dB of joint training; UNIKD's Chamfer
   distance below fine-tuning's. The forgetting matrices are copied to
   results/NAME_<scene>_forgetting.png.
2. On the first scene: `fieldkd sweep tune_space=unikd_uncertainty unikd.baselines=[]`
   (ASHA on the all-view PSNR reported after every chunk); reported: the best
   threshold and KD weight, and its final PSNR against the default's (the UNIKD
   stream of part 1, same budget).

Finished runs are kept in WORKDIR/unikd.progress.json, so re-running resumes.
Writes results/NAME.{json,md} and logs them to an MLflow run `benchmark-NAME`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, markdown_table, write_results  # noqa: E402
from pvd_pairs import LEAN, Work, log_benchmark_run  # noqa: E402

NAME = "unikd"
GAIN_OVER_FINETUNE_DB = 2.0
JOINT_GAP_DB = 2.0
STREAMS = ("unikd", "finetune", "nofilter", "joint")


def prefix(stream: str) -> str:
    return "" if stream == "unikd" else f"{stream}/"


def compare(work: Work, scene: str, args) -> dict:
    summary = work.run(["method=unikd", f"scene.generate={scene}", f"unikd.chunks={args.chunks}",
                        f"trainer.steps={args.steps}", *args.overrides], f"compare-{scene}")
    m = summary["metrics"]
    keys = ("test/psnr", "chunk_0/test/psnr", "mesh/chamfer", "mesh/fscore", "forgetting/mean")
    found = {s: {k: m.get(prefix(s) + k) for k in keys} for s in STREAMS}
    client = work.client()
    folder = work.path / "artifacts" / scene
    folder.mkdir(parents=True, exist_ok=True)
    figure = client.download_artifacts(summary["run_id"], "forgetting/matrix.png", str(folder))
    table = client.download_artifacts(summary["run_id"], "forgetting/matrix.tsv", str(folder))
    return {"run_id": summary["run_id"], "seconds": summary["seconds"], "streams": found,
            "matrix_png": figure, "matrix_tsv": Path(table).read_text()}


def sweep(work: Work, scene: str, args) -> dict:
    cmd = [sys.executable, "-m", "fieldkd.platform.cli", "sweep", "tune_space=unikd_uncertainty", "method=unikd",
           f"scene.generate={scene}", "unikd.baselines=[]", f"unikd.chunks={args.chunks}",
           f"trainer.steps={args.steps}", f"tune.num_samples={args.sweep_samples}", *LEAN, *args.overrides,
           f"output_dir={work.path / 'outputs'}"]
    log = work.path / "logs" / "sweep.log"
    started = time.perf_counter()
    with open(log, "w") as err:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True, cwd=work.path, check=False,
                              env={**os.environ, "MLFLOW_TRACKING_URI": work.uri})
    if proc.returncode != 0:
        raise RuntimeError(f"the sweep exited with {proc.returncode} (log: {log})")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    summary["wall_seconds"] = time.perf_counter() - started
    return summary


def report(results: dict, swept: dict | None, args) -> tuple[dict, str]:
    rows = []
    for scene, r in results.items():
        s = r["streams"]
        gain = s["unikd"]["chunk_0/test/psnr"] - s["finetune"]["chunk_0/test/psnr"]
        gap = s["joint"]["test/psnr"] - s["unikd"]["test/psnr"]
        chamfer_ok = s["unikd"]["mesh/chamfer"] is not None and s["finetune"]["mesh/chamfer"] is not None and \
            s["unikd"]["mesh/chamfer"] < s["finetune"]["mesh/chamfer"]
        rows.append([scene, s["unikd"]["chunk_0/test/psnr"], s["finetune"]["chunk_0/test/psnr"],
                     s["nofilter"]["chunk_0/test/psnr"], f"{gain:+.2f}",
                     "yes" if gain >= GAIN_OVER_FINETUNE_DB else "no",
                     s["unikd"]["test/psnr"], s["finetune"]["test/psnr"], s["nofilter"]["test/psnr"],
                     s["joint"]["test/psnr"], f"{gap:.2f}", "yes" if gap <= JOINT_GAP_DB else "no",
                     s["unikd"]["mesh/chamfer"], s["finetune"]["mesh/chamfer"], s["joint"]["mesh/chamfer"],
                     "yes" if chamfer_ok else "no"])
    lines = [f"UNIKD, {args.chunks} chunks x {args.steps} steps (joint: {args.chunks} x {args.steps} steps), "
             "2 CPU cores. PSNR in dB on the test views (every 8th frame of the path); Chamfer in metres "
             "(world units of the scene).", "",
             markdown_table(["scene", "chunk 0: UNIKD", "chunk 0: finetune", "chunk 0: nofilter", "gain",
                             f">= +{GAIN_OVER_FINETUNE_DB:g}", "all: UNIKD", "all: finetune", "all: nofilter",
                             "all: joint", "joint - UNIKD", f"<= {JOINT_GAP_DB:g}", "Chamfer UNIKD",
                             "Chamfer finetune", "Chamfer joint", "UNIKD < finetune"], rows)]
    extra = " ".join(args.overrides)
    lines += ["", f"Command: `python benchmarks/unikd.py --scenes {','.join(results)} --chunks {args.chunks} "
                  f"--steps {args.steps} --sweep-samples {args.sweep_samples}{' ' + extra if extra else ''}`"]
    payload = {"chunks": args.chunks, "steps": args.steps, "scenes": results}
    if swept:
        scene = next(iter(results))
        default = results[scene]["streams"]["unikd"]["test/psnr"]
        best = swept["metrics"].get("test/psnr")
        payload["sweep"] = {**swept, "default_psnr": default, "gain_db": best - default if best else None}
        config = swept.get("config") or swept.get("best_config") or {}
        lines += ["", f"Sweep on `{scene}` ({args.sweep_samples} trials, ASHA on `test/psnr` after each chunk): "
                      f"best {json.dumps(config)} -> {best:.2f} dB; default (threshold 0.02, KD weight 1, floor 0.1) "
                      f"{default:.2f} dB: gain {best - default:+.2f} dB."]
    return payload, "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", default="indoor,indoor_b")
    parser.add_argument("--chunks", type=int, default=5)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--sweep-samples", type=int, default=6, help="0: no sweep")
    parser.add_argument("--workdir", default="/tmp/fieldkd-bench/unikd")
    parser.add_argument("--name", default=NAME)
    parser.add_argument("overrides", nargs="*", help="more fieldkd overrides for every run")
    args = parser.parse_args()

    work = Work(args.workdir, NAME)
    tag = f"T{args.chunks}/{args.steps}steps/{' '.join(args.overrides)}"
    results = {scene: work.cached(f"compare/{scene}/{tag}", lambda scene=scene: compare(work, scene, args))
               for scene in args.scenes.split(",") if scene}
    swept = None
    if args.sweep_samples:
        first = next(iter(results))
        swept = work.cached(f"sweep/{first}/{tag}/{args.sweep_samples}", lambda: sweep(work, first, args))
    payload, table = report(results, swept, args)
    for scene, r in results.items():
        shutil.copyfile(r["matrix_png"], RESULTS / f"{args.name}_{scene}_forgetting.png")
        payload["scenes"][scene] = {**r, "matrix_png": f"{args.name}_{scene}_forgetting.png"}  # no machine path
    write_results(args.name, payload, table)
    metrics = {}
    for scene, r in results.items():
        s = r["streams"]
        metrics[f"{scene}/chunk0_gain_db"] = s["unikd"]["chunk_0/test/psnr"] - s["finetune"]["chunk_0/test/psnr"]
        metrics[f"{scene}/joint_gap_db"] = s["joint"]["test/psnr"] - s["unikd"]["test/psnr"]
    log_benchmark_run(work, args.name, {"chunks": args.chunks, "steps": args.steps}, {"workdir": "WORKDIR"}, metrics,
                      lambda _: [RESULTS / f"{args.name}.json", RESULTS / f"{args.name}.md",
                                 *[RESULTS / f"{args.name}_{s}_forgetting.png" for s in results]])


if __name__ == "__main__":
    main()
