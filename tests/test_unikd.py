"""UNIKD end to end on a small generated room in MonoSDF format: chunks, the filtered teacher,
the baselines as concurrent streams, the forgetting matrix, meshes, and a Tune sweep."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from controls import untrained_psnr
from fieldkd.methods import unikd
from fieldkd.platform.cli import compose_config
from fieldkd.platform.distill.stage import TeacherRef
from fieldkd.platform.errors import InputError
from fieldkd.platform.runner import execute
from fieldkd.platform.scenes import write_scene
from fieldkd.platform.stages import StageRequest, fit_stage
from fieldkd.platform.tracking import Run


@pytest.fixture(scope="module")
def tiny_room(tmp_path_factory):
    # 24 frames along the path, every 4th held out: 18 training and 6 test views.
    return write_scene("indoor", tmp_path_factory.mktemp("scenes") / "room", "monosdf", width=24, height=18,
                       n_frames=24, test_every=4, mesh_resolution=48, progress=False)


def small(scene, out, steps=30):
    return ["method=unikd", "scene=indoor", f"scene.path={scene}", f"trainer.steps={steps}",
            "trainer.log_every=5", "trainer.checkpoint_every=10", "trainer.batch_rays=128", "trainer.progress=false",
            "field.width=32", "field.depth=2", "field.skips=[]", "field.reg_points=64", "render.samples_per_ray=32",
            "eval.max_views=null", "eval.lpips=false", "eval.log_images=1", "eval.mesh_resolution=24",
            "tracking.system_metrics_s=0", f"output_dir={out}"]


# dB over the same SDF field untrained (13.0 dB on the room's 6 test views). Observed for one stage
# on the first chunk's 9 views: 14.55 dB after 10 steps, 15.06 dB after 30.
STREAM_GAIN = 1.0  # each stream ends after 60 steps in all
SWEEP_GAIN = 0.7  # 10 steps per chunk


def unikd_groups(cfg) -> dict[str, list[int]]:
    """The test views of each chunk, as the recipe groups them."""
    from fieldkd.platform.stages import load_scene_from_config

    scene = load_scene_from_config(cfg["scene"])
    chunks = unikd.contiguous_chunks(len(scene.split("train")), int(cfg["unikd"]["chunks"]))
    owner = unikd.chunk_of_views(scene.split("train"), chunks, scene.split("test"))
    return {f"chunk_{k}": [int(v) for v in (owner == k).nonzero()[0]] for k in range(len(chunks))}


def test_evenly_spaced_views_span_the_chunk():
    assert unikd.evenly_spaced([3, 4, 5, 6, 7], 3) == [3, 5, 7]
    assert unikd.evenly_spaced([3, 4, 5, 6, 7], 1) == [3]
    assert unikd.evenly_spaced([3, 4], 5) == [3, 4] and unikd.evenly_spaced([3, 4], None) == [3, 4]


def children_of(client, run_id):
    return client.search_runs([client.get_run(run_id).info.experiment_id], f"tags.`mlflow.parentRunId` = '{run_id}'")


def children(client, run_id):
    return {r.data.tags["fieldkd.stage"]: r for r in children_of(client, run_id)}


def test_unikd_stream_with_every_baseline(tiny_room, tmp_path, mlflow_uri):
    cfg = compose_config(small(tiny_room, tmp_path / "out") + ["unikd.chunks=2", "unikd.threshold=0.5",
                                                               "eval.during_stream_views=1"])
    assert cfg["field"]["name"] == "sdf" and cfg["field"]["uncertainty"] is True
    run_id, metrics = execute(cfg, unikd.run)

    for key in ("test/psnr", "chunk_0/test/psnr", "chunk_1/test/psnr", "mesh/chamfer", "mesh/fscore",
                "forgetting/mean"):
        assert math.isfinite(metrics[key]), key
        for baseline in ("finetune", "nofilter"):
            assert math.isfinite(metrics[f"{baseline}/{key}"]), f"{baseline}/{key}"
    assert math.isfinite(metrics["joint/test/psnr"]) and math.isfinite(metrics["joint/mesh/chamfer"])
    assert 0 <= metrics["mesh/fscore"] <= 1
    control = untrained_psnr(cfg)
    print(f"observed: unikd {metrics['test/psnr']:.2f} finetune {metrics['finetune/test/psnr']:.2f} "
          f"nofilter {metrics['nofilter/test/psnr']:.2f} joint {metrics['joint/test/psnr']:.2f} control {control:.2f}")
    for key in ("test/psnr", "finetune/test/psnr", "nofilter/test/psnr", "joint/test/psnr"):
        assert metrics[key] > control + STREAM_GAIN, (key, metrics[key], control)
    assert "joint/forgetting/mean" not in metrics  # one stage: nothing to forget

    client = MlflowClient(mlflow_uri)
    stages = children(client, run_id)
    assert set(stages) == {"chunk_0", "chunk_1", "finetune_chunk_1", "nofilter_chunk_1", "joint"}
    steps = {name: r.data.metrics["train/steps"] for name, r in stages.items()}
    assert steps == {"chunk_0": 30, "chunk_1": 30, "finetune_chunk_1": 30, "nofilter_chunk_1": 30, "joint": 60}

    # The chunks: contiguous runs of the 18 training views, in path order.
    table = client.download_artifacts(run_id, "chunks/views.tsv", str(tmp_path))
    rows = [line.split("\t") for line in open(table).read().splitlines()[1:]]
    assert [int(r[0]) for r in rows] == list(range(18)) and [int(r[2]) for r in rows] == [0] * 9 + [1] * 9

    out = tmp_path / "out" / run_id
    chunk_1, finetune, nofilter = stages["chunk_1"], stages["finetune_chunk_1"], stages["nofilter_chunk_1"]
    assert chunk_1.data.tags["fieldkd.task"] == "incremental"
    assert chunk_1.data.tags["fieldkd.teacher_checkpoint"] == str(out / "chunk_0" / "last.pt")
    assert nofilter.data.tags["fieldkd.teacher_checkpoint"] == str(out / "chunk_0" / "last.pt")
    assert "fieldkd.teacher" not in finetune.data.tags  # fine-tuning has no teacher
    # Teacher batches weigh sin^2(pi r / 2), r in chunk 1's half of the stream: [0.5, 1.0].
    kd = [m.value for m in client.get_metric_history(chunk_1.info.run_id, "distill/kd_weight")]
    assert kd and all(0.5 - 1e-6 <= w <= 1.0 + 1e-6 for w in kd) and kd == sorted(kd)
    assert {"distill/psnr", "distill/depth", "distill/normal_l1", "train/depth", "train/normal_cos",
            "train/uncertainty", "distill/filter/uncertainty/acceptance"} <= set(chunk_1.data.metrics)
    assert 0.0 <= chunk_1.data.metrics["distill/filter/uncertainty/acceptance"] <= 1.0
    assert nofilter.data.metrics["distill/filter/uncertainty/acceptance"] == 1.0  # no filter: every pose
    assert not any(k.startswith("distill/") for k in finetune.data.metrics)

    # Meshes where a stream ends, not after chunk 0.
    assert any(a.path.endswith(".ply") for a in client.list_artifacts(chunk_1.info.run_id, "mesh"))
    assert not client.list_artifacts(stages["chunk_0"].info.run_id, "mesh")

    # A stage before its stream's last scores one view of each chunk (eval.during_stream_views=1), the
    # first of each; the last stages score all 6 test views.
    def scored(stage):
        path = client.download_artifacts(stages[stage].info.run_id, "renders/test_per_view.json",
                                         str(tmp_path / stage))
        return [row[0] for row in json.loads(open(path).read())["data"]]

    groups = unikd_groups(cfg)
    assert len(groups) == 2 and scored("chunk_0") == [min(group) for group in groups.values()]
    for stage in ("chunk_1", "finetune_chunk_1", "nofilter_chunk_1", "joint"):
        assert scored(stage) == list(range(6)), stage

    # The streams trained at the same time: their intervals overlap.
    later = [stages[s] for s in ("chunk_1", "finetune_chunk_1", "nofilter_chunk_1", "joint")]
    assert max(r.info.start_time for r in later) < min(r.info.end_time for r in later)
    assert all(r.info.status == "FINISHED" for r in stages.values())

    # The forgetting matrix: a row per stage of each stream, the table agreeing with the metrics.
    path = client.download_artifacts(run_id, "forgetting/matrix.tsv", str(tmp_path))
    lines = [line.split("\t") for line in open(path).read().splitlines()]
    assert [(r[0], r[1]) for r in lines[1:]] == [("unikd", "chunk_0"), ("unikd", "chunk_1"),
                                                 ("finetune", "chunk_0"), ("finetune", "chunk_1"),
                                                 ("nofilter", "chunk_0"), ("nofilter", "chunk_1"), ("joint", "all")]
    assert float(lines[2][2]) == pytest.approx(metrics["chunk_0/test/psnr"], abs=1e-3)
    assert float(lines[4][3]) == pytest.approx(metrics["finetune/chunk_1/test/psnr"], abs=1e-3)
    assert float(lines[2][2]) - float(lines[1][2]) == pytest.approx(-metrics["forgetting/mean"], abs=2e-3)
    assert "forgetting/matrix.png" in {a.path for a in client.list_artifacts(run_id, "forgetting")}

    # The filter decides what the teacher teaches: an impossible threshold skips every teacher batch,
    # a generous one accepts every pose.
    chunk_0 = str(out / "chunk_0" / "last.pt")
    options = dict(task="incremental", teacher=TeacherRef(chunk_0, cfg["field"]), init=chunk_0,
                   views=list(range(9, 18)), teacher_views=list(range(9)), evaluate=False)
    for name, threshold, accepted in (("strict", 1e-9, 0.0), ("open", 1e9, 1.0)):
        check = Run.start(cfg["tracking"]["experiment"], name)
        stage_cfg = {**cfg, "trainer": {**cfg["trainer"], "steps": 10},
                     "distill": {**cfg["distill"], "uncertainty_threshold": threshold, "stream_span": [0.5, 1.0]}}
        fit_stage(StageRequest(name, check.run_id, mlflow_uri, str(tmp_path / "checks"), stage_cfg, **options))
        logged = client.get_run(check.run_id).data.metrics
        assert logged["distill/filter/uncertainty/acceptance"] == accepted
        assert logged["distill/skipped_batches"] == (5 if accepted == 0.0 else 0)


def test_bad_unikd_inputs_are_named(tiny_room, tmp_path, mlflow_uri, local_ray):
    # One Ray for every case: execute() joins it instead of starting and stopping its own.
    base = small(tiny_room, tmp_path / "out", steps=2)
    with pytest.raises(InputError, match="unikd.chunks.*between 1 and the 18"):
        execute(compose_config(base + ["unikd.chunks=19"]), unikd.run)
    with pytest.raises(InputError, match="unikd.baselines.*replay"):
        execute(compose_config(base + ["unikd.baselines=[replay]"]), unikd.run)
    with pytest.raises(InputError, match="unikd.filter"):
        execute(compose_config(base + ["unikd.filter=pixel"]), unikd.run)
    with pytest.raises(InputError, match="field.uncertainty"):
        execute(compose_config(base + ["field.uncertainty=false"]), unikd.run)
    with pytest.raises(InputError, match="unikd.streams.*no such config key"):
        execute(compose_config(base + ["+unikd.streams={s1: {unikd.treshold: 0.1}}"]), unikd.run)


def test_sweep_over_the_uncertainty_threshold(tiny_room, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["tune_space=unikd_uncertainty", *small(tiny_room, tmp_path / "out", steps=10), "unikd.chunks=2",
            "unikd.baselines=[]", "eval.mesh_resolution=16", "tracking.log_checkpoint=false",
            "tune.num_samples=2", "tune.max_concurrent=1"]
    proc = subprocess.run([sys.executable, "-m", "fieldkd.platform.cli", "sweep", *args], cwd=tmp_path,
                          env={**os.environ, "MLFLOW_TRACKING_URI": uri}, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["method"] == "unikd"
    assert set(summary["best_config"]) == {"unikd.threshold", "unikd.kd_weight", "supervision.uncertainty_floor"}
    assert summary["best_config"]["supervision.uncertainty_floor"] in (0.1, 0.03, 0.01)
    assert 0.005 <= summary["best_config"]["unikd.threshold"] <= 0.2
    assert 0.5 <= summary["best_config"]["unikd.kd_weight"] <= 2.0
    control = untrained_psnr(compose_config(args[1:]))
    print(f"observed: sweep best {summary['metrics']['test/psnr']:.2f} control {control:.2f}")
    assert summary["metrics"]["test/psnr"] > control + SWEEP_GAIN, (summary["metrics"], control)

    client = MlflowClient(uri)
    trials = children_of(client, summary["run_id"])
    assert len(trials) == 2
    for trial in trials:
        # Each trial is a whole stream: its chunks are its own child runs, the threshold its param.
        stages = children(client, trial.info.run_id)
        assert set(stages) == {"chunk_0", "chunk_1"}
        assert float(stages["chunk_1"].data.params["distill.uncertainty_threshold"]) == pytest.approx(
            float(trial.data.params["unikd.threshold"]))
    assert math.isfinite(summary["metrics"]["chunk_1/test/psnr"])


def test_a_trial_stopped_mid_stream_frees_its_place_for_the_next(tiny_room, tmp_path):
    """One trial at a time over a grid: the hopeless learning rate is stopped by ASHA at its first
    report (after chunk_0) while its stream goes on to chunk_1; the next trial must still run."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = tmp_path / "lr.yaml"
    # reduction factor 2: the cutoff is the median of the earlier reports, so the good 4e-3 trial
    # clears it with room (with 4 it sat at the 75th percentile, next to the 5e-3 trial: a coin flip).
    space.write_text("search: grid\nscheduler: asha\ngrace_period: 1\nreduction_factor: 2\n"
                     "metric: test/psnr\nmode: max\n"
                     "space:\n  trainer.lr: {grid: [5.0e-3, 1.0e-7, 4.0e-3]}\n")
    args = [f"tune_space={space}", *small(tiny_room, tmp_path / "out", steps=20), "unikd.chunks=2",
            "unikd.baselines=[]", "unikd.mesh=false", "tracking.log_checkpoint=false", "tune.max_concurrent=1"]
    proc = subprocess.run([sys.executable, "-m", "fieldkd.platform.cli", "sweep", *args], cwd=tmp_path,
                          env={**os.environ, "MLFLOW_TRACKING_URI": uri}, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    client = MlflowClient(uri)
    parent = client.get_run(summary["run_id"])
    assert parent.data.metrics["sweep/trials"] == 3
    assert parent.data.metrics["sweep/errored"] == 0, proc.stderr[-4000:]
    assert parent.data.metrics["sweep/stopped_early"] >= 1
    trials = {t.data.params["trainer.lr"]: t for t in children_of(client, summary["run_id"])}
    assert trials["1e-07"].data.tags["fieldkd.trial.stopped_early"] == "true"
    # The trial after it ran its whole stream: its last chunk trained every step and was scored (ASHA
    # may still stop the trial at that last report, which marks the chunk's run KILLED, not unfinished).
    after = children(client, trials["0.004"].info.run_id)
    assert set(after) == {"chunk_0", "chunk_1"}
    last = after["chunk_1"].data.metrics
    assert last["train/steps"] == 20 and math.isfinite(last["test/psnr"]), last

