"""The one place that starts or joins Ray.

- Inside `ray job submit`, or with RAY_ADDRESS set, join that cluster.
- Otherwise start a local Ray instance sized to this machine.

Workers pin torch's thread count to the CPUs they were given, so that several
trainings on one machine do not oversubscribe its cores.
"""

from __future__ import annotations

import os

NAMESPACE = "fieldkd"


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
    common = dict(namespace=NAMESPACE, log_to_driver=True, configure_logging=False)
    address = cluster_address()
    if address:
        ray.init(address=address, **common)
        return False
    # "local": always a fresh instance of our own, never whatever cluster an address file names.
    ray.init(address="local", num_cpus=num_cpus or machine_cpus(), num_gpus=num_gpus,
             include_dashboard=dashboard, **common)
    return True


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
