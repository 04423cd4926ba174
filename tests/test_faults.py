"""Faults of the driver: SIGINT and SIGTERM of a real `fieldkd run` process.

Each leaves one MLflow run per stage, marked KILLED, a checkpoint, no process of its
Ray instance, exit code 130 / 143 and one line on stderr saying how to resume; the
resume then continues from that checkpoint, logging no metric step twice.
(Killed actors and Train workers: test_compute_pool.py and test_students.py.)
"""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
from conftest import tiny_run_overrides
from mlflow.tracking import MlflowClient

from fieldkd.platform.train.checkpoint import load_checkpoint

LONG = 100_000  # steps: the run is still training when the signal comes


def start(tmp_path, args, name):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out, err = open(tmp_path / f"{name}.out", "w"), open(tmp_path / f"{name}.err", "w")
    return subprocess.Popen([sys.executable, "-m", "fieldkd.platform.cli", "run", *args], stdout=out, stderr=err,
                            cwd=tmp_path, env=env, start_new_session=True)


def wait_for(pattern, root, timeout=400):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = sorted(root.glob(pattern))
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError(f"nothing matched {pattern} in {timeout} s")


def interrupt(tmp_path, extra, signum, checkpoints="*/baseline/last.pt"):
    """Start a tiny baseline, signal the driver once it checkpointed; returns what it left."""
    driver = start(tmp_path, tiny_run_overrides(tmp_path / "scene", "out", LONG) + extra, "first")
    wait_for(checkpoints, tmp_path / "out")
    family = psutil.Process(driver.pid).children(recursive=True)  # its Ray instance: raylet, GCS, workers
    assert family
    driver.send_signal(signum)
    code = driver.wait(timeout=300)
    gone, alive = psutil.wait_procs(family, timeout=30)
    assert not alive, [p.info for p in alive]  # no orphan of that instance
    return code, (tmp_path / "first.err").read_text()


def no_stack_dump(err):
    """The driver printed no traceback (lines that Ray forwards from its own workers start
    with "(Name pid=...)": those are Ray's, not the driver's)."""
    return not any(line.startswith("Traceback") for line in err.splitlines())


def check_interrupted(mlflow_uri, code, err, signum):
    assert code == 128 + signum
    assert no_stack_dump(err), err[-3000:]
    last = err.strip().splitlines()[-1]
    assert "resume=" in last and "fieldkd run" in last, last
    run_id = last.rsplit("resume=", 1)[1].strip()
    client = MlflowClient(mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name("fieldkd").experiment_id])
    assert [r.info.run_id for r in runs] == [run_id]  # one run for the one stage
    assert runs[0].info.status == "KILLED"
    return run_id


def resume_and_check(tmp_path, mlflow_uri, run_id, checkpoint):
    """Resume with a small budget; it continues from the checkpoint, in the same run."""
    stopped_at = load_checkpoint(checkpoint)["step"]
    assert stopped_at > 0
    again = start(tmp_path, [f"resume={run_id}", f"trainer.steps={stopped_at + 20}"], "again")
    assert again.wait(timeout=600) == 0, (tmp_path / "again.err").read_text()[-3000:]
    client = MlflowClient(mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name("fieldkd").experiment_id])
    assert [(r.info.run_id, r.info.status) for r in runs] == [(run_id, "FINISHED")]
    resumed = client.get_metric_history(run_id, "train/resumed_from_step")
    assert [(m.step, m.value) for m in resumed] == [(stopped_at, stopped_at)]  # from the checkpoint
    for key in ("train/loss", "train/seconds"):
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        assert steps == sorted(set(steps)), (key, steps)  # no step logged twice
    assert max(m.step for m in client.get_metric_history(run_id, "train/loss")) == stopped_at + 20
    assert client.get_run(run_id).data.tags["fieldkd.resume.1"] == f"trainer.steps={stopped_at + 20}"


@pytest.fixture
def scene(tmp_path, tiny_blender):
    (tmp_path / "scene").symlink_to(tiny_blender)


def test_sigint_of_the_driver_keeps_the_work_and_resumes(tmp_path, mlflow_uri, scene):
    code, err = interrupt(tmp_path, ["tracking.system_metrics_s=0"], signal.SIGINT)
    run_id = check_interrupted(mlflow_uri, code, err, signal.SIGINT)
    resume_and_check(tmp_path, mlflow_uri, run_id, tmp_path / "out" / run_id / "baseline" / "last.pt")


def test_sigterm_of_the_driver_stops_ray_train_workers_and_resumes(tmp_path, mlflow_uri, scene):
    code, err = interrupt(tmp_path, ["compute.workers=2", "tracking.system_metrics_s=0"], signal.SIGTERM)
    run_id = check_interrupted(mlflow_uri, code, err, signal.SIGTERM)
    resume_and_check(tmp_path, mlflow_uri, run_id, tmp_path / "out" / run_id / "baseline" / "last.pt")


def test_a_second_sigint_ends_at_once(tmp_path, mlflow_uri, scene):
    driver = start(tmp_path, tiny_run_overrides(tmp_path / "scene", "out", LONG), "first")
    wait_for("*/baseline/last.pt", tmp_path / "out")
    driver.send_signal(signal.SIGINT)
    time.sleep(0.2)
    driver.send_signal(signal.SIGINT)
    assert driver.wait(timeout=20) == 130
    assert no_stack_dump((tmp_path / "first.err").read_text())


def test_sigint_stops_concurrent_stages_each_with_its_checkpoint(tiny_blender, tmp_path, mlflow_uri, local_ray):
    """Two stages on the actor pool: both save a checkpoint, both child runs and the parent are KILLED."""
    import threading

    from fieldkd.platform.cli import compose_config
    from fieldkd.platform.compute import interrupts
    from fieldkd.platform.runner import execute
    from fieldkd.platform.stages import run_stages

    cfg = compose_config(tiny_run_overrides(tiny_blender, tmp_path / "out", LONG) + ["tracking.system_metrics_s=0"])

    def two_stages(ctx):
        return run_stages(ctx, [ctx.request(name, ctx.child(name, ctx.cfg)) for name in ("a", "b")])

    def signal_once_both_checkpointed():
        wait_for("*/b/last.pt", tmp_path / "out")
        wait_for("*/a/last.pt", tmp_path / "out")
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=signal_once_both_checkpointed, daemon=True).start()
    with interrupts.handling(), pytest.raises(interrupts.Interrupted) as stopped:
        execute(cfg, two_stages)
    parent = stopped.value.run_id
    client = MlflowClient(mlflow_uri)
    found = client.search_runs([client.get_experiment_by_name("fieldkd").experiment_id])
    runs = {r.info.run_name.split()[0]: r for r in found}  # the parent: "baseline hash SCENE DATE TIME"
    assert len(found) == 3 and sorted(runs) == ["a", "b", "baseline"]  # one run per stage and the parent
    assert {name: r.info.status for name, r in runs.items()} == dict.fromkeys(runs, "KILLED")
    assert runs["baseline"].info.run_id == parent
    for name in ("a", "b"):
        saved = load_checkpoint(tmp_path / "out" / parent / name / "last.pt")["step"]
        logged = max(m.step for m in client.get_metric_history(runs[name].info.run_id, "train/loss"))
        assert 0 < logged <= saved < logged + 10  # saved when it stopped, after its last logged step
