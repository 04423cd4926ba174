"""``fieldkd runs compare RUN_ID... [out=DIR]``: runs side by side, as a table and as curves.

Each run given comes with its child runs (a pipeline's stages, a sweep's trials). The table holds
the final metrics and the params that differ between the runs; the figure draws ``val/psnr``
against steps and against wall time since each run started. Both are written to ``out``
(``compare.md``, ``compare.png``); the table is also printed (on stderr: stdout is the summary line).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError
from .tracking import PARENT_TAG
from .tracking.store import client as make_client

METRICS = ("test/psnr", "test/ssim", "test/lpips", "val/psnr", "train/steps", "train/seconds")
CURVE = "val/psnr"
MAX_PARAMS = 8  # differing params shown; more would not fit beside the metrics


@dataclass
class RunRow:
    run_id: str
    name: str
    depth: int  # 0: a run asked for, 1: its child, ...
    status: str
    metrics: dict[str, float]
    params: dict[str, str]
    curve: list[tuple[int, float, float]] = field(default_factory=list)  # (step, seconds since start, value)


def collect(run_ids: list[str], tracking_uri: str | None = None) -> list[RunRow]:
    """The runs and, under each, its children (depth first, oldest first)."""
    mlflow = make_client(tracking_uri)
    rows: list[RunRow] = []

    def add(run, depth: int) -> None:
        history = mlflow.get_metric_history(run.info.run_id, CURVE) if CURVE in run.data.metrics else []
        start = run.info.start_time or 0
        curve = [(m.step, (m.timestamp - start) / 1000.0, m.value) for m in history]
        rows.append(RunRow(run.info.run_id, run.info.run_name or "", depth, run.info.status,
                           {k: v for k, v in run.data.metrics.items() if k in METRICS}, dict(run.data.params),
                           sorted(curve)))
        children = mlflow.search_runs([run.info.experiment_id], f"tags.`{PARENT_TAG}` = '{run.info.run_id}'",
                                      order_by=["attributes.start_time ASC"], max_results=1000)
        for child in children:
            add(child, depth + 1)

    for run_id in run_ids:
        try:
            run = mlflow.get_run(run_id)
        except Exception as exc:
            raise InputError(run_id, f"no such run in {mlflow.tracking_uri}") from exc
        add(run, 0)
    return rows


def differing_params(rows: list[RunRow], limit: int = MAX_PARAMS) -> list[str]:
    """Param keys whose values are not the same in every run (a missing param counts as a value)."""
    keys = sorted({k for r in rows for k in r.params})
    return [k for k in keys if len({r.params.get(k) for r in rows}) > 1][:limit]


def markdown_table(rows: list[RunRow], params: list[str]) -> str:
    metrics = [m for m in METRICS if any(m in r.metrics for r in rows)]
    header = ["run", "name", "status", *metrics, *params]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        name = ("└ " * min(r.depth, 1)) + ("  " * max(r.depth - 1, 0)) + r.name
        cells = [r.run_id[:8], name, r.status, *(_number(r.metrics.get(m)) for m in metrics),
                 *(r.params.get(p, "") for p in params)]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def curves_figure(rows: list[RunRow]):
    """val/psnr against steps (left) and against seconds since the run started (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (by_step, by_time) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for r in rows:
        if not r.curve:
            continue
        steps, seconds, values = zip(*r.curve)
        label = f"{r.name} ({r.run_id[:8]})"
        by_step.plot(steps, values, marker=".", label=label)
        by_time.plot(seconds, values, marker=".", label=label)
    for axes, xlabel in ((by_step, "step"), (by_time, "seconds since the run started")):
        axes.set_xlabel(xlabel)
        axes.set_ylabel(CURVE + " (dB)")
        axes.grid(alpha=0.3)
    if any(r.curve for r in rows):
        by_time.legend(fontsize=7, loc="lower right")
    else:
        by_step.set_title(f"no run logged {CURVE}")
    return figure


def compare(run_ids: list[str], out: str | Path = ".", tracking_uri: str | None = None,
            stem: str = "compare") -> dict:
    """Write ``STEM.md`` and ``STEM.png`` under ``out``, print the table; the summary line's content."""
    if not run_ids:
        raise InputError("fieldkd runs compare", "usage: fieldkd runs compare RUN_ID... [out=DIR]")
    rows = collect(run_ids, tracking_uri)
    table = markdown_table(rows, differing_params(rows))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.md").write_text(table)
    figure = curves_figure(rows)
    figure.savefig(out / f"{stem}.png", dpi=110)
    import matplotlib.pyplot as plt

    plt.close(figure)
    print(table, file=sys.stderr)
    return {"runs": [r.run_id for r in rows], "markdown": str(out / f"{stem}.md"),
            "figure": str(out / f"{stem}.png")}


def runs_command(args: list[str]) -> dict:
    if not args or args[0] != "compare":
        raise InputError("fieldkd runs", "usage: fieldkd runs compare RUN_ID... [out=DIR]")
    ids = [a for a in args[1:] if "=" not in a]
    options = dict(a.split("=", 1) for a in args[1:] if "=" in a)
    unknown = set(options) - {"out"}
    if unknown:
        raise InputError("fieldkd runs compare", f"unknown option {sorted(unknown)[0]}; only out=DIR")
    return compare(ids, options.get("out", "."))
