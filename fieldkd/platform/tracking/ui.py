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
VIEW_KEY = "fieldkd"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
VIEW_NAME = "fieldkd results"
METRIC_COLUMNS = ("test/psnr", "test/ssim", "test/lpips", "val/psnr", "train/steps", "train/seconds")
TAG_COLUMNS = ("fieldkd.method", "fieldkd.field", "fieldkd.scene", "fieldkd.stage")


def column(kind: str, name: str) -> str:
    """A runs-table column as the UI names it: ``metrics.`test/psnr```."""
    return f"{kind}.`{name}`"


def saved_view(now_ms: int | None = None) -> str:
    """The saved view's tag value: the columns above, newest runs first, runs with children expanded."""
    state = {
        "selectedColumns": [column("metrics", m) for m in METRIC_COLUMNS] + [column("tags", t) for t in TAG_COLUMNS],
        "orderByKey": column("attributes", "start_time"),
        "orderByAsc": False,
    }
    stamp = int(time.time() * 1000) if now_ms is None else now_ms
    return json.dumps({"name": VIEW_NAME, "createdAt": stamp, "updatedAt": stamp, "state": json.dumps(state)})


def experiment_tags(existing: dict[str, str]) -> dict[str, str]:
    """The tags to set on an experiment that has ``existing``: only those it lacks."""
    wanted = {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, VIEW_TAG: saved_view()}
    return {k: v for k, v in wanted.items() if k not in existing}


def ui_query(**extra: str) -> str:
    return urlencode({"workflowType": "machine_learning", "viewStateShareKey": VIEW_KEY, **extra})


def experiment_url(base: str, experiment_id: str) -> str:
    """The experiment's runs table in the model-training UI, with fieldkd's columns."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{ui_query()}"


def run_url(base: str, experiment_id: str, run_id: str) -> str:
    """A run's page in the model-training UI."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"
