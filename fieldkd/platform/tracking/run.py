"""One MLflow run, written through the client API so any process can write to it.

A pipeline is a parent run; its stages are child runs that point to it with the
``mlflow.parentRunId`` tag. Because runs are addressed by id, a child can be
created or resumed in another process (a Ray actor, a Train worker, a trial).

Every call to the store is retried with backoff when it fails for a passing
reason (a locked SQLite database, a tracking server that is briefly away); see
:mod:`.retry`. A run can sample system metrics (CPU, memory, disk, network, GPU)
into itself from a background thread; :meth:`Run.finish` stops it.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
from mlflow.entities import Metric, Param, RunTag, ViewType

from ..atomic import atomic_path, copy_file, write_text
from .retry import DEFAULT_POLICY, RetryPolicy, call_with_retry
from .store import client as make_client
from .store import experiment_id, local_artifact_dir
from .system import SYSTEM_PREFIX, SystemMetrics

PARENT_TAG = "mlflow.parentRunId"
CHECKPOINT_TAG = "fieldkd.checkpoint"  # where a stage's final checkpoint lives in storage (output_dir)
CREATE_TOKEN_TAG = "fieldkd.create_token"  # set by the client that creates a run: a retried creation finds it
NONFINITE_PREFIX = "nonfinite/"  # nonfinite/KEY: how many NaN or infinite values of KEY this handle was given
MAX_PARAM_LENGTH = 6000
BATCH = 100  # MLflow's per-request limit for params and for tags
METRIC_BATCH = 1000  # MLflow's per-request limit for metrics


def flatten(config: dict, prefix: str = "") -> dict[str, str]:
    """{'a': {'b': 1}} -> {'a.b': '1'}; lists become JSON text."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            text = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
            flat[name] = text[:MAX_PARAM_LENGTH]
    return flat


