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
    """The cluster to join: RAY_ADDRESS (also set by Ray for submitted jobs)."""
    return os.environ.get("RAY_ADDRESS") or None


def init_ray(num_cpus: int | None = None, num_gpus: int | None = None) -> dict:
    """Start or join Ray once per process; returns the cluster's total resources."""
    import ray

    if not ray.is_initialized():
        common = dict(namespace=NAMESPACE, log_to_driver=True, configure_logging=False)
        address = cluster_address()
        if address:
            ray.init(address=address, **common)
        else:
            ray.init(num_cpus=num_cpus or os.cpu_count(), num_gpus=num_gpus, include_dashboard=False,
                     **common)
    return ray.cluster_resources()


def pin_threads(num_cpus: float) -> int:
    """Give torch as many threads as the worker has CPUs (at least one)."""
    import torch

    threads = max(1, int(num_cpus))
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    return threads
