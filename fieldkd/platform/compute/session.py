"""The one place that starts or joins Ray.

- Inside `ray job submit`, or with RAY_ADDRESS set, join that cluster.
- Otherwise start a local Ray instance of our own, sized to this machine and
  reachable from this machine only (every server it starts listens on 127.0.0.1).

Workers pin torch's thread count to the CPUs they were given, so that several
trainings on one machine do not oversubscribe its cores.
"""

from __future__ import annotations

import contextlib
import logging
import os

from ..errors import InputError

NAMESPACE = "fieldkd"
LOOPBACK = "127.0.0.1"
# Ray reads this switch to decide whether a node may be part of a multi-machine cluster. Off, it
# takes 127.0.0.1 as the node's address (on, it replaces 127.0.0.1 by the host's address), and its
# servers (GCS, raylet, object manager, workers, agents, dashboard) listen on 127.0.0.1 only.
SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
TOKEN_LOGGER = "ray._private.authentication.authentication_token_setup"


def cluster_address() -> str | None:
    """The cluster to join: RAY_ADDRESS (Ray also sets it for a submitted job's driver)."""
    return os.environ.get("RAY_ADDRESS") or None


def machine_cpus() -> int:
    """CPUs this process may use (respects taskset/cgroup affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def init_ray(num_cpus: int | None = None, num_gpus: int | None = None, dashboard: bool = False) -> bool:
    """Start or join Ray once per process.

    The dashboard of a local instance costs a few seconds of start-up, so it
    is started only on request (Ray Train's state queries need it).
    Returns True when this call started a local instance, which the caller
    then owns and should shut down.
    """
    import ray

    if ray.is_initialized():
        return False
    address = cluster_address()
    if address:
        join_cluster(address)
        return False
    start_local(num_cpus, num_gpus, dashboard)
    return True


def join_cluster(address: str, namespace: str = NAMESPACE) -> None:
    """Join the cluster at ``address`` ("auto", host:port): its nodes bring their own resources."""
    import ray

    quiet_token_notice()
    try:
        ray.init(address=address, namespace=namespace, log_to_driver=True, configure_logging=False)
    except ConnectionError as exc:
        raise InputError("RAY_ADDRESS", f"cannot join the Ray cluster at {address!r}: {exc}") from None


def start_local(num_cpus: int | None = None, num_gpus: int | None = None, dashboard: bool = False,
                namespace: str = NAMESPACE) -> None:
    """Start a fresh local instance: never one that an address file names, never reachable from outside."""
    import ray

    quiet_token_notice()
    port = free_port() if dashboard else None
    with single_machine(), agent_port_of_its_own(), environment_while_starting({**train_health_check(),
                                                                                **state_api_at(port)}):
        # "local": a new instance even when `ray start` or a stale address file says otherwise.
        ray.init(address="local", num_cpus=num_cpus or machine_cpus(), num_gpus=num_gpus,
                 include_dashboard=dashboard, dashboard_host=LOOPBACK, dashboard_port=port or 8265,
                 _node_ip_address=LOOPBACK, namespace=namespace, log_to_driver=True, configure_logging=False)


def free_port() -> int:
    """A TCP port free on loopback now (the OS picks it)."""
    import socket

    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def state_api_at(port: int | None) -> dict[str, str]:
    """The state API's address for the processes Ray starts: this instance's dashboard.

    Ray Train's placement-group cleaner asks the state API whether the controller lives, and without
    an address the API looks for *the* Ray instance on the machine; beside another one (a user's
    `ray start`, another run) it fails with "Found multiple active Ray instances" and stops watching.
    """
    return {"RAY_API_SERVER_ADDRESS": f"http://{LOOPBACK}:{port}"} if port is not None else {}


def train_health_check() -> dict[str, str]:
    """How often Ray Train's controller checks its workers, unless the user set it: it sees that they
    finished only at its next check (every 2 s by default). Every 0.5 s costs little on one machine,
    and a short stage (a test, a small scene) ends up to 1.5 s sooner."""
    name = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
    return {name: os.environ.get(name, "0.5")}


@contextlib.contextmanager
def environment_while_starting(values: dict[str, str]):
    """Set ``values`` in the environment while Ray starts: the processes it starts keep them, this one
    gets its own back."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def single_machine():
    """Ray on loopback only, while it starts: the processes it starts keep the setting, this one gets
    its own back (a later join of a real cluster from this process must see the host's address)."""
    from ray._private import ray_constants

    before_env, before = os.environ.get(SINGLE_MACHINE_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[SINGLE_MACHINE_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False  # read at import, so the environment alone comes too late
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before
        if before_env is None:
            os.environ.pop(SINGLE_MACHINE_ENV, None)
        else:
            os.environ[SINGLE_MACHINE_ENV] = before_env


@contextlib.contextmanager
def agent_port_of_its_own():
    """While Ray starts, its dashboard agent asks for a free HTTP port instead of the fixed 52365.

    ray.init cannot set that port, and beside another Ray instance (a `ray start` of the user's, another
    run) the second agent fails to bind it and dies: a node without its agent (no metrics, no job or
    runtime-env service). Port 0 lets the agent take a free one; it publishes the port it got.
    """
    from ray._private import parameter

    original = parameter.RayParams.__init__

    def with_free_agent_port(self, *args, **kwargs):
        kwargs.setdefault("dashboard_agent_listen_port", 0)
        original(self, *args, **kwargs)

    parameter.RayParams.__init__ = with_free_agent_port
    try:
        yield
    finally:
        parameter.RayParams.__init__ = original


class _DropTokenNotice(logging.Filter):
    """Ray announces, as a warning, that token authentication is on (the safe default) at every start.
    Drop that notice only; the warning that it is off, and everything else, still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled")


def quiet_token_notice() -> None:
    log = logging.getLogger(TOKEN_LOGGER)
    if not any(isinstance(f, _DropTokenNotice) for f in log.filters):
        log.addFilter(_DropTokenNotice())


def largest_node(resource: str) -> float:
    """The most of ``resource`` ("CPU", "GPU") on any live node: one training never spans machines."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return max((n["Resources"].get(resource, 0.0) for n in nodes), default=0.0)


def pin_threads(num_cpus: float) -> int:
    """Give torch as many threads as the worker has CPUs (at least one)."""
    import torch

    threads = max(1, int(num_cpus))
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    return threads


def placement() -> dict[str, str]:
    """Where this process runs, as run tags: the Ray node and the host."""
    import socket

    import ray

    found = {"host": socket.gethostname()}
    if ray.is_initialized():
        found["node"] = ray.get_runtime_context().get_node_id()
    return found
