"""`fieldkd run` submitted as a Ray job to a real, token-protected head node.

The test starts `ray start --head --block` as its own child process (own
ports, own temp dir, token authentication on with a fresh token), submits a
tiny run with `ray job submit --working-dir <repo> --runtime-env ...` exactly
as clusters/README.md describes, waits for the job to succeed, checks the
summary line and the MLflow run it names, and stops the head by signalling
the process it started (never `ray stop`, which would hit other Ray instances
on the machine).
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_ENV = ROOT / "clusters" / "runtime_env.yaml"
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists() or shutil.which("ray") is None,
                                reason="needs Linux /proc and the `ray` command")


def free_ports(n: int) -> list[int]:
    """n distinct ports that are free right now (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, start time in clock ticks) for every live process."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # the command name may contain spaces
        if fields[0] == "Z":  # a zombie has exited already; only its parent's wait is missing
            continue
        table[int(entry.name)] = (int(fields[1]), int(fields[19]))
    return table


def descendants(root: int) -> dict[int, int]:
    """Live descendants of ``root`` (Ray's workers call setsid, so the process
    group alone does not find them): pid -> start time, to rule out pid reuse."""
    table = _proc_table()
    found, frontier = {}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, started) in table.items():
            if ppid == parent and pid not in found:
                found[pid] = started
                frontier.append(pid)
    return found


def alive(procs: dict[int, int]) -> dict[int, int]:
    table = _proc_table()
    return {pid: t for pid, t in procs.items() if pid in table and table[pid][1] == t}


def request(url: str, token: str | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


class Head:
    """`ray start --head --block` as a child process in its own process group."""

    def __init__(self, temp_dir: Path, log: Path, token: str):
        self.token = token
        gcs, dashboard, client, agent = free_ports(4)
        self.address = f"http://127.0.0.1:{dashboard}"
        self.gcs_address = f"127.0.0.1:{gcs}"
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_"))}
        self.env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, RAY_USAGE_STATS_ENABLED="0")
        self.log = log
        self._log_file = log.open("w")
        self.proc = subprocess.Popen(
            ["ray", "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
             "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
             f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
             "--num-cpus=2", "--num-gpus=0", f"--temp-dir={temp_dir}", "--disable-usage-stats"],
            env=self.env, stdout=self._log_file, stderr=subprocess.STDOUT, start_new_session=True)
        self.tree: dict[int, int] = {}

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"ray start exited early:\n{self.log.read_text()}"
            try:
                if request(f"{self.address}/api/jobs/", self.token)[0] == 200:
                    self.tree = descendants(self.proc.pid)
                    return
            except OSError:
                pass
            time.sleep(1.0)
        raise AssertionError(f"the job server did not come up in {timeout:.0f} s:\n{self.log.read_text()}")

    def stop(self, timeout: float = 60.0) -> dict[int, int]:
        """Stop everything this head started; returns processes that had to be killed."""
        self.tree.update(descendants(self.proc.pid))
        self.tree[self.proc.pid] = _proc_table().get(self.proc.pid, (0, 0))[1]
        if self.proc.poll() is None:
            # Signal only `ray start`: it drains the node through the still-running
            # GCS, then stops its children. Signalling the whole group at once
            # makes the drain wait for a GCS that is shutting down (30 s).
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                # Still unreaped, so the group id is still ours to signal.
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        deadline = time.monotonic() + 15.0
        while alive(self.tree) and time.monotonic() < deadline:
            time.sleep(0.5)
        # Ray's workers run in sessions of their own: kill any survivor by pid
        # (matched with its start time, so a reused pid is left alone).
        leftover = alive(self.tree)
        for pid in leftover:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._log_file.close()
        return leftover


@pytest.fixture
def head(tmp_path):
    # A short temp dir: Ray's Unix socket paths must stay under ~107 bytes.
    temp_dir = Path(tempfile.mkdtemp(prefix="fkdray-"))
    h = Head(temp_dir, tmp_path / "head.log", secrets.token_hex(32))
    try:
        h.wait_ready()
        yield h
    finally:
        leftover = h.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not leftover, f"processes still alive after the head stopped: {sorted(leftover)}"


@pytest.mark.timeout(300)
def test_submit_fieldkd_run_as_ray_job(head, tmp_path, tiny_blender):
    from mlflow.tracking import MlflowClient
    from ray.job_submission import JobSubmissionClient

    # The head really enforces the token.
    assert request(f"{head.address}/api/jobs/")[0] == 401
    assert request(f"{head.address}/api/jobs/", "0" * 64)[0] == 403

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runtime_env = yaml.safe_load(RUNTIME_ENV.read_text())
    runtime_env.setdefault("env_vars", {}).update(MLFLOW_TRACKING_URI=uri, FIELDKD_CACHE=str(tmp_path / "cache"))
    env_file = tmp_path / "runtime_env.yaml"
    env_file.write_text(yaml.safe_dump(runtime_env))
    outputs = tmp_path / "outputs"

    submission_id = f"fieldkd-test-{secrets.token_hex(4)}"
    # The client sends the token only with RAY_AUTH_MODE=token; head.env has both.
    submitted = subprocess.run(
        ["ray", "job", "submit", "--address", head.address, "--submission-id", submission_id,
         "--working-dir", str(ROOT), "--runtime-env", str(env_file), "--no-wait", "--",
         "fieldkd", "run", "method=baseline", "scene=blender", f"scene.path={tiny_blender}",
         "trainer.steps=20", "trainer.eval_every=0", "eval.max_views=2", "eval.lpips=false",
         "render.samples_per_ray=32", f"output_dir={outputs}"],
        check=False, env=head.env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr

    client = JobSubmissionClient(head.address, headers={"Authorization": f"Bearer {head.token}"})
    deadline = time.monotonic() + 240
    status = None
    while time.monotonic() < deadline:
        status = str(client.get_job_status(submission_id).value)
        if status in TERMINAL:
            break
        time.sleep(2.0)
    logs = client.get_job_logs(submission_id)
    if status != "SUCCEEDED":
        message = client.get_job_info(submission_id).message
        pytest.fail(f"job ended {status}: {message}\n{logs[-5000:]}")

    lines = [line for line in logs.splitlines() if line.strip()]
    summary = json.loads(lines[-1])
    assert summary["method"] == "baseline"
    assert math.isfinite(summary["metrics"]["test/psnr"])
    assert summary["seconds"] > 0

    run = MlflowClient(tracking_uri=uri).get_run(summary["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["fieldkd.method"] == "baseline"
    assert run.data.metrics["test/psnr"] == pytest.approx(summary["metrics"]["test/psnr"])
    # Checkpoints went to the output_dir given on the command line, not into
    # the job's temporary working directory.
    assert list((outputs / summary["run_id"]).glob("*/last.pt"))
