"""KDBTS: the evaluation's plumbing in closed forms, the head that is scored, the tune space, and the
whole `fieldkd run method=kdbts` pipeline on a tiny generated driving set, as MLflow records it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from fieldkd.platform.networks.bts import build_bts
from fieldkd.platform.networks.bts.evaluation import (
    bird_eye,
    evaluate_bts,
    min_behind_for,
    official_visibility,
    projected_depth,
)
from fieldkd.platform.networks.bts.stage import load_bts_net, sequence_data
from fieldkd.platform.scenes import kitti_generator as gen
from fieldkd.platform.stage_kinds import stage_kind

SIZE = {"width": 48, "height": 16}
OPTIONS = gen.Options(fisheyes=False, n_frames=30, train_sequences=1, test_sequences=1, test_stride=5, no_pose=(),
                      **SIZE)
NET = {"blocks": [1, 1], "encoder_widths": [8, 8, 16], "decoder_widths": [8, 8, 16], "feature_channels": 16}
# the generated LiDAR's range image (256 azimuth steps, 64 beams): see test_kitti_occupancy.py
EVAL = {"bts_azimuth_res": 2.11, "bts_elevation_res": 0.85, "log_images": 0}


@pytest.fixture(scope="module")
def driving(tmp_path_factory):
    return gen.write_dataset(tmp_path_factory.mktemp("kdbts") / "kitti", OPTIONS, progress=False)


def test_projected_depth_keeps_the_nearest_point_per_pixel():
    k = np.array([[10.0, 0.0, 2.0], [0.0, 10.0, 1.0], [0.0, 0.0, 1.0]])
    points = np.array([[0.0, 0.0, 5.0],     # pixel (2, 1)
                       [0.0, 0.0, 3.0],     # the same pixel, nearer: wins
                       [0.4, 0.2, 2.0],     # u = 10 * 0.2 + 2 = 4, v = 10 * 0.1 + 1 = 2
                       [0.0, 0.0, -1.0],    # behind the camera
                       [5.0, 0.0, 1.0]])    # u = 52: outside
    depth = projected_depth(points, k, 3, 5)
    expected = np.zeros((3, 5))
    expected[1, 2], expected[2, 4] = 3.0, 2.0
    np.testing.assert_array_equal(depth, expected)


def test_min_behind_scales_the_official_threshold():
    assert min_behind_for(20, 18) == 18 and min_behind_for(10, 18) == 9 and min_behind_for(1, 18) == 1
    assert min_behind_for(25, 18) == 22


def test_official_visibility_adds_the_cells_in_front_of_the_predicted_depth_and_clears_their_occupancy():
    """BTS's evaluator_lidar.py: visible = seen by the sweep | no deeper than the rendered depth at the
    nearest pixel (border-clamped); occupied &= ~visible."""
    k = np.array([[10.0, 0.0, 1.0], [0.0, 10.0, 0.0], [0.0, 0.0, 1.0]])  # 3 x 1 pixels: u = 10 x / z + 1
    depth = np.array([[4.0, 8.0, 12.0]])
    cells = np.array([[-0.5, 0.0, 5.0],    # u = 0: behind 4 m
                      [0.0, 0.0, 7.99],    # u = 1: in front of 8 m
                      [0.0, 0.0, 8.0],     # u = 1: at the depth counts as visible
                      [0.0, 0.0, 9.0],     # u = 1: behind
                      [5.0, 0.0, 10.0],    # u = 6: clamped to the last pixel (12 m), in front
                      [-5.0, 0.0, 10.0]])  # u = -4: clamped to the first pixel (4 m), behind
    seen = np.array([False, False, False, False, False, True])
    gt = np.array([True, True, True, True, True, True])
    visible, occupied = official_visibility(cells, seen, gt, depth, k)
    np.testing.assert_array_equal(visible, [False, True, True, False, True, True])
    np.testing.assert_array_equal(occupied, [True, False, False, True, False, False])


def test_bird_eye_marks_errors_and_puts_the_near_row_at_the_bottom():
    pred = np.array([[True, False], [False, False]])  # row 0: nearest
    gt = np.array([[True, True], [False, False]])
    visible = np.array([[False, False], [True, False]])
    picture = bird_eye(pred, gt, visible)
    assert tuple(picture[1, 0]) == (40, 40, 40)      # right and occupied: dark, in the bottom row
    assert tuple(picture[1, 1]) == (40, 90, 220)     # missed: blue
    assert tuple(picture[0, 0]) == (245, 245, 245)   # visible and empty
    assert tuple(picture[0, 1]) == (205, 220, 205)   # invisible and empty
    assert tuple(bird_eye(pred, np.zeros_like(gt), None)[1, 0]) == (220, 50, 40)  # a false occupied cell: red


def constant_heads(single: float, multi: float):
    """A network whose single head says ``single`` and whose multi head says ``multi`` everywhere
    (pre-softplus): the last layers' weights zeroed, their biases set."""
    torch.manual_seed(0)
    net = build_bts(NET)
    with torch.no_grad():
        for layer, value in ((net.single_head[-1], single), (net.multi_fuse[-1], multi)):
            layer.weight.zero_()
            layer.bias.fill_(value)
    return net


