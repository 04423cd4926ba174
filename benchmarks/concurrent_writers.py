"""Many writer processes logging into the default local store at once.

    python benchmarks/concurrent_writers.py [--writers 8] [--seconds 60] [--rate 10] [--keys 10]
                                            [--modes fieldkd,plain]

Each writer is its own process (multiprocessing, spawn). All of them start at the
same moment on a store that does not exist yet: the default store of a fresh
working directory, ``sqlite:///<cwd>/mlflow.db``, with MLFLOW_TRACKING_URI unset.
Each creates a run, then logs **one batch of ``--keys`` metrics every 1/``--rate``
seconds** (default: 10 metrics every 0.1 s, so 600 batches and 6,000 points per
writer in 60 s) on a fixed schedule; a write that ends late is followed at once
by the next one. While they write, the parent process reads like an open UI
would: once a second, one run's history of one metric.

Modes:

- ``fieldkd``: ``fieldkd.platform.tracking.Run`` (one-time store preparation under
  a lock, WAL journal, retries with backoff);
- ``plain``: ``MlflowClient`` as it comes (no preparation, no retries), for comparison;
- ``plain-preinit``: the same, on a store that one process created beforehand, so that
  only the steady state is compared (SQLite's default rollback journal, no retries).

Counted per mode: writers that could not start, write errors (after retries),
retries, points expected (successful writes x keys) against points stored
(``get_metric_history``), latency of each write call, and how far the writers
fell behind their schedule. Writes results/concurrent_writers.json and .md.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import markdown_table, write_results

EXPERIMENT = "concurrent-writers"


def writer(mode: str, index: int, workdir: str, start_at: float, seconds: float, rate: float,
           keys: int, queue) -> None:
    """One writer process; puts a dict of its measurements on ``queue``."""
    os.chdir(workdir)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    import mlflow  # noqa: F401  (imports happen before the start signal, outside the timing)
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from fieldkd.platform.tracking import Run, tracking_uri

    out = {"index": index, "pid": os.getpid(), "run_id": None, "errors": [], "latencies_ms": [],
           "ok_batches": 0, "retries": 0, "start_error": None, "late_s": 0.0}
    time.sleep(max(0.0, start_at - time.time()))
    began = time.perf_counter()
    try:
        if mode == "fieldkd":
            run = Run.start(EXPERIMENT, f"writer-{index}", tracking_uri=tracking_uri())
            run_id = run.run_id

            def log(values, step):
                run.log_metrics(values, step)
        else:
            client = MlflowClient(tracking_uri())
            found = client.get_experiment_by_name(EXPERIMENT)
            if found is None:
                try:
                    exp = client.create_experiment(EXPERIMENT)
                except Exception:
                    exp = client.get_experiment_by_name(EXPERIMENT).experiment_id
            else:
                exp = found.experiment_id
            run_id = client.create_run(exp, run_name=f"writer-{index}").info.run_id

            def log(values, step):
                now = int(time.time() * 1000)
                client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()])
    except Exception as exc:
        out["start_error"] = repr(exc)[:500]
        queue.put(out)
        return
    out["run_id"] = run_id
    out["start_seconds"] = time.perf_counter() - began

    period = 1.0 / rate
    t0 = time.perf_counter()
    batches = int(round(seconds * rate))
    for step in range(batches):
        slot = t0 + step * period
        wait = slot - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        values = {f"bench/m{k}": step + k / 100 for k in range(keys)}
        started = time.perf_counter()
        try:
            log(values, step)
            out["ok_batches"] += 1
        except Exception as exc:
            out["errors"].append(f"step {step}: {repr(exc)[:300]}")
        done = time.perf_counter()
        out["latencies_ms"].append((done - started) * 1000)
        out["late_s"] = max(out["late_s"], done - (slot + period))
    out["write_seconds"] = time.perf_counter() - t0
    if mode == "fieldkd":
        out["retries"] = run.retries
        run.finish()
    else:
        client.set_terminated(run_id)
    queue.put(out)


def read_like_a_ui(mode: str, uri: str, stop_at: float, keys_to_read: str) -> list[float]:
    """Once a second: find the runs, read one run's history of one metric. Latencies in ms.

    In fieldkd mode the reader opens the store through fieldkd too: a plain MLflow
    client that opens a store while another process is still creating its tables
    runs the same creation again and breaks it (MLflow's own behaviour).
    """
    from mlflow.tracking import MlflowClient

    from fieldkd.platform.tracking.store import client as fieldkd_client

    latencies, turn, client = [], 0, None
    while time.time() < stop_at:
        try:
            # opening the store is not part of a read
            client = client or (fieldkd_client(uri) if mode == "fieldkd" else MlflowClient(uri))
            started = time.perf_counter()
            exp = client.get_experiment_by_name(EXPERIMENT)
            if exp is not None:
                runs = client.search_runs([exp.experiment_id], max_results=100)
                if runs:
                    client.get_metric_history(runs[turn % len(runs)].info.run_id, keys_to_read)
                    latencies.append((time.perf_counter() - started) * 1000)
        except Exception:
            pass  # a reader that fails is not what is measured here
        turn += 1
        time.sleep(1.0)
    return latencies


def count_points(uri: str, db: Path, run_ids: list[str], keys: int) -> tuple[int, str]:
    """Stored points of the writers' runs, through MLflow; with SQL where MLflow cannot open the store."""
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(uri)
        return sum(len(client.get_metric_history(run, f"bench/m{k}"))
                   for run in run_ids for k in range(keys)), "get_metric_history"
    except Exception as exc:
        print(f"MLflow cannot read the store ({type(exc).__name__}); counting rows with SQL", flush=True)
    if not run_ids:
        return 0, "none"
    with sqlite3.connect(db) as conn:
        marks = ",".join("?" * len(run_ids))
        (count,) = conn.execute(f"SELECT COUNT(*) FROM metrics WHERE run_uuid IN ({marks})", run_ids).fetchone()
    return int(count), "sql"


def percentile(values, q):
    return float(np.percentile(values, q)) if len(values) else float("nan")


def measure(mode: str, writers: int, seconds: float, rate: float, keys: int) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix=f"fieldkd-writers-{mode}-"))
    uri = f"sqlite:///{workdir.resolve() / 'mlflow.db'}"
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    if mode == "plain-preinit":
        from mlflow.tracking import MlflowClient

        MlflowClient(uri).create_experiment(EXPERIMENT)
    start_at = time.time() + 15.0  # time for every process to start and import
    procs = [ctx.Process(target=writer, args=(mode, i, str(workdir), start_at, seconds, rate, keys, queue))
             for i in range(writers)]
    load_before = os.getloadavg()
    for p in procs:
        p.start()
    time.sleep(max(0.0, start_at + 3.0 - time.time()))
    reads = read_like_a_ui(mode, uri, start_at + seconds, "bench/m0")
    results = [queue.get(timeout=seconds + 600) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    load_after = os.getloadavg()

    scheduled = int(round(seconds * rate)) * keys * writers
    runs = [r["run_id"] for r in results if r["run_id"] is not None]
    expected = sum(r["ok_batches"] * keys for r in results if r["run_id"] is not None)
    stored, counted_with = count_points(uri, workdir / "mlflow.db", runs, keys)
    latencies = [x for r in results for x in r["latencies_ms"]]
    started = [r for r in results if r["run_id"] is not None]
    try:
        with sqlite3.connect(workdir / "mlflow.db") as conn:
            journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    except sqlite3.Error as exc:
        journal = f"unreadable ({exc})"
    return {
        "mode": mode,
        "store": "sqlite:///<fresh cwd>/mlflow.db",
        "journal_mode": journal,
        "writers": writers,
        "writers_started": len(started),
        "start_errors": [r["start_error"] for r in results if r["start_error"]],
        "start_seconds_max": max((r["start_seconds"] for r in started), default=float("nan")),
        "write_errors": sum(len(r["errors"]) for r in results),
        "error_samples": [e for r in results for e in r["errors"]][:5],
        "retries": sum(r["retries"] for r in results),
        "points_scheduled": scheduled,
        "points_expected": expected,
        "points_stored": stored,
        "points_lost": expected - stored,
        "points_counted_with": counted_with,
        "batches_written": sum(r["ok_batches"] for r in results),
        "latency_ms_p50": percentile(latencies, 50),
        "latency_ms_p99": percentile(latencies, 99),
        "latency_ms_max": max(latencies, default=float("nan")),
        "behind_schedule_s_max": max((r["late_s"] for r in started), default=float("nan")),
        "write_seconds_max": max((r["write_seconds"] for r in started), default=float("nan")),
        "reader_ms_p50": percentile(reads, 50),
        "reader_ms_p99": percentile(reads, 99),
        "reads": len(reads),
        "loadavg_before": load_before,
        "loadavg_after": load_after,
    }


def render(payload: dict) -> str:
    """The markdown summary of a results payload."""
    results = payload["results"]
    rows = [[m, f"{r['writers_started']}/{r['writers']}", r["journal_mode"], r["start_seconds_max"],
             r["write_errors"], r["retries"], r["points_scheduled"], r["points_expected"], r["points_stored"],
             r["points_lost"], r["latency_ms_p50"], r["latency_ms_p99"], r["latency_ms_max"],
             r["behind_schedule_s_max"], r["reader_ms_p50"], r["reader_ms_p99"]]
            for m, r in results.items()]
    table = markdown_table(["mode", "writers started", "journal", "start s (max)", "write errors", "retries",
                            "points scheduled", "points expected", "points stored", "lost", "write p50 ms",
                            "write p99 ms", "write max ms", "max behind schedule s", "UI read p50 ms",
                            "UI read p99 ms"], rows)
    writers, keys, rate = payload["writers"], payload["metrics_per_batch"], payload["rate_batches_per_s"]
    header = (f"{writers} writer processes x {payload['seconds']:.0f} s, one batch of {keys} metrics every "
              f"{1 / rate:.2g} s each ({writers * rate * keys:.0f} points/s in all), into the default SQLite "
              f"store of a fresh working directory; MLflow {payload['mlflow']}, SQLite {payload['sqlite']}, "
              f"{payload['cpu_count']} CPU cores. 'points expected' counts the writes that returned without "
              "error (a writer that failed to start expects nothing); 'lost' is expected minus stored "
              "(get_metric_history). 'start s' is the time from the common start signal to a created run, "
              "first-time creation of the store included.")
    notes = [f"- {m}: {len(r['start_errors'])} writer(s) failed to start, e.g. {r['start_errors'][0][:160]}"
             for m, r in results.items() if r["start_errors"]]
    notes += [f"- {m}: load average {r['loadavg_before'][0]:.1f} before, {r['loadavg_after'][0]:.1f} after "
              "(other jobs shared the machine; latencies include waiting for a core)"
              for m, r in results.items()]
    return "\n".join([header, "", table, "", *notes])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=10.0, help="batches per second per writer")
    parser.add_argument("--keys", type=int, default=10, help="metrics per batch")
    parser.add_argument("--modes", default="fieldkd,plain,plain-preinit")
    args = parser.parse_args()

    import mlflow

    results = {}
    for mode in args.modes.split(","):
        results[mode] = measure(mode, args.writers, args.seconds, args.rate, args.keys)
        print({k: v for k, v in results[mode].items() if k != "error_samples"}, flush=True)

    payload = {"writers": args.writers, "seconds": args.seconds, "rate_batches_per_s": args.rate,
               "metrics_per_batch": args.keys, "mlflow": mlflow.__version__, "sqlite": sqlite3.sqlite_version,
               "python": platform.python_version(), "cpu_count": os.cpu_count(), "results": results}
    write_results("concurrent_writers", payload, render(payload))


if __name__ == "__main__":
    main()