class Run:
    """A handle on one MLflow run. Cheap to create; pickles as (run id, tracking URI)."""

    def __init__(self, run_id: str, tracking_uri: str | None = None,
                 retry: RetryPolicy | None = None):
        self.client = make_client(tracking_uri)
        self.run_id = run_id
        self.retry = retry or DEFAULT_POLICY
        self.retries = 0  # transient failures this handle recovered from
        self._system: SystemMetrics | None = None
        self._last_steps: dict[str, int] | None = None  # see continuing()
        self._nonfinite: Counter = Counter()
        self._lock = threading.Lock()

    def __reduce__(self):
        return (Run, (self.run_id, self.tracking_uri, self.retry))

    def __repr__(self) -> str:
        return f"Run({self.run_id!r}, {self.tracking_uri!r})"

    @property
    def tracking_uri(self) -> str:
        return self.client.tracking_uri

    def _call(self, fn, *args, **kwargs):
        return call_with_retry(fn, *args, policy=self.retry, on_retry=self._count_retry, **kwargs)

    def _count_retry(self, _exc: BaseException) -> None:
        self.retries += 1

    # -- creating and finding runs -------------------------------------------------------

    @classmethod
    def start(cls, experiment: str, name: str, tags: dict[str, str] | None = None,
              parent: Run | str | None = None, tracking_uri: str | None = None) -> Run:
        c = make_client(tracking_uri)
        tags = {k: str(v) for k, v in (tags or {}).items()}
        if parent is not None:
            tags[PARENT_TAG] = parent if isinstance(parent, str) else parent.run_id
        created = create_once(c, experiment_id(c, experiment), name, tags)
        return cls(created.info.run_id, c.tracking_uri)

    @classmethod
    def resume(cls, run_id: str, tracking_uri: str | None = None) -> Run:
        """The run, RUNNING again, logging each metric step once (see :meth:`continuing`)."""
        run = cls(run_id, tracking_uri)
        run._call(run.client.update_run, run_id, status="RUNNING")
        return run.continuing()

    def child(self, name: str, tags: dict[str, str] | None = None) -> Run:
        """A new run in this run's experiment, linked to this one by ``mlflow.parentRunId``."""
        tags = {k: str(v) for k, v in (tags or {}).items()}
        tags[PARENT_TAG] = self.run_id
        created = create_once(self.client, self.info.experiment_id, name, tags, self.retry, self._count_retry)
        return Run(created.info.run_id, self.tracking_uri, self.retry)

    def continuing(self) -> Run:
        """Log each metric step once from now on: a point at or before the last step already
        stored for its key is dropped. A restarted or resumed stage thus keeps the points it
        logged between its checkpoint and the crash (the same values, since the checkpoint
        restores the random state) instead of logging those steps a second time."""
        latest = self._latest_points()
        with self._lock:
            self._last_steps = {}
            for m in latest:
                self._last_steps[m.key] = max(m.step, self._last_steps.get(m.key, m.step))
        return self

    @property
    def info(self):
        return self._call(self.client.get_run, self.run_id).info

    def get(self):
        """The stored run (``mlflow.entities.Run``): info, params, latest metrics, tags."""
        return self._call(self.client.get_run, self.run_id)

    @property
    def parent_id(self) -> str | None:
        return self.get().data.tags.get(PARENT_TAG)

    def children(self) -> list[Run]:
        """Runs in this run's experiment whose ``mlflow.parentRunId`` is this run, oldest first."""
        found, token = [], None
        query = f"tags.`{PARENT_TAG}` = '{self.run_id}'"
        while True:
            page = self._call(self.client.search_runs, [self.info.experiment_id], query,
                              run_view_type=ViewType.ALL, max_results=1000,
                              order_by=["attributes.start_time ASC"], page_token=token)
            found.extend(page)
            token = page.token
            if not token:
                break
        return [Run(r.info.run_id, self.tracking_uri, self.retry) for r in found]

    # -- logging ---------------------------------------------------------------------------

    def set_tags(self, tags: dict[str, str]) -> None:
        items = [RunTag(k, str(v)) for k, v in tags.items()]
        for start in range(0, len(items), BATCH):
            self._call(self.client.log_batch, self.run_id, tags=items[start:start + BATCH])

    def log_params(self, params: dict[str, str]) -> None:
        items = [Param(k, v) for k, v in params.items()]
        for start in range(0, len(items), BATCH):
            self._call(self.client.log_batch, self.run_id, params=items[start:start + BATCH])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        # The timestamp is fixed before the first try, so a retried batch that had in
        # fact been stored is recognised by MLflow as the same points.
        now = int(time.time() * 1000)
        values = {k: float(v) for k, v in metrics.items() if v is not None}
        with self._lock:
            for key in [k for k, v in values.items() if not np.isfinite(v)]:
                # Not stored as a point (a NaN breaks charts and summaries): counted under its own key.
                del values[key]
                self._nonfinite[key] += 1
                values[NONFINITE_PREFIX + key] = float(self._nonfinite[key])
            if self._last_steps is not None:
                values = {k: v for k, v in values.items() if int(step) > self._last_steps.get(k, -1)}
                self._last_steps.update({k: int(step) for k in values})
        items = [Metric(k, v, now, int(step)) for k, v in values.items()]
        for start in range(0, len(items), METRIC_BATCH):
            self._call(self.client.log_batch, self.run_id, metrics=items[start:start + METRIC_BATCH])

    def log_artifact(self, path: str | Path, directory: str | None = None) -> None:
        local = self._local_artifacts()
        if local is not None:  # a folder on (shared) disk: write it as a reader may see it, atomically
            copy_file(path, local / (directory or "") / Path(path).name)
            return
        self._call(self.client.log_artifact, self.run_id, str(path), directory)

    def log_text(self, text: str, file_name: str) -> None:
        local = self._local_artifacts()
        if local is not None:
            write_text(local / file_name, text)
            return
        self._call(self.client.log_text, self.run_id, text, file_name)

    def _local_artifacts(self) -> Path | None:
        """The run's artifact folder when the artifact store is a local path, else None."""
        return local_artifact_dir(self.info.artifact_uri)

    def log_image(self, image: np.ndarray, key: str, step: int) -> None:
        """An image of a series (``key``) at ``step``: the UI's image grid, with a step slider."""
        self._call(self.client.log_image, self.run_id, image, key=key, step=int(step))

    def log_table(self, columns: dict[str, list], file_name: str) -> None:
        """A table (column name -> values) as a JSON artifact that the UI shows as a table."""
        self._call(self.client.log_table, self.run_id, columns, file_name)

    def log_figure(self, figure, file_name: str) -> None:
        local = self._local_artifacts()
        if local is not None:
            with atomic_path(local / file_name) as tmp:
                figure.savefig(tmp)
            return
        self._call(self.client.log_figure, self.run_id, figure, file_name)

    # -- system metrics --------------------------------------------------------------------

    def start_system_metrics(self, interval_s: float = 10.0, node_id: str | None = None,
                             gpu: bool = True) -> SystemMetrics:
        """Sample CPU, memory, disk, network and GPU use into this run every ``interval_s``.

        Metric names are MLflow's (``system/cpu_utilization_percentage``,
        ``system/system_memory_usage_megabytes``, ``system/gpu_0_utilization_percentage``,
        ...); with ``node_id`` they become ``system/<node_id>/...``, for several
        processes that share one run. Steps continue after the run's last system
        step, so a resumed run does not restart at 0. Works in any process; a second
        call while sampling returns the running sampler. Stopped by :meth:`finish`
        or :meth:`stop_system_metrics`.
        """
        if self._system is not None and self._system.running:
            return self._system
        prefix = SYSTEM_PREFIX + (f"{node_id}/" if node_id else "")
        sampler = SystemMetrics(self.log_metrics, interval_s=interval_s, node_id=node_id,
                                first_step=self._next_step(prefix), gpu=gpu,
                                name=f"fieldkd-system-metrics-{self.run_id[:8]}")
        tag = "fieldkd.system_metrics" + (f".{node_id}" if node_id else "")
        self.set_tags({tag: sampler.describe()})
        sampler.start()
        self._system = sampler
        return sampler

    def stop_system_metrics(self) -> None:
        """Stop sampling (after one last sample) and wait for the sampling thread to end."""
        if self._system is not None:
            self._system.stop()
            self._system = None

    def last_step(self) -> int:
        """The largest step of the run's training metrics (system metrics aside), else of
        its children's (a pipeline's parent logs none of its own); 0 when there is none."""
        own = [s for s in self._latest_steps().items() if not s[0].startswith(SYSTEM_PREFIX)]
        if own:
            return max(step for _, step in own)
        steps = [step for child in self.children() for key, step in child._latest_steps().items()
                 if not key.startswith(SYSTEM_PREFIX)]
        return max(steps, default=0)

    def _latest_steps(self) -> dict[str, int]:
        """Each metric's step at its latest point."""
        data = self.get().data
        latest = getattr(data, "_metric_objs", None)
        if latest is None:
            return {k: max(m.step for m in self._call(self.client.get_metric_history, self.run_id, k))
                    for k in data.metrics}
        return {m.key: m.step for m in latest}

    def _next_step(self, prefix: str) -> int:
        steps = [m.step for m in self._latest_points(prefix)]
        return max(steps) + 1 if steps else 0

    def _latest_points(self, prefix: str = "") -> list[Metric]:
        """The latest point of every metric whose key starts with ``prefix``, with its step."""
        data = self.get().data
        latest = getattr(data, "_metric_objs", None)  # latest point per key, with its step
        if latest is None:
            keys = [k for k in data.metrics if k.startswith(prefix)]
            latest = [m for k in keys for m in self._call(self.client.get_metric_history, self.run_id, k)]
        return [m for m in latest if m.key.startswith(prefix)]

    def finish(self, status: str = "FINISHED") -> None:
        self.stop_system_metrics()
        self._call(self.client.set_terminated, self.run_id, status=status)


def create_once(client, experiment: str, name: str, tags: dict[str, str],
                policy: RetryPolicy = DEFAULT_POLICY, on_retry=None):
    """``client.create_run``, retried on passing failures without making a second run:
    the run carries a token of this call, and a retry first looks for a run with it
    (a creation may have been stored although its answer was lost)."""
    token = uuid.uuid4().hex
    tags = {**tags, CREATE_TOKEN_TAG: token}
    attempts = 0

    def attempt():
        nonlocal attempts
        attempts += 1
        if attempts > 1:
            found = client.search_runs([experiment], f"tags.`{CREATE_TOKEN_TAG}` = '{token}'",
                                       run_view_type=ViewType.ALL, max_results=1)
            if found:
                return found[0]
        return client.create_run(experiment, run_name=name, tags=tags)

    return call_with_retry(attempt, policy=policy, on_retry=on_retry)
