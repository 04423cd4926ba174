"""Where a finished run can be seen: the MLflow UI command and the run's address in it."""

from __future__ import annotations

from .ui import run_url

UI_HOST = "127.0.0.1"
UI_PORT = 5000


def where_to_look(tracking_uri: str, experiment: str, experiment_id: str, run_id: str) -> list[str]:
    """Lines for the user: the run id, how to open the UI (unless a server already holds the
    runs) and the URL of the run. A local UI binds to 127.0.0.1 only."""
    lines = [f"fieldkd: run {run_id} is in MLflow, experiment {experiment!r} (id {experiment_id})"]
    if tracking_uri.startswith(("http://", "https://")):
        lines.append(f"  open {run_url(tracking_uri, experiment_id, run_id)}")
        return lines
    lines.append(f"  mlflow ui --backend-store-uri {tracking_uri} --host {UI_HOST} --port {UI_PORT}")
    lines.append(f"  then open {run_url(f'http://{UI_HOST}:{UI_PORT}', experiment_id, run_id)}")
    return lines
