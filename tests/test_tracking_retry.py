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
