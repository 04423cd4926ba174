"""DaC against one model on all views, and the parallel expert phase against a sequential one.

    python benchmarks/dac.py [--experts 4] [--expert-seconds 60] [--distill-seconds 60] [--finetune-seconds 60]
        [--scenes default,heldout] [--parallel-experts 2] [--parallel-steps 600]
        [--workdir /tmp/fieldkd-bench/dac] [--name dac]

1. Quality, on each scene (`default`: the bundled scene; other names: generated
   object scenes, 80x80 with 60 training and 20 test views, as in heldout.py):
   `fieldkd run method=dac dac.experts=K dac.with_baseline=true` with each
   stage's wall budget; the baseline takes as many steps as distillation plus
   fine-tuning (target: fine-tuned student >= baseline; aim +0.5 dB). The
   per-test-view PSNR of student, distilled student and baseline is plotted.
2. Parallel experts on this machine: the expert phase (`time/experts`, from
   the pool's start to its last expert's end) of K_par experts with a step
   budget, once concurrently (the pool's default: the CPUs split among them)
   and once one after another (`compute.cpus_per_training` = every CPU, so
   the pool queues them). Ratio = concurrent / sequential (target <= 0.65).
   Also reported: the sum of the concurrent experts' own training seconds,
   i.e. what running them one after another *on one core each* would take.

Finished runs are kept in WORKDIR/dac.progress.json, so re-running resumes.
Writes results/NAME.{json,md,png} and logs them to an MLflow run `benchmark-NAME`
in WORKDIR/mlflow.db.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, markdown_table, write_results  # noqa: E402
from pvd_pairs import HUGE_STEPS, Work, child_runs, log_benchmark_run  # noqa: E402
from pvd_speed import heldout_scene  # noqa: E402

NAME = "dac"
TARGET_RATIO = 0.65
AIM_GAIN_DB = 0.5
CURVES = ("student", "student_distilled", "baseline")


def scene_args(work: Work, scene: str) -> list[str]:
    return [] if scene == "default" else ["scene=blender", f"scene.path={heldout_scene(work, scene)}"]


def per_view_psnr(work: Work, run_id: str) -> list[float]:
    from mlflow.tracking import MlflowClient

    path = MlflowClient(work.uri).download_artifacts(run_id, "renders/test_per_view.tsv", str(work.path))
    header, *rows = [line.split("\t") for line in Path(path).read_text().splitlines() if line.strip()]
    values = [float(row[header.index("psnr")]) for row in rows]
    os.remove(path)
    return values


def quality(work: Work, scene: str, args) -> dict:
    from mlflow.tracking import MlflowClient

    budgets = [f"dac.expert.trainer.max_seconds={args.expert_seconds}",
               f"dac.distill.trainer.max_seconds={args.distill_seconds}",
               f"dac.finetune.trainer.max_seconds={args.finetune_seconds}"]
    summary = work.run(["method=dac", f"dac.experts={args.experts}", "dac.with_baseline=true",
                        f"trainer.steps={HUGE_STEPS}", *budgets, *scene_args(work, scene)], f"quality-{scene}")
    metrics = summary["metrics"]
    stages = child_runs(MlflowClient(work.uri), summary["run_id"])
    return {"run_id": summary["run_id"], "seconds": summary["seconds"],
            "metrics": {k: v for k, v in metrics.items() if k.endswith("/psnr") or k.startswith("time/")},
            "steps": {name: run.data.metrics.get("train/steps") for name, run in stages.items()},
            "per_view": {name: per_view_psnr(work, stages[name].info.run_id) for name in CURVES}}


def expert_phase(work: Work, concurrent: bool, args) -> dict:
    from mlflow.tracking import MlflowClient

    placement = [] if concurrent else [f"compute.cpus_per_training={os.cpu_count()}"]
    summary = work.run(["method=dac", f"dac.experts={args.parallel_experts}",
                        f"dac.expert.trainer.steps={args.parallel_steps}", "dac.distill.trainer.steps=10",
                        "dac.finetune.trainer.steps=10", "eval.max_views=2", *placement],
                       f"experts-{'concurrent' if concurrent else 'sequential'}")
    stages = child_runs(MlflowClient(work.uri), summary["run_id"])
    own = [run.data.metrics["train/seconds"] for name, run in stages.items() if name.startswith("expert_")]
    return {"run_id": summary["run_id"], "phase_seconds": summary["metrics"]["time/experts"],
            "expert_train_seconds": own}


def plot(results: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenes = list(results)
    figure, axes = plt.subplots(1, len(scenes), figsize=(6 * len(scenes), 3.8), squeeze=False)
    labels = {"student": "DaC student (fine-tuned)", "student_distilled": "DaC student (distilled)",
              "baseline": "baseline (same steps)"}
    for axis, scene in zip(axes[0], scenes):
        for name in CURVES:
            values = results[scene]["per_view"][name]
            mean = sum(values) / len(values)
            axis.plot(range(len(values)), values, marker="o", ms=3, label=f"{labels[name]}: {mean:.2f} dB")
        axis.set_title(f"{scene} scene: test PSNR per view")
        axis.set_xlabel("test view")
        axis.set_ylabel("PSNR (dB)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


def report(results: dict, phase: dict, args) -> tuple[dict, str]:
    rows = []
    for scene, r in results.items():
        m = r["metrics"]
        gain = m["test/psnr"] - m["baseline/test/psnr"]
        experts = [m[f"expert_{k}/test/psnr"] for k in range(args.experts)]
        own = [m[f"expert_{k}/own/test/psnr"] for k in range(args.experts) if f"expert_{k}/own/test/psnr" in m]
        rows.append([scene, m["test/psnr"], m["student_distilled/test/psnr"], m["baseline/test/psnr"], f"{gain:+.2f}",
                     "yes" if gain >= 0 else "no", f"{min(experts):.2f}-{max(experts):.2f}",
                     f"{min(own):.2f}-{max(own):.2f}" if own else "",
                     int(r["steps"]["student_distilled"]), int(r["steps"]["student"]), int(r["steps"]["baseline"])])
    lines = [f"DaC, K={args.experts} experts (kplanes), wall budget per stage: experts {args.expert_seconds:g} s, "
             f"distillation {args.distill_seconds:g} s, fine-tuning {args.finetune_seconds:g} s; the baseline takes "
             "as many steps as distillation + fine-tuning. 2 CPU cores; test PSNR over 20 test views.", "",
             markdown_table(["scene", "DaC student", "distilled only", "baseline", "gain (dB)", ">= baseline",
                             "experts, all views", "experts, own views", "distill steps", "fine-tune steps",
                             "baseline steps"], rows), ""]
    payload = {"experts": args.experts, "budgets_s": {"expert": args.expert_seconds, "distill": args.distill_seconds,
                                                      "finetune": args.finetune_seconds}, "scenes": results}
    if phase:
        conc, seq = phase["concurrent"], phase["sequential"]
        ratio = conc["phase_seconds"] / seq["phase_seconds"]
        one_core = sum(conc["expert_train_seconds"])
        payload["parallel"] = {**phase, "ratio": ratio, "target": TARGET_RATIO,
                               "ratio_vs_one_core_each": conc["phase_seconds"] / one_core}
        lines += [f"Expert phase, K={args.parallel_experts} experts x {args.parallel_steps} steps "
                  "(`time/experts`):", "",
                  markdown_table(["experts", "phase wall (s)", "experts' own train seconds"],
                                 [["concurrent (1 CPU each)", conc["phase_seconds"],
                                   " + ".join(f"{s:.1f}" for s in conc["expert_train_seconds"])],
                                  ["one after another (all CPUs each)", seq["phase_seconds"],
                                   " + ".join(f"{s:.1f}" for s in seq["expert_train_seconds"])]]), "",
                  f"Ratio concurrent / sequential: **{ratio:.2f}x** (target <= {TARGET_RATIO}). Against one after "
                  f"another on one core each (the sum of the concurrent experts' own seconds, {one_core:.1f} s): "
                  f"{conc['phase_seconds'] / one_core:.2f}x."]
    return payload, "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experts", type=int, default=4)
    parser.add_argument("--expert-seconds", type=float, default=60.0)
    parser.add_argument("--distill-seconds", type=float, default=60.0)
    parser.add_argument("--finetune-seconds", type=float, default=60.0)
    parser.add_argument("--scenes", default="default,heldout")
    parser.add_argument("--parallel-experts", type=int, default=2)
    parser.add_argument("--parallel-steps", type=int, default=600, help="0: skip the expert-phase timing")
    parser.add_argument("--workdir", default="/tmp/fieldkd-bench/dac")
    parser.add_argument("--name", default=NAME, help="results/NAME.{json,md,png}, for another budget's report")
    args = parser.parse_args()
    name = args.name

    work = Work(args.workdir, NAME)
    budget = f"K{args.experts}/{args.expert_seconds:g}+{args.distill_seconds:g}+{args.finetune_seconds:g}s"
    results = {scene: work.cached(f"quality/{scene}/{budget}", lambda scene=scene: quality(work, scene, args))
               for scene in args.scenes.split(",") if scene}
    phase = {}
    if args.parallel_steps:
        for mode in ("concurrent", "sequential"):
            key = f"experts/{mode}/K{args.parallel_experts}/{args.parallel_steps}steps"
            phase[mode] = work.cached(key, lambda mode=mode: expert_phase(work, mode == "concurrent", args))
    payload, table = report(results, phase, args)
    write_results(name, payload, table)
    figure = plot(results, RESULTS / f"{name}.png")
    metrics = {f"{scene}/gain_db": r["metrics"]["test/psnr"] - r["metrics"]["baseline/test/psnr"]
               for scene, r in results.items()}
    if "parallel" in payload:
        metrics["parallel_ratio"] = payload["parallel"]["ratio"]
    log_benchmark_run(work, name, {"experts": args.experts, "scenes": args.scenes}, {"workdir": "WORKDIR"}, metrics,
                      lambda _: [RESULTS / f"{name}.json", RESULTS / f"{name}.md", figure])


if __name__ == "__main__":
    main()
