"""Many processes write into one local SQLite store: Ray actors, a fresh store, every point kept.

The writers are real Ray actors, each its own process, all opening a store that
does not exist yet at the same moment (so the schema is created while the others
wait), then logging batches as fast as they can.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
import time

import pytest
import ray
from mlflow.tracking import MlflowClient

from fieldkd.platform.compute.session import start_local
from fieldkd.platform.tracking import PARENT_TAG, Run

WRITERS = 8
BATCHES = 200
KEYS = 10

# The actor class below lives in this test module, which Ray's workers cannot import.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def ray_cluster():
    started = not ray.is_initialized()
    if started:
        start_local(num_cpus=2, namespace="fieldkd-tests-tracking")
    yield ray
    if started:
        ray.shutdown()


def value(step: int, key: int) -> float:
    return step + key / 100


class Writer:
    """One writer process. Nothing touches the store before ``write`` is called."""

    def __init__(self):
        import fieldkd.platform.tracking  # noqa: F401  (import costs stay out of the race)

    def pid(self) -> int:
        return os.getpid()

    def write(self, uri: str, experiment: str, name: str, start_at: float, batches: int) -> dict:
        time.sleep(max(0.0, start_at - time.time()))
        run = Run.start(experiment, name, tags={"writer": name}, tracking_uri=uri)
        errors = []
        for step in range(batches):
            try:
                run.log_metrics({f"m{k}": value(step, k) for k in range(KEYS)}, step)
            except Exception as exc:  # counted, not raised: the test reports every failure
                errors.append(repr(exc)[:300])
        run.finish()
        return {"run_id": run.run_id, "errors": errors, "retries": run.retries, "pid": os.getpid()}

    def child(self, uri: str, parent_id: str, name: str, seconds: float) -> dict:
        run = Run(parent_id, uri).child(name, tags={"fieldkd.stage": name})
        run.start_system_metrics(interval_s=0.2)
        for step in range(5):
            run.log_metrics({"train/loss": 1.0 / (step + 1)}, step)
            time.sleep(seconds / 5)
        run.finish()
        threads = [t.name for t in threading.enumerate()]
        return {"run_id": run.run_id, "pid": os.getpid(), "threads": threads}


@pytest.fixture(scope="module")
def handles(ray_cluster):
    """Eight writer actors, each in its own process, shared by the tests here."""
    actor = ray.remote(num_cpus=0.25)(Writer)
    handles = [actor.remote() for _ in range(WRITERS)]
    pids = ray.get([h.pid.remote() for h in handles], timeout=300)  # every process is up
    assert len(set(pids)) == WRITERS and os.getpid() not in pids
    yield handles
    for h in handles:
        ray.kill(h)


def test_eight_writers_create_one_fresh_store_and_lose_no_point(tmp_path, handles):
    db = tmp_path / "not-yet" / "mlflow.db"  # neither the folder nor the file exists
    uri = f"sqlite:///{db}"

    start_at = time.time() + 1.0
    results = ray.get([h.write.remote(uri, "race", f"w{i}", start_at, BATCHES)
                       for i, h in enumerate(handles)], timeout=600)

    assert [r["errors"] for r in results] == [[]] * WRITERS
    assert len({r["pid"] for r in results}) == WRITERS
    client = MlflowClient(uri)
    assert [e.name for e in client.search_experiments() if e.name == "race"] == ["race"]
    runs = client.search_runs([client.get_experiment_by_name("race").experiment_id], max_results=100)
    assert sorted(r.data.tags["writer"] for r in runs) == sorted(f"w{i}" for i in range(WRITERS))
    for result in results:
        for k in range(KEYS):
            history = client.get_metric_history(result["run_id"], f"m{k}")
            points = sorted((m.step, m.value) for m in history)
            assert points == [(step, value(step, k)) for step in range(BATCHES)], (result["run_id"], k)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_children_in_other_processes_point_to_the_parent(tmp_path, handles):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = Run.start("lineage", "pipeline", tags={"fieldkd.stage": "pipeline"}, tracking_uri=uri)

    made = ray.get([h.child.remote(uri, parent.run_id, f"expert_{i}", 1.0)
                    for i, h in enumerate(handles[:3])], timeout=300)
    parent.finish()

    assert len({m["pid"] for m in made} | {os.getpid()}) == 4
    for m in made:  # the sampling thread ended with the run, in the actor's process
        assert not [t for t in m["threads"] if t.startswith("fieldkd-system-metrics")], m["threads"]
    expected = {m["run_id"] for m in made}
    assert {c.run_id for c in parent.children()} == expected
    client = MlflowClient(uri)
    found = client.search_runs([parent.info.experiment_id], f"tags.`{PARENT_TAG}` = '{parent.run_id}'")
    assert {r.info.run_id for r in found} == expected
    assert {r.data.tags["fieldkd.stage"] for r in found} == {"expert_0", "expert_1", "expert_2"}
    for m in made:
        child = Run(m["run_id"], uri)
        assert child.parent_id == parent.run_id and child.info.status == "FINISHED"
        assert [x.step for x in client.get_metric_history(m["run_id"], "train/loss")] == [0, 1, 2, 3, 4]
        metrics = child.get().data.metrics
        assert "system/cpu_utilization_percentage" in metrics
        assert "system/system_memory_usage_megabytes" in metrics
    assert parent.parent_id is None and parent.children()[0].children() == []
