"""DaC end to end: the split, parallel experts, routed distillation on Ray Train, fine-tuning, baseline."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from conftest import tiny_run_overrides
from controls import untrained_psnr
from fieldkd.methods import dac
from fieldkd.platform.cli import compose_config
from fieldkd.platform.errors import InputError
from fieldkd.platform.runner import execute
from fieldkd.platform.stages import StageRequest, fit_stage
from fieldkd.platform.tracking import Run

KPLANES = ["field.resolutions=[16,32]"]
# Margins in dB over the same field untrained (10.48 dB on the two test views). Observed: experts
# (60 steps, half the views) 12.91/13.00 and 12.71/12.74 dB; the distilled student (40 steps) 11.44 dB;
# the fine-tuned student 13.34 dB; the baseline 14.45 dB (alone: 11.94 dB after 40 steps, 13.83 after
# 80). At this size the student does not beat the baseline, so no such claim is asserted.
EXPERT_GAIN = 1.2
DISTILLED_GAIN = 0.4  # 40 steps distil little at this size: observed +0.96
FINETUNED_GAIN = 1.7  # the fine-tuned student and the baseline


def dac_config(scene, out, *extra, steps=40):
    base = [o for o in tiny_run_overrides(scene, out, steps) if not o.startswith("field.")]
    return compose_config(base + ["method=dac", "tracking.system_metrics_s=0", "trainer.progress=false", *extra])


def children(client, run_id):
    found = client.search_runs([client.get_run(run_id).info.experiment_id],
                               f"tags.`mlflow.parentRunId` = '{run_id}'")
    return {r.data.tags["fieldkd.stage"]: r for r in found}


def test_dac_experts_in_parallel_then_a_distilled_and_fine_tuned_student_against_a_baseline(
        tiny_blender, tmp_path, mlflow_uri, module_ray):
    cfg = dac_config(tiny_blender, tmp_path / "out", *KPLANES, "dac.experts=2", "dac.with_baseline=true",
                     "compute.workers=2", "eval.max_views=null", "trainer.log_every=5",
                     "dac.expert.trainer.steps=60")
    assert cfg["field"]["name"] == "kplanes"  # DaC's default architecture
    run_id, metrics = execute(cfg, dac.run)

    client = MlflowClient(mlflow_uri)
    # The same k-planes field untrained, on the same two test views: 10.48 dB.
    control = untrained_psnr(cfg)
    scores = {k: metrics[f"{k}/test/psnr"] for k in ("expert_0", "expert_1", "student_distilled", "student",
                                                      "baseline")}
    print("observed:", {k: round(v, 2) for k, v in scores.items()}, "control", round(control, 2))
    for key in ("expert_0", "expert_1"):
        assert scores[key] > control + EXPERT_GAIN, (key, scores, control)
    assert scores["student_distilled"] > control + DISTILLED_GAIN, (scores, control)
    for key in ("student", "baseline"):
        assert scores[key] > control + FINETUNED_GAIN, (key, scores, control)
    # Each expert is also scored on the test views of its own sector (2 test views: some expert has one).
    assert any(f"expert_{k}/own/test/psnr" in metrics for k in (0, 1))

    parent = client.get_run(run_id)
    artifacts = {a.path for a in client.list_artifacts(run_id, "partition")}
    assert {"partition/views.tsv", "partition/cameras.png"} <= artifacts
    table = client.download_artifacts(run_id, "partition/views.tsv", str(tmp_path))
    rows = [line.split("\t") for line in open(table).read().splitlines()[1:]]
    assert len(rows) == 8 and {r[2] for r in rows} == {"0", "1"}
    assert parent.data.tags["fieldkd.partition"] == "azimuth"
    counts = [parent.data.metrics[f"partition/expert_{k}/views"] for k in (0, 1)]
    assert sum(counts) == 8 and [sum(r[2] == str(k) for r in rows) for k in (0, 1)] == counts

    stages = children(client, run_id)
    assert set(stages) == {"expert_0", "expert_1", "student_distilled", "student", "baseline"}
    # The summary's unprefixed metrics are the fine-tuned student's, as its own run recorded them.
    for key in ("test/psnr", "test/ssim"):
        assert metrics[key] == pytest.approx(stages["student"].data.metrics[key], rel=1e-12), key
    assert all(s.data.params["field.name"] == "kplanes" for s in stages.values())
    # The experts trained at the same time, in different processes.
    e0, e1 = stages["expert_0"], stages["expert_1"]
    assert e0.data.metrics["train/steps"] == e1.data.metrics["train/steps"] == 60
    assert metrics["time/experts"] < e0.data.metrics["train/seconds"] + e1.data.metrics["train/seconds"] + 30

    distilled, student, baseline = stages["student_distilled"], stages["student"], stages["baseline"]
    assert distilled.data.tags["fieldkd.task"] == "distill"
    assert len(distilled.data.tags["fieldkd.teacher_checkpoint"].split(";")) == 2
    # DaC's four terms, nothing else; on two Ray Train workers whose replicas stay identical.
    logged = {k for k in distilled.data.metrics if k.startswith("distill/") and k not in ("distill/stage",
                                                                                            "distill/psnr_to_teacher")}
    assert logged == {"distill/interlevel", "distill/colour", "distill/alpha", "distill/rgb"}
    for stage in (distilled, student, baseline):
        assert stage.data.tags["fieldkd.workers"] == "2"
        assert stage.data.metrics["train/replica_spread"] == 0.0
    # The baseline takes as many steps as distillation and fine-tuning together ...
    assert baseline.data.metrics["train/steps"] == (distilled.data.metrics["train/steps"]
                                                    + student.data.metrics["train/steps"])
    # ... and the fine-tuning starts from the distilled field and its grid: a stage that
    # starts there and takes no step scores exactly what the distilled student scored.
    distilled_checkpoint = tmp_path / "out" / run_id / "student_distilled" / "last.pt"
    check = Run.start(cfg["tracking"]["experiment"], "check")
    untrained = {**cfg, "trainer": {**cfg["trainer"], "steps": 0}}
    outcome = fit_stage(StageRequest("check", check.run_id, mlflow_uri, str(tmp_path / "out" / run_id), untrained,
                                     init=str(distilled_checkpoint)))
    assert outcome.steps == 0
    assert outcome.metrics["test/psnr"] == metrics["student_distilled/test/psnr"]


def test_bad_dac_inputs_are_named(tiny_blender, tmp_path, mlflow_uri, module_ray):
    # One Ray for every case: execute() joins it instead of starting and stopping its own.
    with pytest.raises(InputError, match="dac.*cannot split 8 views among 9"):
        execute(dac_config(tiny_blender, tmp_path / "out", *KPLANES, "dac.experts=9"), dac.run)
    with pytest.raises(InputError, match="distill.inquirer.*training_rays"):
        execute(dac_config(tiny_blender, tmp_path / "out", *KPLANES, "distill.inquirer=sphere"), dac.run)
    with pytest.raises(InputError, match="dac.partition.*kmeans"):
        execute(dac_config(tiny_blender, tmp_path / "out", *KPLANES, "dac.partition=kmeans"), dac.run)
    with pytest.raises(InputError, match="checkpoint to start from not found"):
        fit_stage(StageRequest("check", "run", mlflow_uri, str(tmp_path), dac_config(tiny_blender, tmp_path, *KPLANES),
                               init=str(tmp_path / "missing.pt")))


def test_a_stage_learns_from_the_views_it_is_given(tiny_blender):
    from fieldkd.platform.scenes import load_scene
    from fieldkd.platform.stages import StageRequest

    scene = load_scene("blender", tiny_blender)
    request = StageRequest("expert_0", "run", "uri", "out", {}, views=[5, 1])
    split = request.training_split(scene)
    train = scene.split("train")
    assert split.frame_paths == [train.frame_paths[5], train.frame_paths[1]]
    assert split.images.shape[0] == 2 and (split.images[0] == train.images[5]).all()
    assert (split.depths[1] == train.depths[1]).all() and (split.cameras.c2w[1] == train.cameras.c2w[1]).all()
    assert len(StageRequest("baseline", "run", "uri", "out", {}).training_split(scene)) == len(train)
    with pytest.raises(ValueError, match="view indices"):
        StageRequest("expert_0", "run", "uri", "out", {}, views=[8]).training_split(scene)
