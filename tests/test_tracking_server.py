"""The same tracking code against a real ``mlflow server`` on loopback.

The server is started by the test (SQLite backend, proxied artifacts), reached
through ``MLFLOW_TRACKING_URI=http://127.0.0.1:PORT`` and stopped with its whole
process group at the end. One test stops the server in the middle of a write and
starts it again: the write waits, retries and lands.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from fieldkd.platform.tracking import PARENT_TAG, RetryPolicy, Run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 180.0) -> None:
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        env.pop("MLFLOW_TRACKING_URI", None)
        with open(self.root / "server.log", "ab") as log:  # the server keeps its own copy
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server",
                 "--backend-store-uri", f"sqlite:///{self.root / 's.db'}",
                 "--artifacts-destination", str(self.root / "art"),
                 "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(self.root / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError("mlflow server did not answer /health in time")

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=20)
        except ProcessLookupError:
            pass
        self.proc = None


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("mlflow_server"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def server_uri(server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    return server.url


def test_parent_child_metrics_params_artifacts_over_http(server_uri, tmp_path):
    parent = Run.start("over-http", "pipeline", tags={"fieldkd.method": "baseline"})
    assert parent.tracking_uri == server_uri
    child = parent.child("student", tags={"fieldkd.stage": "student"})
    child.log_params({"trainer.steps": "60", "field.type": "hash"})
    child.set_tags({"fieldkd.backend": "torch"})
    for step in range(20):
        child.log_metrics({"train/loss": 1.0 / (step + 1), "train/psnr": 10.0 + step}, step)
    child.log_text("a: 1\n", "config.yaml")
    (tmp_path / "last.pt").write_bytes(b"\x00checkpoint")
    child.log_artifact(tmp_path / "last.pt", "checkpoints")
    child.start_system_metrics(interval_s=0.2)
    time.sleep(0.8)
    child.finish()
    parent.finish()

    client = MlflowClient(server_uri)
    stored = client.get_run(child.run_id)
    assert stored.data.tags[PARENT_TAG] == parent.run_id
    assert stored.data.tags["fieldkd.backend"] == "torch" and stored.data.tags["fieldkd.stage"] == "student"
    assert stored.data.params == {"trainer.steps": "60", "field.type": "hash"}
    assert stored.info.status == "FINISHED"
    history = sorted((m.step, m.value) for m in client.get_metric_history(child.run_id, "train/psnr"))
    assert history == [(s, 10.0 + s) for s in range(20)]
    assert "system/cpu_utilization_percentage" in stored.data.metrics
    assert {f.path for f in client.list_artifacts(child.run_id)} == {"config.yaml", "checkpoints"}
    assert [f.path for f in client.list_artifacts(child.run_id, "checkpoints")] == ["checkpoints/last.pt"]
    local = client.download_artifacts(child.run_id, "config.yaml", str(tmp_path / "down"))
    assert Path(local).read_text() == "a: 1\n"
    fetched = Path(client.download_artifacts(child.run_id, "checkpoints/last.pt", str(tmp_path / "down")))
    assert fetched.read_bytes() == b"\x00checkpoint"
    assert [c.run_id for c in parent.children()] == [child.run_id]


def test_a_write_waits_for_a_restarted_server(server, server_uri, monkeypatch):
    run = Run.start("over-http", "restart")
    run.log_metrics({"x": 1.0}, 0)
    # MLflow's HTTP client retries on its own for minutes; turn that off so the
    # retries seen here are fieldkd's.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    patient = Run(run.run_id, server_uri, retry=RetryPolicy(attempts=60, first_delay_s=0.2,
                                                             max_delay_s=1.0, budget_s=240))
    server.stop()
    failure: list[BaseException] = []

    def write():
        try:
            patient.log_metrics({"x": 2.0}, 1)
        except BaseException as exc:  # reported by the assertion below
            failure.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    time.sleep(1.5)
    assert writer.is_alive()  # still waiting: the server is down
    server.start()
    writer.join(timeout=240)

    assert not writer.is_alive() and failure == []
    assert patient.retries >= 1
    history = MlflowClient(server_uri).get_metric_history(run.run_id, "x")
    assert sorted((m.step, m.value) for m in history) == [(0, 1.0), (1, 2.0)]
    run.finish()
