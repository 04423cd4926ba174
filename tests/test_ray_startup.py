"""How `fieldkd run` starts or joins Ray next to other Ray instances on the machine, with real processes.

Every test gives Ray a temp root of its own (RAY_TMPDIR), which is also where Ray looks for the address
file of the last `ray start` (RAY_TMPDIR/ray/ray_current_cluster), so no test reads or clobbers the Ray
sessions of anything else on the machine. Processes are found by that variable in their environment,
which every process of a Ray instance inherits, and none may be left once a test is over.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
from conftest import tiny_run_overrides
from mlflow.tracking import MlflowClient
from test_job_submit import Head, alive, descendants, free_ports, request

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = {"127.0.0.1", "::1"}

pytestmark = pytest.mark.skipif(not Path("/proc/self/environ").exists() or shutil.which("ray") is None,
                                reason="needs Linux /proc and the `ray` command")


def short_dir(prefix: str) -> Path:
    # Ray's Unix socket paths under this folder must stay under ~107 bytes.
    return Path(tempfile.mkdtemp(prefix=prefix))


def user_env(ray_root: Path, **extra: str) -> dict[str, str]:
    """A user's shell: no cluster address or token settings of ours, Ray's temp root under ``ray_root``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_"))}
    env.update(RAY_TMPDIR=str(ray_root), RAY_USAGE_STATS_ENABLED="0",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    env.update(extra)
    return env


def start_run(scene: Path, out: Path, env: dict[str, str], uri: str, *extra: str) -> subprocess.Popen:
    args = ["run", "method=baseline", *tiny_run_overrides(scene, out, steps=20), *extra]
    return subprocess.Popen([sys.executable, "-m", "fieldkd.platform.cli", *args], cwd=out.parent,
                            env={**env, "MLFLOW_TRACKING_URI": uri}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 400) -> dict:
    """Wait for a `fieldkd run`; it must exit 0 with its JSON summary as the last line of stdout."""
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-4000:]
    assert "Token authentication is enabled" not in err  # Ray's start-up notice is dropped
    # Ray's own processes (Train's placement-group cleaner) found this run's instance, not "multiple"
    assert "multiple active Ray instances" not in err, err[-4000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["method"] == "baseline" and summary["run_id"]
    return summary


def started_under(ray_root: Path) -> dict[int, float]:
    """Live processes whose environment names ``ray_root`` as Ray's temp root: pid -> start time."""
    marker = f"RAY_TMPDIR={ray_root}".encode()
    found = {}
    for proc in psutil.process_iter(["create_time"]):
        if proc.pid == os.getpid():  # this test itself, when it set the variable on the way
            continue
        try:
            if marker in Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0"):
                found[proc.pid] = proc.info["create_time"]
        except (OSError, psutil.Error):
            continue
    return found


def kill_strays(ray_root: Path, wait: float = 20.0) -> list[int]:
    """Kill what is still running from ``ray_root`` after ``wait`` s (a matched start time rules out pid reuse)."""
    deadline = time.monotonic() + wait
    while (left := started_under(ray_root)) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid, created in left.items():
        try:
            proc = psutil.Process(pid)
            if proc.create_time() == created:
                proc.kill()
        except psutil.Error:
            pass
    return sorted(left)


@pytest.fixture
def ray_root():
    root = short_dir("fkdr-")
    yield root
    strays = kill_strays(root)
    shutil.rmtree(root, ignore_errors=True)
    assert not strays, f"processes left running after the test: {strays}"


@pytest.fixture(scope="module")
def live_head(tmp_path_factory):
    """`ray start --head` on 127.0.0.1 with its own ports, token and temp dir, which is also where Ray's
    default address lookup of a process with RAY_TMPDIR=root looks."""
    root = short_dir("fkdh-")
    head = Head(root / "ray", tmp_path_factory.mktemp("head") / "head.log", secrets.token_hex(32))
    head.root = root
    try:
        head.wait_ready()
        address_file = root / "ray" / "ray_current_cluster"
        deadline = time.monotonic() + 60  # `ray start` writes it after the dashboard answers
        while not address_file.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        yield head
    finally:
        leftover = head.stop()
        shutil.rmtree(root, ignore_errors=True)
        assert not leftover, f"processes still alive after the head stopped: {sorted(leftover)}"


def head_nodes(head: Head) -> set[str]:
    status, body = request(f"{head.address}/api/v0/nodes", head.token)
    assert status == 200, body
    return {n["node_id"] for n in json.loads(body)["data"]["result"]["result"] if n["state"] == "ALIVE"}


def head_drivers(head: Head) -> list[dict]:
    status, body = request(f"{head.address}/api/jobs/", head.token)
    assert status == 200, body
    return [job for job in json.loads(body) if job.get("type") == "DRIVER"]


def run_node(uri: str, run_id: str) -> str:
    return MlflowClient(tracking_uri=uri).get_run(run_id).data.tags["fieldkd.node"]


@pytest.mark.timeout(600)
def test_without_ray_address_a_live_head_is_left_alone(live_head, tiny_blender, tmp_path):
    address_file = live_head.root / "ray" / "ray_current_cluster"
    gcs_port = live_head.gcs_address.rsplit(":", 1)[1]
    assert address_file.read_text().strip().endswith(f":{gcs_port}")
    head_tree = descendants(live_head.proc.pid)
    nodes = head_nodes(live_head)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    # Ray's own lookup of this process would find the head: plain ray.init() joined it and then
    # refused the resources fieldkd asks for. Two Ray Train workers: Ray Train's own processes
    # look the instance up too.
    proc = start_run(tiny_blender, tmp_path / "out", user_env(live_head.root), uri, "compute.workers=2")
    summary = finish(proc)
    strays = kill_strays(live_head.root)  # the head's own processes do not carry RAY_TMPDIR
    assert not strays, f"processes of the run left running: {strays}"

    assert run_node(uri, summary["run_id"]) not in nodes  # trained on an instance of its own
    assert not [d for d in head_drivers(live_head) if d["driver_info"]["pid"] == str(proc.pid)]
    assert live_head.proc.poll() is None
    assert alive(head_tree) == head_tree  # no process of the head died
    assert head_nodes(live_head) == nodes
    assert address_file.read_text().strip().endswith(f":{gcs_port}")


@pytest.mark.timeout(600)
def test_ray_address_joins_that_cluster(live_head, tiny_blender, tmp_path, ray_root):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = user_env(ray_root, RAY_ADDRESS=live_head.gcs_address, RAY_AUTH_MODE="token",
                   RAY_AUTH_TOKEN=live_head.token)
    proc = start_run(tiny_blender, tmp_path / "out", env, uri)
    summary = finish(proc)

    assert run_node(uri, summary["run_id"]) in head_nodes(live_head)
    mine = [d for d in head_drivers(live_head) if d["driver_info"]["pid"] == str(proc.pid)]
    assert len(mine) == 1 and mine[0]["status"] == "SUCCEEDED", mine
    assert not (ray_root / "ray").exists()  # no local instance was started


@pytest.mark.timeout(600)
def test_a_stale_address_file_is_ignored(tiny_blender, tmp_path, ray_root):
    import ray

    (dead,) = free_ports(1)
    (ray_root / "ray").mkdir()
    (ray_root / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{dead}\n")
    with pytest.MonkeyPatch.context() as mp:  # where Ray itself looks for the address of a default init
        mp.setenv("RAY_TMPDIR", str(ray_root))
        assert ray._private.services.find_bootstrap_address(None) == f"127.0.0.1:{dead}"

    summary = finish(start_run(tiny_blender, tmp_path / "out", user_env(ray_root), f"sqlite:///{tmp_path / 'm.db'}"))
    assert summary["metrics"]["test/psnr"] > 0
    assert list((ray_root / "ray").glob("session_2*"))  # the run's own instance lived here


@pytest.mark.timeout(600)
def test_two_runs_at_once_both_finish(tiny_blender, tmp_path, ray_root):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # one store, as one user's two shells would share
    procs = [start_run(tiny_blender, tmp_path / f"out{i}", user_env(ray_root), uri) for i in range(2)]
    try:
        summaries = [finish(p) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
    assert summaries[0]["run_id"] != summaries[1]["run_id"]
    nodes = {run_node(uri, s["run_id"]) for s in summaries}
    assert len(nodes) == 2  # each on its own instance
    assert len(list((ray_root / "ray").glob("session_2*"))) == 2


def listening(pids: set[int]) -> list[tuple[str, str, int]]:
    """(process name, address, port) of every TCP socket that ``pids`` listen on."""
    found = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            conns = proc.net_connections("tcp") if hasattr(proc, "net_connections") else proc.connections("tcp")
            name = proc.name()
        except psutil.NoSuchProcess:
            continue
        found += [(name, c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]
    return found


def is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is 127.0.0.1 on a dual-stack socket
    return str(mapped or address) in LOOPBACK


@pytest.mark.timeout(400)
def test_local_instance_listens_on_loopback_only(ray_root, monkeypatch):
    import ray

    from fieldkd.platform.compute.session import start_local

    monkeypatch.setenv("RAY_TMPDIR", str(ray_root))
    ray.shutdown()
    # Another Ray instance's agent holds Ray's default agent port: ours must still come up.
    other_agent = socket.socket()
    with contextlib.suppress(OSError):  # already held by a real one
        other_agent.bind(("127.0.0.1", 52365))
        other_agent.listen()
    # Processes this driver already had (another test's `ray start --head`, which binds every address) are
    # not ours: only what is started from here on, and their descendants, are looked at.
    earlier = {c.pid for c in psutil.Process().children()}
    start_local(num_cpus=1, dashboard=True)  # the dashboard and its agent, as Ray Train has them
    try:
        @ray.remote
        class Probe:  # a worker process, with its own server
            def pid(self):
                return os.getpid()

            def environment(self, name):
                return os.environ.get(name)

        probe = Probe.remote()
        worker = ray.get(probe.pid.remote())
        # What Ray's processes were started with: Ray Train's quicker health check, and the state API
        # of this instance's own dashboard.
        assert ray.get(probe.environment.remote("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S")) == "0.5"
        dashboard_url = ray._private.worker.get_dashboard_url()
        assert ray.get(probe.environment.remote("RAY_API_SERVER_ADDRESS")) == f"http://{dashboard_url}"
        node = next(n for n in ray.nodes() if n["Alive"])
        gcs_port = int(ray.get_runtime_context().gcs_address.rsplit(":", 1)[1])
        dashboard_port = int(ray._private.worker.get_dashboard_url().rsplit(":", 1)[1])
        expected = {"GCS": gcs_port, "raylet": node["NodeManagerPort"], "object manager": node["ObjectManagerPort"],
                    "dashboard agent's metrics export": node["MetricsExportPort"], "dashboard": dashboard_port}
        deadline = time.monotonic() + 180  # the agents come up a while after ray.init returns
        while True:
            # Ray's agents retitle themselves (setproctitle), which can blank their /proc environ:
            # find them as descendants of this driver too.
            pids = set(started_under(ray_root)) | {os.getpid()} | ours_since(earlier)
            try:
                sockets = listening(pids)
            except psutil.AccessDenied:
                pytest.skip("psutil may not read this machine's sockets")
            missing = {k: v for k, v in expected.items() if v not in {p for _, _, p in sockets}}
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        assert missing == {}, sockets
        assert worker in pids and listening({worker})  # workers were found too
        assert [s for s in sockets if not is_loopback(s[1])] == [], sockets
        assert node["NodeManagerAddress"] == "127.0.0.1"
        print("\n".join(f"{name} {ip} {port}" for name, ip, port in sorted(sockets)))  # shown with -s
    finally:
        ray.shutdown()
        other_agent.close()
    for name in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "RAY_API_SERVER_ADDRESS"):
        assert os.environ.get(name) is None, name  # only Ray's processes keep the setting


def ours_since(earlier: set[int]) -> set[int]:
    """Descendants of this process that are not in the subtree of one of its ``earlier`` children."""
    new_children = {c.pid for c in psutil.Process().children()} - earlier
    return set(new_children).union(*(descendants(pid) for pid in new_children))


def test_only_rays_token_on_notice_is_dropped():
    import logging

    from ray._private.authentication import authentication_token_setup as token_setup

    from fieldkd.platform.compute.session import TOKEN_LOGGER, quiet_token_notice

    seen: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: seen.append(record.getMessage())
    log = logging.getLogger(TOKEN_LOGGER)
    assert log is token_setup.logger  # the logger Ray writes the notice to
    log.addHandler(handler)
    try:
        quiet_token_notice()
        quiet_token_notice()  # once is enough: a second start adds no second filter
        token_setup._warn_token_auth_enabled()
        token_setup._warn_token_auth_disabled()  # a real warning: anyone on the network may run code
        log.warning("something else")
    finally:
        log.removeHandler(handler)
    assert [m.split(".")[0] for m in seen] == ["Token authentication is disabled for this Ray cluster",
                                               "something else"]
    assert sum(type(f).__name__ == "_DropTokenNotice" for f in log.filters) == 1
