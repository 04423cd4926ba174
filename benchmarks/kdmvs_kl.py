"""KD-MVS students from probabilistic labels under variants of the KL term, on the teachers of a
benchmarks/kdmvs.py run (the same teacher and the same labels per seed, so the rows are paired).

    python benchmarks/kdmvs_kl.py --teachers DIR [--seeds 0,1,2] [--variants a,b] [--workdir WORKDIR]

``--teachers``: the --workdir of a finished `benchmarks/kdmvs.py --rounds 1` run; its teacher and
its hard-label student per seed are the reference rows. Each variant is one run per seed of
`fieldkd run method=kdmvs kdmvs.rounds=1 seed=S kdmvs.teacher=<that seed's teacher>` with the
variant's student-loss overrides, kept under WORKDIR/VARIANT (resumable).

Also records, per stage, on a few labelled training batches of seed 0 and each student: the KL and
the cross-entropy, the norms of their gradients in the network's parameters, the student's
standard deviation, its mean's distance to the label's, and the share of labelled pixels whose
label lies outside the stage's hypothesis window.

Writes results/kdmvs_kl.json and results/kdmvs_kl.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import command_line, markdown_table, resumable_run, stage_metrics, write_results

VARIANTS = {
    "student||label": ["+kdmvs.student_loss.kl_direction=student||label"],  # the default (official direction)
    "label||student": ["+kdmvs.student_loss.kl_direction=label||student"],  # the default before this benchmark
    "student||label, floor 0.5 step": ["+kdmvs.student_loss.kl_direction=student||label",
                                       "+kdmvs.student_loss.stage_sigma_ratio=0.5"],
}
SLUG = {"student||label": "s2l", "label||student": "l2s", "student||label, floor 0.5 step": "s2l_floor05"}


def shown(name: str) -> str:
    """A variant's name for a markdown table (whose columns a "|" would split)."""
    return name.replace("||", " ‖ ")