def test_scores_come_from_the_head_asked_for_in_closed_form(driving, one_torch_thread):
    """Single head all empty, multi head all occupied: each head's scores are the closed forms of its
    constant prediction, so a number from the wrong head cannot pass (the official evaluator scores the
    multi head whichever is asked)."""
    data = sequence_data({"path": str(driving), **SIZE})
    net = constant_heads(-20.0, 20.0)
    empty = evaluate_bts(net, data, EVAL, head="single", views=2)
    full = evaluate_bts(net, data, EVAL, head="multi", views=2)
    for prefix in ("occupancy", "occupancy_exact"):
        share = full[f"{prefix}/o_prec"]  # all occupied: precision is the occupied share of the cells
        assert 0 < share < 0.5, share  # parked cars and poles cross the slab: a grid with both classes
        assert empty[f"{prefix}/o_acc"] == pytest.approx(1 - share, abs=1e-12)
        assert full[f"{prefix}/o_acc"] == pytest.approx(share, abs=1e-12) and full[f"{prefix}/o_rec"] == 1.0
        assert empty[f"{prefix}/ie_rec"] == 1.0 and full[f"{prefix}/ie_rec"] == 0.0
        assert empty[f"{prefix}/o_rec"] == 0.0 and np.isnan(empty[f"{prefix}/o_prec"])
        # every invisible cell is right under exactly one of the two constant predictions
        assert empty[f"{prefix}/ie_acc"] + full[f"{prefix}/ie_acc"] == pytest.approx(1.0, abs=1e-12)
    assert empty["occupancy_exact/lidar_agreement"] >= 0.95  # LiDAR truth against the exact one
    # the official visibility: an empty field renders to its far plane (80 m), so every cell of the slab
    # (z <= 20 m) lies in front of its depth: all visible, no occupied cell left, nothing invisible to score
    assert empty["occupancy_official/o_acc"] == 1.0 and np.isnan(empty["occupancy_official/ie_acc"])
    # a full one stops at its first samples (3 m): the sweep alone decides, and its seen cells are emptied
    assert full["occupancy_official/ie_rec"] == 0.0 and full["occupancy_official/o_rec"] == 1.0
    assert full["occupancy_official/o_prec"] < full["occupancy/o_prec"]
    # an empty field renders every ray to its far plane; a full one stops at the first samples
    assert empty["depth/rmse"] > full["depth/rmse"] and empty["depth/abs_rel"] > 1.0
    assert stage_kind("bts_distilled").head_of({"bts": {"head": "multi"}}) == "single"  # a student is always single
    assert stage_kind("bts_self_supervised").head_of({"bts": {"head": "multi"}}) == "multi"


