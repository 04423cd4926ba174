"""The actor pool: trainings run at once, each in its own process, and survive a killed actor."""

import os
import signal
import threading
import time
from pathlib import Path

import psutil
from conftest import tiny_run_overrides
from mlflow.tracking import MlflowClient

from fieldkd.platform.cli import compose_config
from fieldkd.platform.compute.pool import Training, run_trainings, start_actors
from fieldkd.platform.stages import StageRequest, fit_stage
from fieldkd.platform.tracking import Run
from fieldkd.platform.train.checkpoint import load_checkpoint


def requests_for(names, scene, tmp_path, uri, steps=60):
    cfg = compose_config(tiny_run_overrides(scene, tmp_path / "out", steps))
    parent = Run.start("pool", "parent", tracking_uri=uri)
    return parent, [StageRequest(stage=name, run_id=parent.child(name).run_id, tracking_uri=uri,
                                 output_dir=str(tmp_path / "out" / parent.run_id), cfg=cfg) for name in names]


def test_trainings_overlap_and_return_checkpoint_paths(tiny_blender, tmp_path, mlflow_uri, local_ray):
    parent, requests = requests_for(["a", "b"], tiny_blender, tmp_path, mlflow_uri)
    outcomes = run_trainings([Training(r.stage, fit_stage, {"request": r}, num_cpus=1) for r in requests])

    a, b = outcomes["a"], outcomes["b"]
    assert a.pid != b.pid and os.getpid() not in (a.pid, b.pid)
    assert a.started < b.finished and b.started < a.finished  # the wall-clock intervals overlap
    for outcome, request in zip((a, b), requests):
        assert outcome.result.steps == 60
        assert Path(outcome.result.checkpoint).is_file()  # a storage path came back, not the weights
        assert outcome.result.checkpoint.startswith(request.output_dir)
        run = MlflowClient(mlflow_uri).get_run(request.run_id)
        assert run.data.tags["mlflow.parentRunId"] == parent.run_id
        assert "test/psnr" in run.data.metrics


def test_a_killed_actor_restarts_and_resumes_in_the_same_run(tiny_blender, tmp_path, mlflow_uri, local_ray):
    _, [request] = requests_for(["victim"], tiny_blender, tmp_path, mlflow_uri, steps=150)
    training = Training("victim", fit_stage, {"request": request}, num_cpus=2)
    actors = start_actors([training], max_restarts=2)
    first_pid = local_ray.get(actors["victim"].pid.remote())
    found = {}
    worker = threading.Thread(target=lambda: found.update(run_trainings([training], actors=actors)))
    worker.start()

    checkpoint = request.checkpoint_dir / "last.pt"
    deadline = time.time() + 180
    while not checkpoint.exists() and time.time() < deadline:
        time.sleep(0.2)
    assert checkpoint.exists(), "no checkpoint was written"
    saved = load_checkpoint(checkpoint)["step"]
    os.kill(first_pid, signal.SIGKILL)
    worker.join(timeout=400)

    outcome = found["victim"]
    assert outcome.pid != first_pid  # a new process finished it
    assert outcome.result.steps == 150
    client = MlflowClient(mlflow_uri)
    resumed = client.get_metric_history(request.run_id, "train/resumed_from_step")
    assert len(resumed) == 1 and resumed[0].step == resumed[0].value  # it continued from a checkpoint,
    assert saved <= resumed[0].value < 150 and resumed[0].value % 10 == 0  # the last one, not from scratch
    for key in ("train/loss", "train/seconds"):
        steps = [m.step for m in client.get_metric_history(request.run_id, key)]
        assert steps == sorted(set(steps)), (key, steps)  # no step logged twice
    _, alive = psutil.wait_procs([psutil.Process(outcome.pid)], timeout=30)
    assert not alive  # the restarted actor ended with its training
    children = client.search_runs([client.get_run(request.run_id).info.experiment_id],
                                  "tags.mlflow.runName = 'victim'")
    assert len(children) == 1  # and no second MLflow run was created
    assert client.get_run(request.run_id).data.metrics["test/psnr"] > 5
