"""Where runs are recorded: MLFLOW_TRACKING_URI, else a local store in the working directory.

The local store is one SQLite file that many processes write at once (Ray actors,
Tune trials, Train workers). Three things make that safe:

- **One initialisation.** MLflow creates the tables and runs its schema migrations
  in whichever process opens a fresh database first, without a lock between
  processes; two processes doing it at once fail ("table ... already exists", an
  Alembic revision mismatch). :func:`prepare_local_store` runs that step under an
  exclusive file lock, once per database, and every later process sees a ready
  database and skips the lock.
- **WAL journal.** The database is switched to write-ahead logging when it is
  created (the mode is stored in the file, so every later connection uses it).
  Readers (the UI, ``get_metric_history``) then never block writers and writers
  never block readers; writers still take turns.
- **Busy timeout and retries.** MLflow sets ``PRAGMA busy_timeout = 20000`` on every
  session, so a writer waits up to 20 s for the write lock (a ``?timeout=`` query
  parameter on the URI reaches SQLAlchemy but MLflow's pragma overrides it). What
  still fails after that is retried with backoff by :mod:`.retry`.

WAL needs shared memory between the processes that open the database, so the
local store is for processes on one machine. Several machines share a tracking
server instead (set ``MLFLOW_TRACKING_URI``). ``FIELDKD_SQLITE_WAL=0`` keeps
SQLite's default rollback journal for a database created on a file system where
WAL does not work.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from mlflow.tracking import MlflowClient

from ..atomic import copy_file
from .retry import call_with_retry
from .ui import experiment_tags

log = logging.getLogger("fieldkd.tracking")

LOCAL_DB = "mlflow.db"
LOCAL_ARTIFACTS = "mlartifacts"
SQLITE_PREFIX = "sqlite:///"

_prepared: set[str] = set()
_prepared_lock = threading.Lock()


def tracking_uri() -> str:
    """The configured URI, or an SQLite store in the working directory.

    The local default is made absolute so that every process of a run (Ray
    workers start elsewhere) writes to the same store.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"{SQLITE_PREFIX}{Path.cwd().resolve() / LOCAL_DB}"


def is_local_sqlite(uri: str) -> bool:
    return uri.startswith(SQLITE_PREFIX)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI; None for other URIs and in-memory databases."""
    if not is_local_sqlite(uri):
        return None
    path = unquote(uri[len(SQLITE_PREFIX):].split("?", 1)[0])
    if not path or path == ":memory:" or path.startswith("file:"):
        return None
    return Path(path).resolve()


def wal_enabled() -> bool:
    return os.environ.get("FIELDKD_SQLITE_WAL", "1").strip().lower() not in ("0", "false", "no", "off")


@contextmanager
def _exclusive_lock(db_path: Path):
    """An exclusive lock between processes on this machine, keyed by the database path.

    The lock file lives in the temporary directory (like MLflow's own initialisation
    lock), so nothing is left next to the database.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no fcntl; initialisation is then not serialised
        yield
        return
    digest = hashlib.sha1(str(db_path).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"fieldkd-mlflow-init-{digest}.lock"
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _ready(db_path: Path, timeout_s: float = 20.0) -> bool:
    """True when MLflow has fully initialised the database (and it is in WAL mode if wanted).

    MLflow's last initialisation step inserts the default experiment (id 0), after the
    tables and all migrations, so its presence means initialisation has finished.
    """
    if not db_path.exists() or db_path.stat().st_size == 0:
        return False
    try:
        with _connect(db_path, timeout_s) as conn:
            if conn.execute("SELECT 1 FROM experiments WHERE experiment_id = 0").fetchone() is None:
                return False
            if wal_enabled():
                mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
                return str(mode).lower() == "wal"
            return True
    except sqlite3.Error:
        return False


@contextmanager
def _connect(db_path: Path, timeout_s: float):
    conn = sqlite3.connect(str(db_path), timeout=timeout_s, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def _set_wal(db_path: Path) -> None:
    try:
        with _connect(db_path, timeout_s=5.0) as conn:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            log.warning("could not switch %s to WAL (journal_mode is %s)", db_path, mode)
    except sqlite3.Error as exc:
        # An older database in use by other processes cannot switch modes right now;
        # it keeps working in its current mode.
        log.warning("could not switch %s to WAL: %s", db_path, exc)


def prepare_local_store(uri: str) -> None:
    """Make a ``sqlite:///`` store ready for many concurrent writers; no-op for other URIs.

    Safe to call from any number of processes at once, and cheap after the first
    call in a process. The first process to get the lock switches a new database
    to WAL and lets MLflow create the tables, run the migrations and add the
    default experiment; the others wait for it and find the database ready.
    """
    db_path = sqlite_path(uri)
    if db_path is None:
        return
    key = str(db_path)
    with _prepared_lock:
        if key in _prepared:
            return
        if not _ready(db_path):
            db_path.parent.mkdir(parents=True, exist_ok=True)
            with _exclusive_lock(db_path):
                if not _ready(db_path):
                    if wal_enabled():
                        _set_wal(db_path)
                    # Opening the store is what creates and migrates the schema; MLflow
                    # caches the store per URI, so this process keeps using it.
                    call_with_retry(MlflowClient(tracking_uri=uri).search_experiments, max_results=1)
        _prepared.add(key)


def local_artifact_dir(artifact_uri: str) -> Path | None:
    """A run's artifact folder when its artifact store is a local path, else None."""
    parsed = urlparse(artifact_uri)
    if parsed.scheme == "file":
        return Path(url2pathname(parsed.path))
    return Path(artifact_uri) if parsed.scheme == "" else None


class AtomicClient(MlflowClient):
    """MLflow's client, whose files land atomically in a local artifact store (temp file in the
    same folder, fsync, rename): MLflow's own helpers (log_image, log_table, log_text, ...) all
    write through ``log_artifact``, so a reader never sees half an image."""

    def log_artifact(self, run_id: str, local_path: str, artifact_path: str | None = None) -> None:
        folder = local_artifact_dir(self.get_run(run_id).info.artifact_uri)
        if folder is None:
            return super().log_artifact(run_id, local_path, artifact_path)
        copy_file(local_path, folder / (artifact_path or "") / Path(local_path).name)


def client(uri: str | None = None) -> MlflowClient:
    uri = uri or tracking_uri()
    prepare_local_store(uri)
    return AtomicClient(tracking_uri=uri)


def experiment_id(mlflow_client: MlflowClient, name: str) -> str:
    """Get or create an experiment, with the tags that make MLflow's UI show it as fieldkd's
    (:mod:`.ui`); local stores keep artifacts next to the database."""
    found = call_with_retry(mlflow_client.get_experiment_by_name, name)
    if found is not None:
        for key, value in experiment_tags(found.tags).items():
            call_with_retry(mlflow_client.set_experiment_tag, found.experiment_id, key, value)
        return found.experiment_id
    location = None
    db_path = sqlite_path(mlflow_client.tracking_uri)
    if db_path is not None:
        location = (db_path.parent / LOCAL_ARTIFACTS).as_uri()
    try:
        return call_with_retry(mlflow_client.create_experiment, name, artifact_location=location,
                               tags=experiment_tags({}))
    except Exception:
        # Another process created it first.
        found = call_with_retry(mlflow_client.get_experiment_by_name, name)
        if found is None:
            raise
        return found.experiment_id