def test_the_multi_head_is_also_scored_on_the_input_view_alone(driving, one_torch_thread):
    """``occupancy_input_view/*``: the multi head given only the input view, which is what a single-view
    student sees; it is the same score as asking the multi head for one view, and only the multi head
    with more than one view reports it."""
    data = sequence_data({"path": str(driving), **SIZE})
    torch.manual_seed(3)
    net = build_bts(NET)
    with torch.no_grad():  # densities spread about the threshold, so that the second view changes cells
        net.multi_fuse[-1].weight.mul_(30.0)
        net.multi_fuse[-1].bias.fill_(0.0)
    two = evaluate_bts(net, data, EVAL, head="multi", views=2)
    one = evaluate_bts(net, data, EVAL, head="multi", views=1)
    single = evaluate_bts(net, data, EVAL, head="single", views=2)
    for key in ("o_acc", "ie_acc", "ie_rec", "o_rec"):
        assert two[f"occupancy_input_view/{key}"] == pytest.approx(one[f"occupancy/{key}"], abs=1e-12, nan_ok=True)
    assert any(two[f"occupancy/{k}"] != one[f"occupancy/{k}"] for k in ("o_acc", "o_rec"))  # the views differ
    assert not [k for k in {**one, **single} if k.startswith("occupancy_input_view/")]


def test_tune_space_reaches_the_distillation_term():
    from fieldkd.platform.compute.search_space import (
        load_space,
        param_space,
        trial_overrides,
    )
    from fieldkd.platform.config import compose_config

    keys = list(compose_config([])["tune"])
    space = load_space("kdbts", keys)
    assert set(space.domains) == {"bts.loss.kd_weight", "bts.loss.kd_clip"}
    assert space.settings["metric"] == "occupancy/ie_acc" and space.settings["scheduler"] == "asha"
    drawn = {k: v.sample() for k, v in param_space(space).items()}
    trial = compose_config(trial_overrides(["method=kdbts"], drawn))
    assert trial["bts"]["loss"]["kd_weight"] == drawn["bts.loss.kd_weight"]
    assert trial["bts"]["loss"]["kd_clip"] == drawn["bts.loss.kd_clip"]


