"""The KD-MVS teacher's smoothness term in depth-range units, raw millimetres, or off.

    python benchmarks/kdmvs_smoothness.py [--steps 150] [--seed 0] [--height 64 --width 96]

Trains the self-supervised teacher (the kdmvs recipe's network, loss and data, the bundled
procedural DTU) for --steps in-process, three times from the same seed: smoothness on depth /
(max - min) (the default), on raw depth in mm (what the official weights do at DTU's scale),
and with weight 0. Scores each on evenly spaced views of the training scans (the generated test
scans carry no depth maps; the self-supervised teacher never reads depth) against their ground-truth depth: mean
absolute error (mm), the share within 2 mm and 4 mm (MVSNet's convention), and the error
relative to the scan's depth range. The training loss terms of the last step are recorded too,
to show which term dominates.

Writes results/kdmvs_smoothness.json and results/kdmvs_smoothness.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import command_line, markdown_table, write_results

SETTINGS = (("range units (default)", {"smooth_units": "range"}),
            ("raw mm (official weights at DTU scale)", {"smooth_units": "raw"}),
            ("no smoothness", {"weights": {"smooth": 0.0}}))


def train_and_score(cfg: dict, loss_cfg: dict, steps: int, seed: int, views_per_scan: int) -> dict:
    import torch

    from fieldkd.platform.data.multiview import MultiViewData
    from fieldkd.platform.evaluate.mvs import depth_map_errors
    from fieldkd.platform.networks.mvs import SelfSupervisedMVSTask, build_cascade_mvs
    from fieldkd.platform.networks.mvs.evaluation import predict_scan
    from fieldkd.platform.train.loop import Trainer, TrainerConfig

    torch.manual_seed(seed)
    train = MultiViewData.from_config(cfg["scene"], "train")
    net = build_cascade_mvs({**cfg["network"], "uncertainty": True})
    task = SelfSupervisedMVSTask(net, train.train_batches(0, 1, int(cfg["mvs"]["batch_size"]), seed), "cpu", loss_cfg)
    t = cfg["trainer"]
    last = {}
    # the recipe's trainer settings (lr, warm-up, schedule), over --steps
    trainer_cfg = TrainerConfig.from_dict({**t, "steps": steps, "log_every": 1, "progress": False,
                                           "checkpoint_every": 0, "eval_every": 0, "amp": False, "seed": seed})
    started = time.process_time()
    Trainer(trainer_cfg, log=lambda m, step: last.update(m)).fit(task)
    cpu = time.process_time() - started
    # the generated test scans carry no depth maps, the training scans do (the teacher never reads them)
    items = train.eval_items()
    by_scan: dict[str, list[int]] = {}
    for i, desc in enumerate(items.descriptors):
        by_scan.setdefault(desc["scan"], []).append(i)
    scores, relative = [], []
    for all_indices in by_scan.values():
        indices = all_indices[::max(1, len(all_indices) // views_per_scan)][:views_per_scan]
        for view in predict_scan(net, [items[i] for i in indices], "cpu").values():
            if view["gt"] is None:
                continue
            s = depth_map_errors(view["depth"], view["gt"], view["mask"])
            scores.append(s)
            lo, hi = view["range"]
            relative.append(s["abs_err"] / (hi - lo))
    terms = {k[len("train/stage3_"):]: v for k, v in last.items() if k.startswith("train/stage3_")}
    return {"abs_err_mm": float(np.mean([s["abs_err"] for s in scores])),
            "within_2mm": float(np.mean([s["within_2mm"] for s in scores])),
            "within_4mm": float(np.mean([s["within_4mm"] for s in scores])),
            "abs_err_of_range": float(np.mean(relative)), "views": len(scores), "train_cpu_seconds": cpu,
            "last_step_stage3_terms": terms, "last_loss": last.get("train/loss")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--height", type=int, default=None, help="image height (multiple of 32); default the recipe's")
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--views-per-scan", type=int, default=8, help="views scored per training scan, evenly spaced")
    args = parser.parse_args()
    import torch

    from fieldkd.platform.config import compose_config
    from fieldkd.platform.networks.mvs.losses import TEACHER_WEIGHTS

    torch.set_num_threads(2)
    overrides = ["method=kdmvs", f"seed={args.seed}"]
    overrides += [f"scene.height={args.height}"] if args.height else []
    overrides += [f"scene.width={args.width}"] if args.width else []
    cfg = compose_config(overrides)
    found = {}
    for label, loss_cfg in SETTINGS:
        found[label] = train_and_score(cfg, loss_cfg, args.steps, args.seed, args.views_per_scan)
        print(label, found[label], flush=True)
    rows = []
    for label, r in found.items():
        t = r["last_step_stage3_terms"]
        weighted = {k: TEACHER_WEIGHTS.get(k, 0.0) * v for k, v in t.items() if k in TEACHER_WEIGHTS}
        smooth = TEACHER_WEIGHTS["smooth"] * t.get("smooth", 0.0) if "no smooth" not in label else 0.0
        others = sum(v for k, v in weighted.items() if k != "smooth")
        rows.append([label, f"{r['abs_err_mm']:.1f}", f"{100 * r['abs_err_of_range']:.2f} %",
                     f"{100 * r['within_2mm']:.1f} %", f"{100 * r['within_4mm']:.1f} %",
                     f"{smooth:.3g}", f"{others:.3g}"])
    table = markdown_table(["smoothness", "depth abs err (mm)", "abs err / depth range", "within 2 mm",
                            "within 4 mm", "0.18 x smooth, stage 3, last step", "other weighted terms, stage 3"],
                           rows)
    scene = cfg["scene"]
    text = (f"KD-MVS teacher after {args.steps} steps (seed {args.seed}, {scene['height']}x{scene['width']}, "
            f"{scene['n_src']} source views, batch {cfg['mvs']['batch_size']}, network hypotheses "
            f"{cfg['network']['hypotheses']}), scored on {args.views_per_scan} evenly spaced views of each "
            f"generated training scan against their ground-truth depth (the test scans have none; the teacher is "
            f"self-supervised and never reads depth). Same seed, same batches; only the smoothness term differs.\n\n{table}\n\n"
            f"Command: `{command_line()}`\n")
    write_results("kdmvs_smoothness", {"command": command_line(), "steps": args.steps, "seed": args.seed,
                                       "scene": {k: scene[k] for k in ("height", "width", "n_src", "light")},
                                       "results": found}, text)


if __name__ == "__main__":
    main()
