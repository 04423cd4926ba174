"""Run a method under a top-level MLflow run: config, tags, params, status."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from .atomic import clean_stale
from .compute import interrupts
from .compute.session import init_ray
from .errors import InputError
from .resume import check_resume
from .run_info import run_name, used_config
from .stage_request import scene_label
from .stages import RunContext, load_scene_from_config
from .tracking import Run, flatten
from .train.board import watching


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
        with watching(enabled=bool(cfg["trainer"].get("progress", True))), \
                interrupts.handling():  # again after ray.init, which installs a SIGTERM handler of its own
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
    if metadata and scene_cfg.get("path") and scene_cfg.get("format"):  # no format: a dataset of scans
        load_scene_from_config(scene_cfg)  # (DTU), which its data module reads when a stage builds


def _execute(cfg: dict, method: Callable[[RunContext], dict], parent: str | None) -> tuple[str, dict]:
    # The driver only orchestrates: a CPU head may run a pipeline whose stages train on GPU workers.
    device = torch.device("cpu")
    if cfg.get("resume"):
        run = Run.resume(cfg["resume"])
    else:
        run = Run.start(cfg["tracking"]["experiment"], run_name(cfg, field_label(method, cfg)), tags={
            "fieldkd.method": cfg["method"]["name"],
            "fieldkd.field": cfg["field"]["name"],
            "fieldkd.scene": scene_label(cfg["scene"]),
        }, parent=parent)
        used = used_config(cfg)
        run.log_params(flatten(used))
        run.log_text(yaml.safe_dump(used, sort_keys=False), "config.yaml")
    if cfg["tracking"]["system_metrics_s"]:
        run.start_system_metrics(float(cfg["tracking"]["system_metrics_s"]))
    output_dir = Path(cfg["output_dir"]).resolve() / run.run_id
    output_dir.mkdir(parents=True, exist_ok=True)
    clean_stale(output_dir)  # temporary files of writes that a killed earlier attempt left
    ctx = RunContext(cfg=cfg, run=run, device=device, output_dir=output_dir)
    try:
        metrics = method(ctx)
    except BaseException as exc:
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        close_children(run, status)
        run.finish(status)
        if isinstance(exc, interrupts.Interrupted):
            exc.run_id = run.run_id  # the CLI says how to resume it
        raise
    # Multi-stage methods report their stages' metrics on the top-level run too, at its last
    # step, so that they share the x-axis of the training curves in the UI.
    logged = run.get().data.metrics
    run.log_metrics({k: v for k, v in metrics.items() if k not in logged}, step=run.last_step())
    run.finish()
    return run.run_id, metrics


def close_children(run: Run, status: str) -> None:
    """Close the child runs that are still RUNNING (stages the interrupt or failure cut short)."""
    for child in run.children():
        if child.info.status == "RUNNING":
            child.finish(status)


def field_label(method: Callable, cfg: dict) -> str | None:
    """How the method names the field(s) it trains in a run name (``hash→mlp``), if it says."""
    label = getattr(inspect.getmodule(method), "field_label", None)
    return label(cfg) if callable(label) else None
