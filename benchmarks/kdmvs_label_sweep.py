"""KD-MVS pseudo-label thresholds: coverage, label error and the student they give.

    python benchmarks/kdmvs_label_sweep.py [--teacher PATH] [--seed 0] [--steps N] [--size HxW]
                                           [--workdir DIR] [--set KEY=VALUE ...]
                                           [--settings V,PX,REL;...] [--name NAME]

One trained teacher for every setting: --teacher, or the teacher of a first run
(`fieldkd run method=kdmvs`) that also gives the official thresholds' row. Each setting is one
run of the real CLI with `kdmvs.teacher=PATH` (no teacher stage) and its label thresholds
(`kdmvs.labels.min_views`, `max_px`, `max_rel`); recorded: the labels' coverage (share of
pixels kept), their mean sigma, their error against the training scans' ground-truth depth
(mean absolute, share within 2 mm) and the round-1 student's DTU metrics on the test scans.
Finished runs are kept under --workdir (resumable).

Writes results/kdmvs_label_sweep.json and .md (``--name`` to change, e.g. one file per seed).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import command_line, markdown_table, resumable_run, write_results

# (agreeing views, reprojection px, relative depth): the official thresholds first, then looser ones
SETTINGS = ((7, 1.0, 0.005), (5, 1.0, 0.005), (3, 1.0, 0.01), (2, 2.0, 0.01), (1, 2.0, 0.02))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--teacher", default=None, help="a trained teacher's checkpoint (a run's teacher/last.pt)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--size", default=None, metavar="HxW")
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "fieldkd-bench-kdmvs-labels"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--settings", default=None, metavar="V,PX,REL;...",
                        help="the threshold settings to run (default: all five; the official one is always first)")
    parser.add_argument("--name", default="kdmvs_label_sweep")
    args = parser.parse_args()
    sets = list(args.set)
    if args.steps is not None:
        sets.append(f"trainer.steps={args.steps}")
    if args.size:
        height, width = (int(v) for v in args.size.lower().split("x"))
        sets += [f"scene.height={height}", f"scene.width={width}"]
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    base = ["method=kdmvs", "kdmvs.rounds=1", f"seed={args.seed}", *sets]

    teacher, first = args.teacher, None
    if teacher is None:  # train one, with the official thresholds: that run is the first row
        first = resumable_run(workdir, "teacher_run", base)
        teacher = str(workdir / "outputs" / first["run_id"] / "teacher" / "last.pt")
    settings = SETTINGS
    if args.settings:
        chosen = [(int(v), float(px), float(rel)) for v, px, rel in (t.split(",") for t in args.settings.split(";"))]
        settings = (SETTINGS[0], *(t for t in chosen if t != SETTINGS[0]))
    found = {}
    for views, px, rel in settings:
        name = f"v{views}_px{px:g}_rel{rel:g}"
        overrides = [f"kdmvs.labels.min_views={views}", f"kdmvs.labels.max_px={px}", f"kdmvs.labels.max_rel={rel}"]
        if first is not None and (views, px, rel) == SETTINGS[0]:
            found[name] = first
        else:
            found[name] = resumable_run(workdir, name, [*base, *overrides, f"kdmvs.teacher={teacher}"])
        print(name, {k: v for k, v in found[name]["metrics"].items() if k.startswith(("labels_1/", "mvs/"))},
              flush=True)

    rows, payload = [], {"command": command_line(), "seed": args.seed, "overrides": sets, "teacher": "given"
                         if args.teacher else "trained by the first run", "settings": {}}
    for (views, px, rel), (name, summary) in zip(settings, found.items()):
        m = summary["metrics"]
        payload["settings"][name] = {"min_views": views, "max_px": px, "max_rel": rel,
                                     "metrics": {k: v for k, v in m.items() if "/" in k}}
        cells = [m.get(k) for k in ("labels_1/coverage", "labels_1/mean_sigma", "labels_1/abs_err",
                                    "labels_1/within_2mm", "mvs/completeness", "mvs/overall")]
        rows.append([views, px, rel, *("-" if c is None else f"{c:.3g}" for c in cells)])
    if first is not None:
        t = {k[len("teacher/"):]: v for k, v in first["metrics"].items() if k.startswith("teacher/")}
        payload["teacher_metrics"] = t
        rows.append(["teacher", "", "", "", "", "", "", f"{t.get('mvs/completeness', float('nan')):.3g}",
                     f"{t.get('mvs/overall', float('nan')):.3g}"])
    table = markdown_table(["min views", "max px", "max rel", "label coverage", "mean sigma (mm)",
                            "label abs err (mm)", "labels within 2 mm", "student comp (mm)",
                            "student overall (mm)"], rows)
    text = (f"KD-MVS label thresholds, one teacher, seed {args.seed}; overrides: {' '.join(sets) or 'none'}. "
            f"The first row is the official setting.\n\n{table}\n\nCommand: `{command_line()}`\n")
    write_results(args.name, payload, text)


if __name__ == "__main__":
    main()
