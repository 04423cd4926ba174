"""Progress bars that work in the terminal and inside Ray workers.

In a Ray worker a plain tqdm bar would arrive at the driver as a stream of
interleaved log lines. Ray's own tqdm sends bar states instead, and the driver
draws one line per training, so parallel trainings stay readable.
"""

from __future__ import annotations


def inside_ray_worker() -> bool:
    try:
        import ray
    except ImportError:
        return False
    if not ray.is_initialized():
        return False
    return ray.get_runtime_context().worker.mode == ray.WORKER_MODE


class _RayBar:
    def __init__(self, total: int, initial: int, description: str):
        from ray.experimental.tqdm_ray import tqdm

        self.description = description
        self.bar = tqdm(total=total, desc=description, unit="step")
        if initial:
            self.bar.update(initial)

    def update(self, n: int = 1) -> None:
        self.bar.update(n)

    def set_postfix(self, values: dict) -> None:
        text = " ".join(f"{k}={v}" for k, v in values.items())
        self.bar.set_description(f"{self.description} {text}")

    def close(self) -> None:
        self.bar.close()


def progress_bar(total: int, initial: int, description: str, enabled: bool = True):
    """A bar with ``update``, ``set_postfix`` and ``close``."""
    if enabled and inside_ray_worker():
        return _RayBar(total, initial, description)
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=description, disable=not enabled, dynamic_ncols=True,
                leave=False)
