"""KDBTS on the generated driving set's test sequence: the single-view BTS baseline, the MVBTS teacher
and the KDBTS student, over seeds.

    python benchmarks/kdbts.py [--seeds 0,1,2] [--workdir DIR] [--set KEY=VALUE ...] [--student KEY=VALUE ...]
                               [--name NAME]

Per seed one run of the real CLI, `fieldkd run method=kdbts seed=S` (teacher and baseline at once, then
the student); `--set` adds overrides to every run (e.g. trainer.steps=300). `--student` trains, per
seed, a second student from that run's teacher with these overrides (`kdbts.teacher=... kdbts.baseline=false`
and the student's options, e.g. bts.teacher=frozen), scored beside the first on the same teacher and
baseline. Each finished run's summary is kept under --workdir, so a rerun with the same --workdir skips
it (resumable).

Writes results/NAME.json, results/NAME.md (default NAME: kdbts; mean ± std over seeds; per seed, each
model's ie_acc, ie_rec and o_acc and whether each student beats the baseline on them, the claim of
methods.md §5, with the LiDAR truth's visibility and with the official evaluator's,
``occupancy_official/``) and results/NAME.png: the test frame's (the one with the most occupied cells)
bird's-eye occupancy slice of seed 0 for each model, next to the LiDAR and the exact truth.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, command_line, markdown_table, resumable_run, stage_metrics, write_results

KEYS = ("occupancy/o_acc", "occupancy/ie_acc", "occupancy/ie_rec", "occupancy/o_rec", "occupancy/o_prec",
        "occupancy_official/o_acc", "occupancy_official/ie_acc", "occupancy_official/ie_rec",
        "occupancy_exact/o_acc", "occupancy_exact/ie_acc", "occupancy_exact/ie_rec", "depth/abs_rel", "depth/a1")
CLAIM = ("occupancy/ie_acc", "occupancy/ie_rec", "occupancy/o_acc")
ROWS = (("BTS baseline (single head)", "baseline", "single"), ("MVBTS teacher (multi head)", "teacher", "multi"),
        ("KDBTS student (single head)", "student", "single"))
VARIANT = ("KDBTS student 2 (single head)", "variant", "single")  # the --student overrides; a short figure caption
ALONE = "MVBTS teacher, input view alone"  # its multi head given one view: what a single-view student can imitate


def input_view_alone(metrics: dict) -> dict:
    """A multi-head stage's ``occupancy_input_view/*`` under the ``occupancy/*`` names."""
    prefix = "occupancy_input_view/"
    return {"occupancy/" + k[len(prefix):]: v for k, v in metrics.items() if k.startswith(prefix)}


