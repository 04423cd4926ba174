"""KDBTS checkpoints scored on every usable frame of the bundled driving set's test sequences, not
only the every-2nd frames of its split (few frames make each score noisy: the split of the set's
version 2 held 4, from one street).

    python benchmarks/kdbts_dense_eval.py [--split-frames] NAME=HEAD=CHECKPOINT [NAME=HEAD=CHECKPOINT ...]

HEAD is ``single`` or ``multi`` (the head the stage trained: teacher multi, baseline and student
single). A frame is usable where it has a pose, a posed successor (the stereo pair one frame ahead)
and 20 LiDAR sweeps from it on. The dense split lives in a temporary folder that links to the bundled
set (read with ``scene.allow_outside_paths``); evaluation options are `method=kdbts`'s. Prints one
markdown row per checkpoint; a multi head also gets its input-view-alone scores. ``--split-frames``
scores on the bundled split's own test frames instead (as `fieldkd run method=kdbts` does).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from fieldkd.platform.config import compose_config
from fieldkd.platform.networks.bts.evaluation import evaluate_bts
from fieldkd.platform.networks.bts.stage import load_bts_net, sequence_data
from fieldkd.platform.networks.bts.tasks import task_config
from fieldkd.platform.scenes import kitti360
from fieldkd.platform.scenes.kitti_generator import default_kitti_dir

KEYS = ("occupancy/ie_acc", "occupancy/ie_rec", "occupancy/o_acc", "occupancy_input_view/ie_acc",
        "occupancy_input_view/ie_rec", "occupancy_input_view/o_acc", "occupancy/frames")


def dense_split_folder(root: Path, folder: Path, sweeps: int) -> Path:
    """``folder`` linking to ``root``'s data, with a test split of every usable frame of its test sequences."""
    for name in ("calibration", "data_2d_raw", "data_3d_raw", "data_poses", "ground_truth"):
        if (root / name).exists():
            (folder / name).symlink_to(root / name, target_is_directory=True)
    (folder / "splits").mkdir()
    (folder / "splits" / "train_files.txt").write_text((root / "splits" / "train_files.txt").read_text())
    rows = []
    for sequence in sorted({s for s, _, _ in kitti360.read_split(root / "splits" / "test_files.txt")}):
        poses = kitti360.read_sequence_poses(root, sequence)
        last = max(poses)
        rows += [(sequence, f, "l") for f in sorted(poses) if f + 1 in poses and f + sweeps <= last + 1]
    kitti360.write_split(folder / "splits" / "test_files.txt", rows)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", metavar="NAME=HEAD=CHECKPOINT")
    parser.add_argument("--split-frames", action="store_true", help="the bundled split's test frames only")
    args = parser.parse_args()
    cfg = compose_config(["method=kdbts"])
    views = task_config(cfg["bts"]["loss"])["encoder_views"]
    ecfg = {**cfg["eval"], "log_images": 0}
    with tempfile.TemporaryDirectory() as tmp:
        root = default_kitti_dir(progress=False)
        folder = root if args.split_frames else dense_split_folder(root, Path(tmp), int(cfg["scene"]["lidar_sweeps"]))
        data = sequence_data({**cfg["scene"], "path": str(folder), "allow_outside_paths": True})
        print("| model | head | " + " | ".join(KEYS) + " |")
        print("|---|---|" + "---|" * len(KEYS))
        for spec in args.models:
            name, head, checkpoint = spec.split("=", 2)
            metrics = evaluate_bts(load_bts_net(checkpoint).eval(), data, ecfg, head=head, views=views)
            cells = (f"{metrics[k]:.3f}" if k in metrics else "" for k in KEYS)
            print(f"| {name} | {head} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
