"""One MLflow run, written through the client API so any process can write to it.

A pipeline is a parent run; its stages are child runs that point to it with the
``mlflow.parentRunId`` tag. Because runs are addressed by id, a child can be
created or resumed in another process (a Ray actor, a Train worker, a trial).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from mlflow.entities import Metric, Param, RunTag

from .store import client as make_client
from .store import experiment_id

PARENT_TAG = "mlflow.parentRunId"
MAX_PARAM_LENGTH = 6000
BATCH = 100  # MLflow's per-request limit for params


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
    def __init__(self, run_id: str, tracking_uri: str | None = None):
        self.client = make_client(tracking_uri)
        self.run_id = run_id

    @property
    def tracking_uri(self) -> str:
        return self.client.tracking_uri

    @classmethod
    def start(cls, experiment: str, name: str, tags: dict[str, str] | None = None,
              parent: "Run | str | None" = None, tracking_uri: str | None = None) -> "Run":
        c = make_client(tracking_uri)
        tags = dict(tags or {})
        if parent is not None:
            tags[PARENT_TAG] = parent if isinstance(parent, str) else parent.run_id
        created = c.create_run(experiment_id(c, experiment), run_name=name, tags=tags)
        return cls(created.info.run_id, c.tracking_uri)

    @classmethod
    def resume(cls, run_id: str, tracking_uri: str | None = None) -> "Run":
        run = cls(run_id, tracking_uri)
        run.client.update_run(run_id, status="RUNNING")
        return run

    def child(self, name: str, tags: dict[str, str] | None = None) -> "Run":
        experiment = self.client.get_experiment(self.info.experiment_id).name
        return Run.start(experiment, name, tags, parent=self, tracking_uri=self.tracking_uri)

    @property
    def info(self):
        return self.client.get_run(self.run_id).info

    def set_tags(self, tags: dict[str, str]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_params(self, params: dict[str, str]) -> None:
        items = [Param(k, v) for k, v in params.items()]
        for start in range(0, len(items), BATCH):
            self.client.log_batch(self.run_id, params=items[start:start + BATCH])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, int(step)) for k, v in metrics.items()
                 if v is not None and np.isfinite(float(v))]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def log_artifact(self, path: str | Path, directory: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), directory)

    def log_text(self, text: str, file_name: str) -> None:
        self.client.log_text(self.run_id, text, file_name)

    def log_image(self, image: np.ndarray, file_name: str) -> None:
        self.client.log_image(self.run_id, image, file_name)

    def log_figure(self, figure, file_name: str) -> None:
        self.client.log_figure(self.run_id, figure, file_name)

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)
