"""Run a method under a top-level MLflow run: config, tags, params, status."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import yaml

from .compute.session import init_ray
from .errors import InputError
from .stages import RunContext, load_scene_from_config, scene_label
from .tracking import Run, flatten


def execute(cfg: dict, method: Callable[[RunContext], dict], parent: str | None = None) -> tuple[str, dict]:
    """Start (or, with ``resume=RUN_ID``, reopen) the top-level run and call the method.

    The method runs its stages on Ray: a local instance started here (and shut
    down at the end), or the cluster given by RAY_ADDRESS. Returns the run id
    and the method's final metrics, which are also logged on the top-level
    run. With ``parent`` (a run id) the run is its child, as a sweep trial is.
    A failing method marks the run FAILED and re-raises.
    """
    # Bad input fails in seconds, before Ray starts and before any run is created.
    check_scene(cfg["scene"], metadata=parent is None)  # a sweep checked its scene before its trials
    if cfg.get("resume"):
        check_resume(cfg["resume"])
    compute = cfg["compute"]
    dashboard = compute["dashboard"] if compute["dashboard"] is not None else int(compute["workers"]) > 1
    owns_ray = init_ray(dashboard=bool(dashboard))
    try:
        return _execute(cfg, method, parent)
    finally:
        if owns_ray:
            import ray

            ray.shutdown()


def check_scene_path(scene_cfg: dict) -> None:
    path = scene_cfg.get("path")
    if path and not Path(path).is_dir():
        raise InputError(path, "scene directory not found")


def check_scene(scene_cfg: dict, metadata: bool = True) -> None:
    """A user's scene folder exists and, with ``metadata``, reads: every file the readers open
    parses and agrees (sizes, matrices, intrinsics). The bundled generated scenes are ours."""
    check_scene_path(scene_cfg)
    if metadata and scene_cfg.get("path"):
        load_scene_from_config(scene_cfg)


def check_resume(run_id: str) -> None:
    """``resume=`` names a run of the tracking store (a local store that does not exist yet
    holds no run: it is not created just to say so)."""
    from urllib.parse import unquote

    from mlflow.exceptions import MlflowException

    from .tracking.store import SQLITE_PREFIX, tracking_uri

    uri = tracking_uri()
    if uri.startswith(SQLITE_PREFIX) and not Path(unquote(uri[len(SQLITE_PREFIX):].split("?")[0])).is_file():
        raise InputError("resume", f"no run {run_id!r}: the tracking store {uri} does not exist")
    run = Run(run_id)
    try:
        run.client.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            raise
        raise InputError("resume", f"no run {run_id!r} in the tracking store {run.tracking_uri}") from None


def _execute(cfg: dict, method: Callable[[RunContext], dict], parent: str | None) -> tuple[str, dict]:
    # The driver only orchestrates: a CPU head may run a pipeline whose stages train on GPU workers.
    device = torch.device("cpu")
    name = cfg["run_name"] or cfg["method"]["name"]
    if cfg.get("resume"):
        run = Run.resume(cfg["resume"])
    else:
        run = Run.start(cfg["tracking"]["experiment"], name, tags={
            "fieldkd.method": cfg["method"]["name"],
            "fieldkd.field": cfg["field"]["name"],
            "fieldkd.scene": scene_label(cfg["scene"]),
        }, parent=parent)
        run.log_params(flatten(cfg))
        run.log_text(yaml.safe_dump(cfg, sort_keys=False), "config.yaml")
    if cfg["tracking"]["system_metrics_s"]:
        run.start_system_metrics(float(cfg["tracking"]["system_metrics_s"]))
    output_dir = Path(cfg["output_dir"]).resolve() / run.run_id
    output_dir.mkdir(parents=True, exist_ok=True)
    ctx = RunContext(cfg=cfg, run=run, device=device, output_dir=output_dir)
    try:
        metrics = method(ctx)
    except BaseException as exc:
        run.finish("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    # Multi-stage methods report their stages' metrics on the top-level run too.
    logged = run.get().data.metrics
    run.log_metrics({k: v for k, v in metrics.items() if k not in logged}, step=0)
    run.finish()
    return run.run_id, metrics
