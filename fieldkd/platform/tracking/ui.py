"""How MLflow's web UI shows a fieldkd experiment: its kind, a saved view of the runs table, links.

MLflow 3 has two UIs in one: GenAI (traces) and model training (runs, charts). Up to 3.4 an
experiment's ``mlflow.experimentKind`` tag chooses; from 3.5 a UI-wide switch does, which a link
sets with ``workflowType=machine_learning``. fieldkd does both.

The runs table shows no metric columns until someone picks them. MLflow 3's saved views (the
"Views" menu; experiment tags ``mlflow.sharedViewState.<key>``) hold picked columns, so fieldkd
saves one with the numbers a researcher comes for, and links open it (``viewStateShareKey``).
Tags a user changed are left alone.
"""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
VIEW_PREFIX = "mlflow.sharedViewState."
VIEW_KEY, VIEW_NAME = "fieldkd", "fieldkd results"
TIME_VIEW_KEY, TIME_VIEW_NAME = "fieldkd-time", "fieldkd curves against time"
METRIC_COLUMNS = ("test/psnr", "test/ssim", "test/lpips", "val/psnr", "train/steps", "train/seconds")
TAG_COLUMNS = ("fieldkd.method", "fieldkd.field", "fieldkd.scene", "fieldkd.stage")


def column(kind: str, name: str) -> str:
    """A runs-table column as the UI names it: ``metrics.`test/psnr```."""
    return f"{kind}.`{name}`"


def saved_view(name: str, x_axis: str = "step", now_ms: int | None = None) -> str:
    """A saved view's tag value: the columns above, newest runs first, charts against ``x_axis``
    (``step`` or ``time-relative``, the seconds since each run started)."""
    state = {
        "selectedColumns": [column("metrics", m) for m in METRIC_COLUMNS] + [column("tags", t) for t in TAG_COLUMNS],
        "orderByKey": "attributes.start_time",
        "orderByAsc": False,
        "globalLineChartConfig": {"xAxisKey": x_axis, "lineSmoothness": 0, "selectedXAxisMetricKey": ""},
    }
    stamp = int(time.time() * 1000) if now_ms is None else now_ms
    return json.dumps({"name": name, "createdAt": stamp, "updatedAt": stamp, "state": json.dumps(state)})


def experiment_tags(existing: dict[str, str]) -> dict[str, str]:
    """The tags to set on an experiment that has ``existing``: only those it lacks."""
    wanted = {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, VIEW_PREFIX + VIEW_KEY: saved_view(VIEW_NAME),
              VIEW_PREFIX + TIME_VIEW_KEY: saved_view(TIME_VIEW_NAME, "time-relative")}
    return {k: v for k, v in wanted.items() if k not in existing}


def experiment_url(base: str, experiment_id: str, charts_by_time: bool = False) -> str:
    """The experiment's runs table in the model-training UI, with fieldkd's columns; or its
    charts of every run against the time since each run started."""
    query = {"workflowType": "machine_learning", "viewStateShareKey": VIEW_KEY}
    if charts_by_time:
        query.update(viewStateShareKey=TIME_VIEW_KEY, compareRunsMode="CHART")
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{urlencode(query)}"


def run_url(base: str, experiment_id: str, run_id: str, tab: str = "") -> str:
    """A run's page in the model-training UI; ``tab``: ``model-metrics`` (charts, images), ``artifacts``, ..."""
    page = f"/{tab}" if tab else ""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}{page}?workflowType=machine_learning"
