"""How much of a node each training gets, unless the config says otherwise."""

from __future__ import annotations


def training_resources(compute: dict, concurrent: int) -> tuple[float, float]:
    """(num_cpus, num_gpus) per training when ``concurrent`` trainings share the cluster.

    By default the largest node's CPUs are split evenly (at least one each) and,
    where there are GPUs, each training gets an equal fraction of one.
    """
    from .session import largest_node

    concurrent = max(1, concurrent)
    cpus = compute.get("cpus_per_training")
    if cpus is None:
        cpus = max(1.0, float(int(largest_node("CPU") // concurrent)))
    gpus = compute.get("gpus_per_training")
    if gpus is None:
        per_node = largest_node("GPU")
        gpus = min(1.0, per_node / concurrent) if per_node else 0.0
    return float(cpus), float(gpus)