def fieldkd(args, cwd, uri):
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    return subprocess.run([sys.executable, "-m", "fieldkd.platform.cli", *args], check=False, cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def test_kdbts_pipeline_end_to_end(driving, tmp_path, one_torch_thread):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    net = [f"bts.network.{k}={json.dumps(v).replace(' ', '')}" for k, v in NET.items()]
    proc = fieldkd(["run", "method=kdbts", f"scene.path={driving}", *(f"scene.{k}={v}" for k, v in SIZE.items()),
                    *net, "trainer.steps=40", "trainer.lr=0.001", "trainer.warmup_steps=2", "trainer.checkpoint_every=40",
                    "trainer.log_every=5", "bts.loss.patches_per_frame=2",
                    *(f"eval.{k}={v}" for k, v in EVAL.items() if k != "log_images"), "eval.log_images=1",
                    "tracking.system_metrics_s=0", "trainer.progress=false", f"output_dir={tmp_path / 'out'}"],
                   tmp_path, uri)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    summary = json.loads(lines[-1])
    assert summary["method"] == "kdbts"
    metrics = summary["metrics"]
    for key in ("occupancy/o_acc", "occupancy/ie_acc", "occupancy/ie_rec", "occupancy/o_prec", "occupancy/o_rec",
                "occupancy_exact/o_acc", "occupancy_exact/ie_acc", "depth/abs_rel", "depth/rmse", "depth/a1"):
        assert key in metrics and f"teacher/{key}" in metrics and f"baseline/{key}" in metrics, key
        assert metrics[key] == metrics[f"student/{key}"]

    client = MlflowClient(uri)
    parent = client.get_run(summary["run_id"])
    assert parent.info.status == "FINISHED"
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{summary['run_id']}'")
    stages = {c.data.tags["fieldkd.stage"]: c for c in children}
    assert set(stages) == {"teacher", "baseline", "student"}
    assert all(c.info.status == "FINISHED" for c in children)
    heads = {name: run.data.tags["fieldkd.head"] for name, run in stages.items()}
    assert heads == {"teacher": "multi", "baseline": "single", "student": "single"}
    teacher_ckpt = tmp_path / "out" / summary["run_id"] / "teacher" / "last.pt"
    assert stages["student"].data.tags["fieldkd.init"] == str(teacher_ckpt)
    images = [a.path for a in client.list_artifacts(stages["student"].info.run_id, "images")]
    assert any("occupancy" in p for p in images) and any("depth" in p for p in images), images

    # The student's summary is its single head's: rescoring its checkpoint through each head, only the
    # single head reproduces it (teacher and student share one network, so both heads are trained).
    student = load_bts_net(tmp_path / "out" / summary["run_id"] / "student" / "last.pt")
    data = sequence_data({"path": str(driving), **SIZE})
    single = evaluate_bts(student, data, EVAL, head="single", views=2)
    multi = evaluate_bts(student, data, EVAL, head="multi", views=2)
    assert single["depth/rmse"] == pytest.approx(metrics["depth/rmse"], rel=1e-6)
    assert multi["depth/rmse"] != pytest.approx(metrics["depth/rmse"], rel=1e-3)

    # The student's densities move toward the teacher's: the KD term falls (its single head starts
    # untrained inside the teacher's network).
    history = sorted((m.step, m.value) for m in client.get_metric_history(stages["student"].info.run_id, "train/kd"))
    assert history[-1][0] == 40 and history[-1][1] < 0.7 * history[0][1], history

    # A given teacher and no baseline: one child, the student, starting from that checkpoint, on two Ray
    # Train workers (a batch of 2 split between them; gradients averaged after each backward pass).
    again = fieldkd(["run", "method=kdbts", f"scene.path={driving}", *(f"scene.{k}={v}" for k, v in SIZE.items()),
                     *net, "trainer.steps=10", "trainer.warmup_steps=1", "trainer.checkpoint_every=10",
                     "trainer.log_every=1", "compute.workers=2", "bts.batch_size=2",
                     "bts.loss.patches_per_frame=2", f"kdbts.teacher={teacher_ckpt}", "kdbts.baseline=false",
                     *(f"eval.{k}={v}" for k, v in EVAL.items()), "eval.bts_frames=1",
                     "tracking.system_metrics_s=0", "trainer.progress=false", f"output_dir={tmp_path / 'out'}"],
                    tmp_path, uri)
    assert again.returncode == 0, again.stderr[-3000:]
    second = json.loads(again.stdout.strip().splitlines()[-1])
    assert not any(k.startswith(("teacher/", "baseline/")) for k in second["metrics"])
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{second['run_id']}'")
    assert [c.data.tags["fieldkd.stage"] for c in children] == ["student"]
    assert children[0].data.tags["fieldkd.init"] == str(teacher_ckpt)
    student = children[0]
    assert student.data.tags["fieldkd.workers"] == "2"
    assert student.data.metrics["train/replica_spread"] == 0.0  # the workers' weights stayed identical
    kd = [v for _, v in sorted((m.step, m.value) for m in client.get_metric_history(student.info.run_id, "train/kd"))]
    assert len(kd) == 10 and np.mean(kd[-3:]) < np.mean(kd[:3]), kd  # and they learned together

    # The student started from the baseline (kdbts.student_init=baseline) learns from a frozen teacher
    # copy: its weights start as the new baseline's, and the teacher is the given checkpoint; it trains
    # for kdbts.student_steps (the command line's 6 over the kept_encoder recipe's 2400), keeping the
    # encoder-decoder it started from (kdbts_student=kept_encoder).
    third = fieldkd(["run", "method=kdbts", f"scene.path={driving}", *(f"scene.{k}={v}" for k, v in SIZE.items()),
                     *net, "trainer.steps=4", "trainer.warmup_steps=1", "trainer.checkpoint_every=4",
                     "bts.loss.patches_per_frame=2", f"kdbts.teacher={teacher_ckpt}", "kdbts.student_init=baseline",
                     "kdbts_student=kept_encoder", "kdbts.student_steps=6", *(f"eval.{k}={v}" for k, v in EVAL.items()),
                     "eval.bts_frames=1",
                     "tracking.system_metrics_s=0", "trainer.progress=false", f"output_dir={tmp_path / 'out'}"],
                    tmp_path, uri)
    assert third.returncode == 0, third.stderr[-3000:]
    run_id = json.loads(third.stdout.strip().splitlines()[-1])["run_id"]
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
    stages = {c.data.tags["fieldkd.stage"]: c.data.tags for c in children}
    assert set(stages) == {"baseline", "student"}
    steps = {c.data.tags["fieldkd.stage"]: c.data.params["trainer.steps"] for c in children}
    assert steps == {"baseline": "4", "student": "6"}  # kdbts.student_steps: the student's alone
    assert stages["student"]["fieldkd.init"] == str(tmp_path / "out" / run_id / "baseline" / "last.pt")
    assert stages["student"]["fieldkd.teacher_checkpoint"] == str(teacher_ckpt)
    assert stages["student"]["fieldkd.kd_teacher"] == "frozen" and stages["student"]["fieldkd.head"] == "single"
    baseline = load_bts_net(tmp_path / "out" / run_id / "baseline" / "last.pt").state_dict()
    kept = load_bts_net(tmp_path / "out" / run_id / "student" / "last.pt").state_dict()
    assert all(torch.equal(kept[k], v) for k, v in baseline.items() if k.startswith("backbone."))
    assert not torch.equal(kept["single_head.0.weight"], baseline["single_head.0.weight"])


def test_the_kept_encoder_recipe_sets_only_the_students_keys():
    from fieldkd.platform.config import compose_config

    default = compose_config(["method=kdbts"])
    assert compose_config(["method=kdbts", "kdbts_student=official"]) == default
    kept = compose_config(["method=kdbts", "kdbts_student=kept_encoder"])
    changed = {k: kept["bts"]["loss"][k] for k in kept["bts"]["loss"] if kept["bts"]["loss"][k] != default["bts"]["loss"][k]}
    assert changed == {"render_head": "none", "kd_weight": 1.0, "kd_points": 8192, "train_encoder": False}
    assert kept["bts"]["teacher"] == "frozen" and kept["kdbts"]["student_steps"] == 2400
    assert {k: v for k, v in kept.items() if k not in ("bts", "kdbts")} == \
        {k: v for k, v in default.items() if k not in ("bts", "kdbts")}


def test_a_student_from_the_baseline_needs_the_baseline_and_a_frozen_teacher(driving, tmp_path):
    for extra, message in ((["kdbts.baseline=false", "bts.teacher=frozen"], "needs kdbts.baseline=true"),
                           ([], "set bts.teacher=frozen")):
        proc = fieldkd(["run", "method=kdbts", f"scene.path={driving}", "kdbts.student_init=baseline", *extra,
                        f"output_dir={tmp_path / 'out'}"], tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}")
        assert proc.returncode != 0 and "kdbts.student_init" in proc.stderr and message in proc.stderr, proc.stderr[-2000:]
        assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("last.pt"))


def test_a_student_batch_that_the_workers_cannot_split_is_refused_before_training(driving, tmp_path):
    proc = fieldkd(["run", "method=kdbts", f"scene.path={driving}", "compute.workers=2", "bts.batch_size=1",
                    f"output_dir={tmp_path / 'out'}"], tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert proc.returncode != 0
    assert "bts.batch_size" in proc.stderr and "2 Ray Train workers" in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("last.pt"))