def probe(labels_dir: Path, checkpoint: Path | None, batches: int = 3) -> dict:
    """Per-stage magnitudes on ``batches`` labelled training batches (batch 2, seed 0)."""
    import torch

    from fieldkd.platform.config import compose_config
    from fieldkd.platform.distill.losses import gaussian_kl, hypothesis_cross_entropy, volume_moments
    from fieldkd.platform.networks.mvs.geometry import subsample_map
    from fieldkd.platform.networks.mvs.label_data import LabelledViews
    from fieldkd.platform.networks.mvs.label_job import load_mvs_net
    from fieldkd.platform.networks.mvs.network import CascadeMVSNet, build_cascade_mvs
    from fieldkd.platform.networks.mvs.stage import multiview

    cfg = compose_config(["method=kdmvs"])
    data = LabelledViews(multiview(cfg, "train"), labels_dir)
    torch.manual_seed(0)
    net = load_mvs_net(str(checkpoint)) if checkpoint else build_cascade_mvs(dict(cfg["network"]))
    net.train()
    params = [p for p in net.parameters() if p.requires_grad]
    hyp, ratios = net.config["hypotheses"], net.config["interval_ratios"]
    stream, found = data.train_batches(0, 1, 2, 0), {}
    for _ in range(batches):
        b = {k: torch.as_tensor(v) if isinstance(v, np.ndarray) and v.dtype != object else v
             for k, v in next(stream).items()}
        out = net(b["images"], b["intrinsics"], b["extrinsics"], b["depth_min"], b["depth_max"])
        floor = (0.25 * CascadeMVSNet.base_interval(b["depth_min"].float(), b["depth_max"].float(), hyp[0],
                                                    ratios[0])).reshape(-1, 1, 1)
        for i, stage in enumerate(out.stages):
            factor = b["label_mu"].shape[-1] // stage["prob_volume"].shape[-1]
            mu, sigma, mask = (subsample_map(t, factor) for t in (b["label_mu"], b["label_sigma"], b["label_mask"]))
            mask = mask.bool()
            mean, std = volume_moments(stage["prob_volume"], stage["hypotheses"])
            lo, hi = stage["hypotheses"].min(1).values, stage["hypotheses"].max(1).values
            row = found.setdefault(f"stage{i + 1}", {})
            terms = {"ce": 2.0 * hypothesis_cross_entropy(stage["prob_volume"], stage["hypotheses"], mu, mask)}
            for direction in ("student||label", "label||student"):
                terms[f"kl {direction}"] = 0.5 * gaussian_kl(mu, sigma, mean, std, floor, mask, direction)
            for name, value in terms.items():
                grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
                norm = float(sum((g.float() ** 2).sum() for g in grads if g is not None) ** 0.5)
                row.setdefault(f"{name} (weighted)", []).append(float(value))
                row.setdefault(f"grad norm {name}", []).append(norm)
            with torch.no_grad():
                row.setdefault("student std (mm)", []).append(float(std[mask].median()))
                row.setdefault("|mean - label| (mm)", []).append(float((mean - mu)[mask].abs().median()))
                row.setdefault("label outside window", []).append(float((((mu < lo) | (mu > hi)) & mask).sum()
                                                                         / mask.sum().clamp_min(1)))
                row.setdefault("spacing (mm)", []).append(float((stage["hypotheses"][:, 1]
                                                                  - stage["hypotheses"][:, 0]).abs().mean()))
    return {s: {k: float(np.mean(v)) for k, v in row.items()} for s, row in found.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--teachers", required=True, help="the --workdir of a benchmarks/kdmvs.py --rounds 1 run")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--variants", default=",".join(SLUG.values()), help=f"of {list(SLUG.values())}")
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "fieldkd-bench-kdmvs-kl"))
    parser.add_argument("--no-probe", action="store_true")
    parser.add_argument("--finished-only", action="store_true", help="start no run: report the finished ones")
    args = parser.parse_args()
    teachers, workdir = Path(args.teachers).resolve(), Path(args.workdir).resolve()
    seeds = [int(s) for s in args.seeds.split(",")]
    chosen = [name for name, slug in SLUG.items() if slug in args.variants.split(",")]
    reference = {s: {k: json.loads((teachers / "runs" / f"{k}_s{s}.json").read_text()) for k in ("prob", "hard")}
                 for s in seeds}
    results, rows, payload = {}, [], {"seeds": seeds, "variants": {}, "load_avg": []}
    for name in chosen:
        results[name] = {}
        for s in seeds:
            teacher = teachers / "outputs" / reference[s]["prob"]["run_id"] / "teacher" / "last.pt"
            (workdir / SLUG[name]).mkdir(parents=True, exist_ok=True)
            finished = (workdir / SLUG[name] / "runs" / f"prob_s{s}.json").exists()
            if args.finished_only and not finished:
                continue
            results[name][s] = resumable_run(workdir / SLUG[name], f"prob_s{s}",
                                             ["method=kdmvs", "kdmvs.rounds=1", f"seed={s}", f"kdmvs.teacher={teacher}",
                                              *VARIANTS[name]])
            if not finished:
                payload["load_avg"].append([round(x, 1) for x in os.getloadavg()])

    def overall(summary, stage):
        return stage_metrics(summary, stage).get("mvs/overall") if summary else None

    def fmt(value):
        return "not run" if value is None else f"{value:.3g}"

    header = ["seed", "teacher", "hard labels", *(f"KL({shown(n)})" for n in chosen)]
    for s in seeds:
        rows.append([s, fmt(overall(reference[s]["prob"], "teacher")), fmt(overall(reference[s]["hard"], "student_1")),
                     *(fmt(overall(results[n].get(s), "student_1")) for n in chosen)])
    payload["overall_mm"] = {"teacher": {s: overall(reference[s]["prob"], "teacher") for s in seeds},
                             "hard": {s: overall(reference[s]["hard"], "student_1") for s in seeds},
                             **{n: {s: overall(results[n].get(s), "student_1") for s in seeds} for n in chosen}}
    text = (f"KD-MVS round-1 students, DTU overall (mm, lower is better), paired per seed: the teacher and the "
            f"hard-label student of `{teachers.name}`, and students from the same teacher's probabilistic labels "
            f"under each KL variant.\n\n{markdown_table(header, rows)}\n")
    if not args.no_probe:
        first = reference[seeds[0]]["prob"]["run_id"]
        labels = teachers / "outputs" / first / "labels_1"
        students = {"untrained": None,
                    "hard-label student": teachers / "outputs" / reference[seeds[0]]["hard"]["run_id"] / "student_1",
                    **{f"{n} student": workdir / SLUG[n] / "outputs" / results[n][seeds[0]]["run_id"] / "student_1"
                       for n in chosen if seeds[0] in results[n]}}
        for who, folder in students.items():
            found = probe(labels, folder / "last.pt" if folder else None)
            payload["variants"][who] = found
            keys = list(next(iter(found.values())))
            table = markdown_table(["stage", *map(shown, keys)],
                                   [[s, *(f"{v[k]:.3g}" for k in keys)] for s, v in found.items()])
            text += f"\nPer stage, seed {seeds[0]}'s labels, {shown(who)} (weights 0.5 KL, 2 CE included; sigma clamp 0.25 base interval, 2 mm, in every row):\n\n{table}\n"
    command = command_line().replace(str(teachers), "DIR").replace(str(workdir), "WORKDIR")
    payload["command"] = command
    payload["load_avg_at_report"] = [round(x, 1) for x in os.getloadavg()]
    text += (f"\nLoad average (1, 5, 15 min) when this report was written: {payload['load_avg_at_report']}; after "
             f"each run it started: {payload['load_avg'] or 'none started'}. Command: `{command}`\n")
    write_results("kdmvs_kl", payload, text)


if __name__ == "__main__":
    main()
