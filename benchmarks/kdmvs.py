"""KD-MVS on the generated DTU test scans: teacher, round-1 and round-2 students, probabilistic
and hard labels, over seeds.

    python benchmarks/kdmvs.py [--seeds 0,1,2] [--rounds 2] [--steps N] [--size HxW] [--workdir DIR]
                               [--labels prob,hard] [--name kdmvs] [--set KEY=VALUE ...]

Per seed, two runs of the real CLI: `fieldkd run method=kdmvs kdmvs.rounds=R seed=S` (probabilistic
labels; trains the teacher), then `kdmvs.labels.kind=hard kdmvs.teacher=<that teacher>` (the same
teacher, hard labels; `--labels prob` leaves them out). `--set` adds overrides to every run (e.g. trainer.steps=300); `--steps` and
`--size` bound the cost (trainer.steps, scene.height/width: sides multiples of 32). Each finished
run's summary is kept under --workdir, so a rerun with the same --workdir skips it (resumable).

Writes results/<name>.json, results/<name>.md (``--name``, default kdmvs) (mean and spread over seeds, mm, lower is better except
the within-2mm share and the label coverage) and, with both label kinds, results/<name>.png: the first test scan's fused
clouds of seed 0, coloured by their distance to the ground truth (0 to ERROR_VMAX_MM, 8 mm), next to it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fieldkd.platform.networks.mvs.evaluation import ERROR_VMAX_MM

from common import RESULTS, command_line, markdown_table, resumable_run, stage_metrics, write_results

CLAIM = ("mvs/overall", "mvs/completeness")  # the round-1 student below its teacher on both, in every seed
KEYS = ("mvs/accuracy", "mvs/completeness", "mvs/overall", "depth/abs_err", "depth/within_2mm")
ROWS = (("teacher (self-supervised)", "prob", "teacher"), ("student 1, prob. labels", "prob", "student_1"),
        ("student 2, prob. labels", "prob", "student_2"), ("student 1, hard labels", "hard", "student_1"),
        ("student 2, hard labels", "hard", "student_2"))


def spread(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{np.mean(values):.3g} ± {np.std(values):.2g}" if len(values) > 1 else f"{values[0]:.3g}"


def figure(workdir: Path, runs: dict, sets: list[str], last: str, name: str = "kdmvs") -> Path | None:
    """The first test scan's fused clouds of the first seed: teacher, the ``last`` round's students,
    ground truth."""
    from PIL import Image

    from fieldkd.platform.evaluate.mvs import cloud_figure, error_coloured
    from fieldkd.platform.scenes import dtu, ply

    options = dict(s.split("=", 1) for s in sets)
    root = options.get("scene.path")
    if not root:
        from fieldkd.platform.scenes.dtu_generator import default_mvs_dir

        root = default_mvs_dir()
    scans = dtu.list_scans(dtu.dataset_root(root), "test") if "scene.test_scans" not in options else \
        [s.strip(" []") for s in options["scene.test_scans"].split(",")]
    scan = dtu.scan_name(scans[0])
    gt, _ = dtu.read_gt_points(root, scan)
    clouds = []
    for kind, stage in (("prob", "teacher"), ("prob", last), ("hard", last)):
        path = workdir / "outputs" / runs[kind]["run_id"] / stage / "clouds" / f"{scan}.ply"
        if not path.exists():
            return None
        points, _ = ply.read_points(path)
        clouds.append((points, error_coloured(points, gt, vmax=ERROR_VMAX_MM)))
    clouds.append((gt, np.full((len(gt), 3), 96, np.uint8)))
    out = RESULTS / f"{name}.png"
    RESULTS.mkdir(parents=True, exist_ok=True)
    Image.fromarray(cloud_figure(clouds, size=384)).save(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--rounds", type=int, default=2, choices=(1, 2), help="student rounds (kdmvs.rounds)")
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "fieldkd-bench-kdmvs"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an override for every run (repeatable)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per stage (trainer.steps)")
    parser.add_argument("--size", default=None, metavar="HxW", help="image size, sides multiples of 32 (e.g. 64x96)")
    parser.add_argument("--labels", default="prob,hard", choices=("prob", "prob,hard"),
                        help="label kinds: the hard-label runs are the ablation")
    parser.add_argument("--name", default="kdmvs", help="results file name")
    args = parser.parse_args()
    if args.steps is not None:
        args.set.append(f"trainer.steps={args.steps}")
    if args.size:
        height, width = (int(v) for v in args.size.lower().split("x"))
        args.set += [f"scene.height={height}", f"scene.width={width}"]
    seeds = [int(s) for s in args.seeds.split(",")]
    kinds = args.labels.split(",")
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)

    per_seed = {}
    for seed in seeds:
        base = ["method=kdmvs", f"kdmvs.rounds={args.rounds}", f"seed={seed}", *args.set]
        prob = resumable_run(workdir, f"prob_s{seed}", base)
        teacher = workdir / "outputs" / prob["run_id"] / "teacher" / "last.pt"
        per_seed[seed] = {"prob": prob}
        if "hard" in kinds:
            per_seed[seed]["hard"] = resumable_run(workdir, f"hard_s{seed}",
                                                   [*base, "kdmvs.labels.kind=hard", f"kdmvs.teacher={teacher}"])

    students = [f"student_{r}" for r in range(1, args.rounds + 1)]
    rows, payload = [], {"command": command_line(), "seeds": seeds, "rounds": args.rounds, "overrides": args.set,
                         "rows": {}}
    for label, kind, stage in ROWS:
        if (stage != "teacher" and stage not in students) or kind not in kinds:
            continue
        found = [stage_metrics(per_seed[s][kind], stage) for s in seeds]
        labels = [per_seed[s][kind]["metrics"].get(f"labels_{stage[-1]}/coverage") if stage != "teacher" else None
                  for s in seeds]
        payload["rows"][f"{kind}/{stage}"] = {"metrics": found, "label_coverage": labels}
        rows.append([label, *(spread([m.get(k) for m in found]) for k in KEYS), spread(labels)])
    # the claim, per seed: the round-1 student below its teacher (mm, lower is better); hard minus prob
    deltas, delta_rows = {}, []
    for s in seeds:
        teacher = stage_metrics(per_seed[s]["prob"], "teacher")
        row = {}
        for kind in kinds:
            student = stage_metrics(per_seed[s][kind], "student_1")
            for key in ("mvs/overall", "mvs/completeness"):
                row[f"{kind} student_1 - teacher, {key}"] = student[key] - teacher[key]
        for stage in students if "hard" in kinds else ():
            hard, prob = stage_metrics(per_seed[s]["hard"], stage), stage_metrics(per_seed[s]["prob"], stage)
            row[f"hard - prob, {stage}, mvs/overall"] = hard["mvs/overall"] - prob["mvs/overall"]
        deltas[s] = row
        delta_rows.append([s, *(f"{v:+.3g}" for v in row.values())])
    payload["per_seed_differences"] = deltas
    delta_table = markdown_table(["seed", *next(iter(deltas.values())).keys()], delta_rows)
    # per seed: each model's scores, and whether the round-1 student is below its teacher on both
    seed_rows, verdicts = [], {}
    for s in seeds:
        teacher = stage_metrics(per_seed[s]["prob"], "teacher")
        models = [("teacher", teacher)] + [(f"student_1 {kind}", stage_metrics(per_seed[s][kind], "student_1"))
                                           for kind in kinds]
        for name, m in models:
            met = "" if name == "teacher" else ("yes" if all(m[k] < teacher[k] for k in CLAIM) else "no")
            if met:
                verdicts.setdefault(name, {})[s] = met == "yes"
            seed_rows.append([s, name, *(f"{m[k]:.3f}" for k in ("mvs/accuracy", "mvs/completeness", "mvs/overall")),
                              met])
    payload["claim_per_seed"] = verdicts
    seed_table = markdown_table(["seed", "model", "acc (mm)", "comp (mm)", "overall (mm)",
                                 "below the teacher on overall and comp"], seed_rows)
    summary = "; ".join(f"{name} labels: {sum(v.values())} of {len(v)} seeds" for name, v in verdicts.items())
    seconds = [per_seed[s][k]["wall_seconds"] for s in seeds for k in kinds]
    payload["wall_seconds"] = seconds
    table = markdown_table(["model", "acc (mm)", "comp (mm)", "overall (mm)", "depth abs err (mm)",
                            "within 2 mm", "label coverage"], rows)
    picture = figure(workdir, per_seed[seeds[0]], args.set, students[-1], args.name) if "hard" in kinds else None
    text = (f"KD-MVS on the generated DTU test scans; seeds {args.seeds}; overrides: "
            f"{' '.join(args.set) or 'none'}. Mean ± std over seeds.\n\n{table}\n\n"
            f"Per seed (mm, lower is better; the claim: the round-1 student below its teacher on overall and "
            f"completeness in every seed; met by {summary}):\n\n{seed_table}\n\n"
            f"Per seed, differences in mm (negative: the first is better; the paper claims student_1 below its "
            f"teacher and prob. below hard):\n\n{delta_table}\n\n"
            f"Runs: {len(seconds)}, {sum(seconds) / 60:.1f} min in all. Command: `{command_line()}`\n")
    if picture is not None:
        text += f"\n![fused clouds coloured by error, 0-{ERROR_VMAX_MM:g} mm: teacher, {students[-1]} prob., " \
                f"{students[-1]} hard, " \
                f"ground truth]({picture.name})\n"
    write_results(args.name, payload, text)


if __name__ == "__main__":
    main()
