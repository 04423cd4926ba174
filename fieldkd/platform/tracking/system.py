"""System metrics (CPU, memory, disk, network, GPU) sampled into a run from a thread.

MLflow's own ``SystemMetricsMonitor`` is tied to ``mlflow.start_run``-style use: it
stops as soon as one status read fails and logs without retries. Here the
collectors are MLflow's (so names and units are MLflow's: ``cpu_utilization_percentage``,
``system_memory_usage_megabytes``, ``system_memory_usage_percentage``,
``disk_usage_percentage``, ``network_receive_megabytes``,
``gpu_0_utilization_percentage``, ``gpu_0_memory_usage_megabytes``, ...), and the
sampling loop is ours: it logs through a run handle addressed by id (with retries),
keeps going after a failed write, and ends when told to.

GPU: MLflow reads NVIDIA GPUs through ``pynvml`` (package ``nvidia-ml-py``) and AMD
GPUs through ``pyrsmi``. Where neither is installed but ``nvidia-smi`` is on the
PATH, :class:`NvidiaSmiMonitor` reads the same figures from it under the same
names. Like MLflow, every GPU of the machine is reported by its physical index.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time
from collections.abc import Callable

from mlflow.system_metrics.metrics.base_metrics_monitor import BaseMetricsMonitor

log = logging.getLogger("fieldkd.tracking")

SYSTEM_PREFIX = "system/"
MiB_TO_MB = 2**20 / 1e6
NVIDIA_SMI_FIELDS = "index,utilization.gpu,memory.used,memory.total,power.draw,power.limit"


def parse_nvidia_smi(text: str) -> dict[str, float]:
    """Metrics from ``nvidia-smi --query-gpu=<NVIDIA_SMI_FIELDS> --format=csv,noheader,nounits``.

    Fields a GPU does not report (``[N/A]``, ``[Not Supported]``) are left out.
    """
    def number(field: str) -> float | None:
        try:
            return float(field.strip())
        except ValueError:
            return None

    metrics: dict[str, float] = {}
    for line in text.strip().splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 6 or number(fields[0]) is None:
            continue
        index, util, used, total, power, limit = fields[0], *map(number, fields[1:])
        gpu = f"gpu_{int(float(index))}"
        if util is not None:
            metrics[f"{gpu}_utilization_percentage"] = util
        if used is not None:
            metrics[f"{gpu}_memory_usage_megabytes"] = used * MiB_TO_MB
            if total:
                metrics[f"{gpu}_memory_usage_percentage"] = round(used / total * 100, 1)
        if power is not None:
            metrics[f"{gpu}_power_usage_watts"] = power
            if limit:
                metrics[f"{gpu}_power_usage_percentage"] = power / limit * 100
    return metrics


class NvidiaSmiMonitor(BaseMetricsMonitor):
    """NVIDIA GPU figures read from ``nvidia-smi``, for machines without ``pynvml``."""

    def __init__(self, executable: str | None = None, timeout_s: float = 5.0):
        super().__init__()
        self.executable = executable or shutil.which("nvidia-smi")
        self.timeout_s = timeout_s
        if self.executable is None:
            raise RuntimeError("nvidia-smi is not on the PATH")
        if not self._query():
            raise RuntimeError("nvidia-smi reports no GPU")

    def _query(self) -> dict[str, float]:
        out = subprocess.run([self.executable, f"--query-gpu={NVIDIA_SMI_FIELDS}",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=self.timeout_s, check=True).stdout
        return parse_nvidia_smi(out)

    def collect_metrics(self):
        for key, value in self._query().items():
            self._metrics[key].append(value)

    def aggregate_metrics(self):
        return {k: round(sum(v) / len(v), 1) for k, v in self._metrics.items() if v}


def import_psutil():
    """psutil, which MLflow's CPU, disk and network collectors need.

    It is not a direct dependency: Ray ships its own copy and puts it on ``sys.path``
    when imported, which is how Ray workers have it. Here Ray is imported for that
    reason when psutil is not installed on its own.
    """
    try:
        import psutil
    except ImportError:
        import psutil
        import ray  # noqa: F401  (adds ray/thirdparty_files, which holds psutil, to sys.path)
    return psutil


def gpu_monitor() -> tuple[BaseMetricsMonitor | None, str]:
    """The first GPU reader that works here, and its name ("nvml", "rocm", "nvidia-smi", "none")."""
    from mlflow.system_metrics.metrics.gpu_monitor import GPUMonitor
    from mlflow.system_metrics.metrics.rocm_monitor import ROCMMonitor

    for name, make in (("nvml", GPUMonitor), ("rocm", ROCMMonitor), ("nvidia-smi", NvidiaSmiMonitor)):
        try:
            return make(), name
        except Exception as exc:  # a missing library, driver or GPU
            log.debug("no GPU metrics through %s: %s", name, exc)
    return None, "none"


def default_monitors(gpu: bool = True) -> tuple[list[BaseMetricsMonitor], list[str]]:
    import_psutil()
    from mlflow.system_metrics.metrics.cpu_monitor import CPUMonitor
    from mlflow.system_metrics.metrics.disk_monitor import DiskMonitor
    from mlflow.system_metrics.metrics.network_monitor import NetworkMonitor

    monitors: list[BaseMetricsMonitor] = [CPUMonitor(), DiskMonitor(), NetworkMonitor()]
    names = ["cpu", "memory", "disk", "network"]
    if gpu:
        reader, source = gpu_monitor()
        if reader is not None:
            monitors.append(reader)
        names.append(f"gpu:{source}")
    return monitors, names


class SystemMetrics:
    """A daemon thread that samples the machine every ``interval_s`` and logs each sample.

    ``log(metrics, step)`` writes one sample (``Run.log_metrics``). Samples are taken
    at ``interval_s``, ``2 interval_s``, ... after :meth:`start`, and once more when
    :meth:`stop` is called if at least half an interval has passed since the last
    one (or none was taken), so short stages get a sample too. A failed write is
    logged and skipped; after ``max_failures`` failures in a row the sampler gives up.
    """

    def __init__(self, log_fn: Callable[[dict[str, float], int], None], interval_s: float = 10.0,
                 node_id: str | None = None, first_step: int = 0, gpu: bool = True,
                 name: str = "fieldkd-system-metrics", max_failures: int = 3,
                 monitors: list[BaseMetricsMonitor] | None = None):
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self._log = log_fn
        self.interval_s = float(interval_s)
        self.prefix = SYSTEM_PREFIX + (f"{node_id}/" if node_id else "")
        self.step = int(first_step)
        self.max_failures = max_failures
        if monitors is None:
            self.monitors, self._names = default_monitors(gpu)
        else:
            self.monitors, self._names = monitors, [type(m).__name__ for m in monitors]
        self.samples = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._last = time.monotonic()

    def describe(self) -> str:
        return f"{','.join(self._names)} every {self.interval_s:g}s"

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> SystemMetrics:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 60.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("system metrics thread %s did not stop within %.0f s",
                            self._thread.name, timeout_s)

    def sample(self) -> dict[str, float]:
        """One reading of every monitor, named as logged (``system/...``)."""
        values: dict[str, float] = {}
        for monitor in self.monitors:
            try:
                monitor.collect_metrics()
                values.update(monitor.aggregate_metrics())
            except Exception as exc:
                log.debug("system metrics: %s failed: %s", type(monitor).__name__, exc)
            finally:
                monitor.clear_metrics()
        return {self.prefix + k: float(v) for k, v in values.items()}

    def _log_sample(self) -> bool:
        self._last = time.monotonic()
        try:
            self._log(self.sample(), self.step)
        except Exception as exc:
            self.failures += 1
            log.warning("system metrics: could not log step %d (%s)", self.step, exc)
            return self.failures < self.max_failures
        self.failures = 0
        self.samples += 1
        self.step += 1
        return True

    def _loop(self) -> None:
        # psutil keeps its CPU measuring window per thread; the first reading in a
        # thread only opens it.
        import_psutil().cpu_percent()
        self._last = time.monotonic()
        while not self._stop.wait(self.interval_s):
            if not self._log_sample():
                log.warning("system metrics: giving up after %d failed writes", self.failures)
                return
        if self.samples == 0 or time.monotonic() - self._last >= self.interval_s / 2:
            self._log_sample()