def spread(values: list) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def figure(models: list[tuple[str, Path, str]], sets: list[str], name: str) -> Path:
    """Seed 0's test frame with the most occupied cells: each model's slice (``(label, checkpoint, head)``,
    through its head), the LiDAR and the exact truth."""
    from PIL import Image

    from fieldkd.platform.config import compose_config
    from fieldkd.platform.evaluate.panels import captioned, upsample
    from fieldkd.platform.networks.bts.evaluation import (
        bird_eye,
        eval_grid,
        eval_options,
        frame_truth,
    )
    from fieldkd.platform.networks.bts.stage import load_bts_net, sequence_data
    from fieldkd.platform.networks.bts.tasks import predict_occupied, task_config

    cfg = compose_config(["method=kdbts", *sets])
    opts = eval_options(cfg["eval"])
    data = sequence_data(cfg["scene"])
    grid = eval_grid(opts)
    cells = grid.reshape(-1, 3)
    items = data.eval_items()
    truths = [frame_truth(items[i], data.root, cells, opts) for i in range(len(items))]
    best = int(np.argmax([t["gt"].sum() for t in truths]))  # the test frame with the most occupied cells
    item, truth = items[best], truths[best]
    shape, views = grid.shape[:-1], task_config(cfg["bts"]["loss"])["encoder_views"]
    panels = []
    for label, checkpoint, head in models:
        net = load_bts_net(checkpoint)
        pred, _ = predict_occupied(net, item["images"], item["intrinsics"], item["cam_to_world"], cells, head=head,
                                   threshold=float(opts["bts_threshold"]), views=views)
        panels.append((label.split(" (")[0], bird_eye(pred.reshape(shape)[0], truth["gt"].reshape(shape)[0],
                                                      truth["visible"].reshape(shape)[0])))
    panels.append(("LiDAR truth", bird_eye(truth["gt"].reshape(shape)[0], None, truth["visible"].reshape(shape)[0])))
    if truth["exact"] is not None:
        occupied, visible = truth["exact"]
        panels.append(("exact truth", bird_eye(occupied.reshape(shape)[0], None, visible.reshape(shape)[0])))
    image = np.round(np.moveaxis(np.asarray(item["images"][0]), 0, -1).clip(0, 1) * 255).astype(np.uint8)
    top = captioned(upsample(image, 160), f"input {item['sequence']} frame {item['frame']}")
    row = np.concatenate([captioned(upsample(p, 160), t) for t, p in panels], axis=1)
    width = max(top.shape[1], row.shape[1])

    def pad(a):
        return np.pad(a, ((0, 0), (0, width - a.shape[1]), (0, 0)), constant_values=255)
    out = RESULTS / f"{name}.png"
    RESULTS.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate([pad(top), pad(row)], axis=0)).save(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "fieldkd-bench-kdbts"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an override for every run (repeatable)")
    parser.add_argument("--student", action="append", default=[], metavar="KEY=VALUE",
                        help="an override of a second student per seed, from the same teacher (repeatable)")
    parser.add_argument("--name", default="kdbts", help="the results' file stem")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    per_seed = {s: resumable_run(workdir, f"s{s}", ["method=kdbts", f"seed={s}", *args.set]) for s in seeds}
    rows_of = list(ROWS)
    if args.student:  # a second student per seed, from the same teacher: its scores join the seed's as variant/...
        rows_of.append(VARIANT)
        variant_key = hashlib.sha1(" ".join(args.student).encode()).hexdigest()[:8]  # one run per override set
        for s in seeds:
            teacher = workdir / "outputs" / per_seed[s]["run_id"] / "teacher" / "last.pt"
            second = resumable_run(workdir, f"s{s}-student-{variant_key}", ["method=kdbts", f"seed={s}", *args.set,
                                                               f"kdbts.teacher={teacher}", "kdbts.baseline=false",
                                                               *args.student])
            per_seed[s]["metrics"].update({f"variant/{k}": v for k, v in stage_metrics(second, "student").items()})
            per_seed[s]["variant_run_id"] = second["run_id"]
            per_seed[s]["wall_seconds"] += second["wall_seconds"]

    rows, payload = [], {"command": command_line(), "seeds": seeds, "overrides": args.set,
                         "student_overrides": args.student, "rows": {}}
    for label, stage, head in rows_of:
        found = [stage_metrics(per_seed[s], stage) for s in seeds]
        payload["rows"][stage] = {"head": head, "metrics": found}
        rows.append([label, *(spread([m.get(k) for m in found]) for k in KEYS)])
    alone = [input_view_alone(stage_metrics(per_seed[s], "teacher")) for s in seeds]
    rows.append([ALONE, *(spread([m.get(k) for m in alone]) for k in KEYS)])
    claim = {}
    for stage in [stage for _, stage, _ in rows_of if stage not in ("baseline", "teacher")]:
        for key in (*CLAIM, *(k.replace("occupancy/", "occupancy_official/") for k in CLAIM)):
            claim[f"{stage}: {key}"] = [bool(stage_metrics(per_seed[s], stage).get(key, float("nan"))
                                             > stage_metrics(per_seed[s], "baseline").get(key, float("nan")))
                                        for s in seeds]
    seed_rows = []
    for s in seeds:
        for label, stage, _ in rows_of:
            m = stage_metrics(per_seed[s], stage)
            seed_rows.append([s, label.split(" (")[0], *(m.get(k) for k in CLAIM),
                              *(m.get(k.replace("occupancy/", "occupancy_official/")) for k in CLAIM)])
        seed_rows.append([s, ALONE, *(input_view_alone(stage_metrics(per_seed[s], "teacher")).get(k) for k in CLAIM),
                          *("-" for _ in CLAIM)])
    official = [k.replace("occupancy/", "occupancy_official/") for k in CLAIM]
    seed_table = markdown_table(["seed", "model", *CLAIM, *official], seed_rows)
    payload["student_beats_baseline"] = claim
    payload["wall_seconds"] = [per_seed[s]["wall_seconds"] for s in seeds]
    payload["peak_rss_gib"] = [per_seed[s]["peak_rss_gib"] for s in seeds]
    table = markdown_table(["model", *KEYS], rows)
    first = per_seed[seeds[0]]
    runs = {stage: first.get("variant_run_id") if stage == "variant" else first["run_id"] for _, stage, _ in rows_of}
    checkpoints = [(label, workdir / "outputs" / runs[stage] / ("student" if stage == "variant" else stage) / "last.pt",
                    head) for label, stage, head in rows_of]
    picture = figure(checkpoints, args.set, args.name)
    beats = "; ".join(f"{k}: {sum(v)}/{len(v)} seeds" for k, v in claim.items())
    variant = f"; KDBTS student 2's (--student): {' '.join(args.student)}" if args.student else ""
    text = (f"KDBTS on the generated driving set's test sequences; seeds {args.seeds}; overrides: "
            f"{' '.join(args.set) or 'none'}{variant}. Mean ± std over seeds; occupancy on the official grid "
            f"(x -4..4 m, z 4..20 m, one slice), `occupancy/` against LiDAR truth, `occupancy_exact/` against the "
            f"generator's shapes; `occupancy_official/` against LiDAR truth with the official evaluator's visibility "
            f"(cells in front of the model's own rendered depth count as visible, and empty).\n\n{table}\n\n"
            f"Per seed:\n\n{seed_table}\n\nStudent above baseline: {beats}.\n\n"
            f"Runs: {len(seeds)}, {sum(payload['wall_seconds']) / 60:.1f} min wall in all (a shared machine: "
            f"wall time is not a speed figure). Command: `{command_line()}`\n"
            f"\n![bird's-eye occupancy slice, near at the bottom: dark occupied, red false occupied, blue missed, "
            f"green-grey invisible]({picture.name})\n")
    write_results(args.name, payload, text)


if __name__ == "__main__":
    main()
