"""Where runs are recorded: MLFLOW_TRACKING_URI, else a local store in the working directory."""

from __future__ import annotations

import os
from pathlib import Path

from mlflow.tracking import MlflowClient

LOCAL_DB = "mlflow.db"
LOCAL_ARTIFACTS = "mlartifacts"


def tracking_uri() -> str:
    """The configured URI, or an SQLite store in the working directory.

    The local default is made absolute so that every process of a run (Ray
    workers start elsewhere) writes to the same store.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{Path.cwd().resolve() / LOCAL_DB}"


def is_local_sqlite(uri: str) -> bool:
    return uri.startswith("sqlite:///")


def client(uri: str | None = None) -> MlflowClient:
    uri = uri or tracking_uri()
    return MlflowClient(tracking_uri=uri)


def experiment_id(mlflow_client: MlflowClient, name: str) -> str:
    """Get or create an experiment; local stores keep artifacts next to the database."""
    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    uri = mlflow_client.tracking_uri
    if is_local_sqlite(uri):
        db_path = Path(uri[len("sqlite:///"):])
        location = (db_path.parent / LOCAL_ARTIFACTS).resolve().as_uri()
    try:
        return mlflow_client.create_experiment(name, artifact_location=location)
    except Exception:
        # Another process created it first.
        found = mlflow_client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id
