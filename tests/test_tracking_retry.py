"""Retries: passing failures (a locked SQLite database) are retried, real errors are not."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    TEMPORARILY_UNAVAILABLE,
)

from fieldkd.platform.tracking import RetryPolicy, Run, call_with_retry, is_transient
from fieldkd.platform.tracking.store import prepare_local_store, sqlite_path

FAST = RetryPolicy(attempts=50, first_delay_s=0.01, max_delay_s=0.05, budget_s=30)


def test_a_write_blocked_by_another_connection_gets_through_once_it_lets_go(tmp_path):
    db = tmp_path / "plain.db"
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x INTEGER)")
    holder.execute("BEGIN EXCLUSIVE")
    writer = sqlite3.connect(db, timeout=0, isolation_level=None, check_same_thread=False)

    with pytest.raises(sqlite3.OperationalError) as locked:
        writer.execute("INSERT INTO t VALUES (1)")
    assert is_transient(locked.value)

    threading.Timer(0.3, lambda: holder.execute("COMMIT")).start()
    retried = []
    call_with_retry(writer.execute, "INSERT INTO t VALUES (2)", policy=FAST, on_retry=retried.append)
    assert retried and all(is_transient(e) for e in retried)
    assert writer.execute("SELECT x FROM t").fetchall() == [(2,)]


def test_only_passing_failures_count_as_transient():
    assert is_transient(MlflowException("busy", error_code=TEMPORARILY_UNAVAILABLE))
    assert is_transient(MlflowException("API request to http://127.0.0.1:1/api failed with exception "
                                        "Max retries exceeded with url"))
    assert is_transient(ConnectionRefusedError())
    wrapped = MlflowException("outer")
    wrapped.__cause__ = sqlite3.OperationalError("database is locked")
    assert is_transient(wrapped)
    assert not is_transient(MlflowException("bad", error_code=INVALID_PARAMETER_VALUE))
    assert not is_transient(ValueError("nope"))


def test_a_real_error_is_raised_at_once(mlflow_uri):
    run = Run.start("retry", "conflict")
    run.log_params({"a": "1"})
    with pytest.raises(MlflowException):
        run.log_params({"a": "2"})  # changing a param is refused by MLflow, not retried
    assert run.retries == 0


def test_the_budget_bounds_the_retries():
    calls = []

    def always_busy():
        calls.append(time.monotonic())
        raise MlflowException("database is locked", error_code=TEMPORARILY_UNAVAILABLE)

    with pytest.raises(MlflowException):
        call_with_retry(always_busy, policy=RetryPolicy(attempts=5, first_delay_s=0.01, budget_s=30))
    assert len(calls) == 5
    calls.clear()
    with pytest.raises(MlflowException):
        call_with_retry(always_busy, policy=RetryPolicy(attempts=1000, first_delay_s=0.05, budget_s=0.3))
    assert 2 <= len(calls) < 20


def test_a_local_store_is_prepared_once_in_wal_mode(tmp_path):
    uri = f"sqlite:///{tmp_path / 'deep' / 'er' / 'mlflow.db'}"
    prepare_local_store(uri)
    prepare_local_store(uri)  # cheap second call
    path = sqlite_path(uri)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT name FROM experiments WHERE experiment_id = 0").fetchone() == ("Default",)
    assert sqlite_path("http://127.0.0.1:5000") is None and sqlite_path("sqlite:///:memory:") is None
    assert sqlite_path("sqlite:///a/b.db?timeout=60").name == "b.db"


class LostAnswer:
    """A real client whose first create_run is stored but answers with a passing failure
    (a server that committed, then dropped the connection)."""

    def __init__(self, client):
        self.client, self.failed = client, False

    def __getattr__(self, name):
        return getattr(self.client, name)

    def create_run(self, *args, **kwargs):
        created = self.client.create_run(*args, **kwargs)
        if not self.failed:
            self.failed = True
            raise MlflowException("connection reset by peer", error_code=TEMPORARILY_UNAVAILABLE)
        return created


def test_a_retried_creation_finds_the_run_it_made(mlflow_uri, monkeypatch):
    import fieldkd.platform.tracking.run as run_module
    from mlflow.tracking import MlflowClient

    real = run_module.make_client
    monkeypatch.setattr(run_module, "make_client", lambda uri=None: LostAnswer(real(uri)))
    parent = Run.start("create-once", "parent")
    child = parent.child("stage")

    client = MlflowClient(mlflow_uri)
    experiment = client.get_experiment_by_name("create-once").experiment_id
    runs = client.search_runs([experiment])
    assert sorted(r.info.run_name for r in runs) == ["parent", "stage"]  # one of each, not two
    assert {r.info.run_id for r in runs} == {parent.run_id, child.run_id}
    assert client.get_run(child.run_id).data.tags["mlflow.parentRunId"] == parent.run_id
    assert parent.retries == 1  # the child's creation was retried once, by this handle


def test_non_finite_values_are_counted_not_dropped(mlflow_uri):
    from mlflow.tracking import MlflowClient

    run = Run.start("nonfinite", "run")
    run.log_metrics({"train/loss": float("nan"), "train/psnr": 20.0}, step=1)
    run.log_metrics({"train/loss": float("inf")}, step=2)
    run.log_metrics({"train/loss": 0.5}, step=3)
    client = MlflowClient(mlflow_uri)
    assert [(m.step, m.value) for m in client.get_metric_history(run.run_id, "nonfinite/train/loss")] \
        == [(1, 1.0), (2, 2.0)]
    assert [(m.step, m.value) for m in client.get_metric_history(run.run_id, "train/loss")] == [(3, 0.5)]


def test_a_continuing_run_logs_each_step_once(mlflow_uri):
    from mlflow.tracking import MlflowClient

    first = Run.start("once", "run")
    for step in (10, 20, 30):  # logged before a crash; the checkpoint was at step 20
        first.log_metrics({"train/loss": 1.0 / step}, step)
    again = Run(first.run_id).continuing()  # the restarted process
    for step in (20, 30, 40):
        again.log_metrics({"train/loss": 2.0 / step, "train/resumed_from_step": 20} if step == 20
                          else {"train/loss": 2.0 / step}, step)
    again.log_metrics({"train/loss": 0.0}, 40)  # twice in one process
    history = MlflowClient(mlflow_uri).get_metric_history(first.run_id, "train/loss")
    assert [(m.step, m.value) for m in history] == [(10, 0.1), (20, 0.05), (30, 1 / 30), (40, 0.05)]
    resumed = MlflowClient(mlflow_uri).get_metric_history(first.run_id, "train/resumed_from_step")
    assert [(m.step, m.value) for m in resumed] == [(20, 20.0)]
