"""Where a KDBTS student departs from its teacher: on the evaluation slab, or at the ray samples it
was distilled at? Prints, per test frame of the bundled driving set, the mean clipped L1 between the
student's single-head and the teacher's multi-head densities on the occupancy grid, both models'
occupied cells there, and the same clipped L1 (the KD term without its weight, inside the input
view's frustum) at training-style ray samples cast from every frame of the sequence.

    python benchmarks/kdbts_kd_gap.py TEACHER/last.pt STUDENT/last.pt [--seed 0]

Both checkpoints are stage checkpoints of `fieldkd run method=kdbts` (loaded with weights_only).
"""

from __future__ import annotations

import argparse

import torch

from fieldkd.platform.networks.bts.evaluation import eval_grid, eval_options
from fieldkd.platform.networks.bts.geometry import inverse_depth_samples, pixel_rays
from fieldkd.platform.networks.bts.stage import load_bts_net, sequence_data
from fieldkd.platform.networks.bts.tasks import (
    TASK_DEFAULTS,
    DistilledBTSTask,
    density_in_input_frame,
    patch_pixels,
    sequence_batch,
)

THRESHOLD = 0.5  # occupied: density above it (the evaluator's)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("teacher")
    parser.add_argument("student")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    teacher, student = load_bts_net(args.teacher).eval(), load_bts_net(args.student).eval()
    cfg = dict(TASK_DEFAULTS)
    task = DistilledBTSTask(student, teacher, iter([]), "cpu", {"render_head": "none", "jitter": False})
    cells = eval_grid(eval_options({})).reshape(-1, 3)
    items = sequence_data({"path": None}).eval_items()
    clip = lambda d: d.clamp(0.0, cfg["kd_clip"])
    totals = {"student": 0, "teacher": 0}
    for index in range(len(items)):
        item = items[index]
        inputs = (item["images"], item["intrinsics"], item["cam_to_world"], cells)
        t = density_in_input_frame(teacher, *inputs, head="multi", views=cfg["encoder_views"]).density
        s = density_in_input_frame(student, *inputs, head="single").density
        images, ks, c2w = sequence_batch(item, torch.device("cpu"))
        with torch.no_grad():
            density_fn = task.item_density_fn(images, ks, c2w)
            ray_l1 = []
            for frame in range(images.shape[1]):
                uv = patch_pixels(16, cfg["patch_size"], *images.shape[-2:], "cpu").reshape(-1, 2)
                origins, dirs = pixel_rays(ks[0, frame], c2w[0, frame], uv)
                z = inverse_depth_samples(cfg["near"], cfg["far"], cfg["n_samples"], (len(uv),))
                ray_l1.append(float(density_fn((origins[:, None] + z[..., None] * dirs[:, None]).reshape(-1, 3))[1]) / cfg["kd_weight"])
        occupied = {"student": int((s > THRESHOLD).sum()), "teacher": int((t > THRESHOLD).sum())}
        for key in totals:
            totals[key] += occupied[key]
        print(f"frame {index}: slab clipped L1 {float((clip(s) - clip(t)).abs().mean()):.3f}, occupied cells "
              f"student {occupied['student']} teacher {occupied['teacher']}; clipped L1 at ray samples, per frame: "
              + ", ".join(f"{v:.3f}" for v in ray_l1))
    print(f"all frames: occupied cells student {totals['student']} teacher {totals['teacher']}")


if __name__ == "__main__":
    main()
