"""``fieldkd run resume=RUN_ID [overrides]``: the config of a run that goes on.

The base is the config the run logged (its ``config.yaml``), so a plain
``resume=RUN_ID`` keeps the run's method, scene, field and budget whatever the
defaults are now. Overrides on the command line apply on top, each checked:
one that would change what the checkpoints hold or what the pipeline is (the
method, field, scene, a method's own settings other than its stages' trainer
budgets, ...) is an error naming the key; budgets, evaluation, compute and
tracking settings may change. The overrides of every resume are kept as tags
``fieldkd.resume.N`` and the config then in force as the run's ``config.yaml``.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable
from pathlib import Path

import yaml

from .errors import InputError

RESUME_TAG = "fieldkd.resume."  # fieldkd.resume.N: the overrides of the N-th resume ("" for none)
CONFIG_ARTIFACT = "config.yaml"
# What a resumed run keeps: changing it would not continue the same run.
STRUCTURAL = ("method", "field", "scene", "run_name", "resume", "tracking.experiment", "render.occupancy",
              "render.occupancy_resolution", "trainer.optimizer")
ROOT_CONFIG = Path(__file__).resolve().parent.parent / "conf" / "config.yaml"
_MISSING = object()


def split_resume(overrides: list[str]) -> tuple[str | None, list[str]]:
    """The run id of ``resume=ID`` (None without one) and the other overrides."""
    found, rest = None, []
    for arg in overrides:
        if arg.startswith("resume="):
            found = arg.split("=", 1)[1] or None
        else:
            rest.append(arg)
    return found, rest


def check_resume(run_id: str) -> None:
    """``resume=`` names a run of the tracking store (a local store that does not exist yet
    holds no run: it is not created just to say so)."""
    from urllib.parse import unquote

    from mlflow.exceptions import MlflowException

    from .tracking.store import SQLITE_PREFIX, tracking_uri

    uri = tracking_uri()
    if uri.startswith(SQLITE_PREFIX) and not Path(unquote(uri[len(SQLITE_PREFIX):].split("?")[0])).is_file():
        raise InputError("resume", f"no run {run_id!r}: the tracking store {uri} does not exist")
    from .tracking import Run

    run = Run(run_id)
    try:
        run.client.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            raise
        raise InputError("resume", f"no run {run_id!r} in the tracking store {run.tracking_uri}") from None


def logged_config(run_id: str, tracking_uri: str | None = None) -> dict:
    """The config a top-level run logged; bad input (one line) when there is none to resume."""
    from .tracking import PARENT_TAG, Run

    if tracking_uri is None:
        check_resume(run_id)  # an unknown run: one line, and no store created to say so
    run = Run(run_id, tracking_uri)
    try:
        stored = run.get()
    except Exception as exc:
        raise InputError("resume", f"no MLflow run {run_id!r} in {run.tracking_uri}") from exc
    tags = stored.data.tags
    if tags.get("fieldkd.stage") == "sweep":
        raise InputError("resume", f"run {run_id} is a sweep: continue it with fieldkd sweep resume={run_id}")
    if tags.get(PARENT_TAG):
        raise InputError("resume", f"run {run_id} is a stage of run {tags[PARENT_TAG]}: resume that one")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = run.client.download_artifacts(run_id, CONFIG_ARTIFACT, tmp)
        except Exception as exc:
            raise InputError("resume", f"run {run_id} has no {CONFIG_ARTIFACT}: not a fieldkd run") from exc
        cfg = yaml.safe_load(Path(path).read_text())
    if not isinstance(cfg, dict):
        raise InputError("resume", f"the {CONFIG_ARTIFACT} of run {run_id} is not a mapping")
    return cfg


def resumed_config(logged: dict, overrides: list[str], compose: Callable[[list[str]], dict],
                   run_id: str) -> dict:
    """``logged`` with ``overrides`` on top, each checked against it; ``compose`` resolves
    overrides into a full config (Hydra), which also gives keys added since their defaults."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    for o in parsed:
        if o.is_delete():
            raise InputError(o.key_or_group, "a resumed run cannot drop a key")
    given = {o.key_or_group for o in parsed}
    # The run's own method and field, so that their keys exist in the fresh composition.
    choices = [f"{g}={logged[g]['name']}" for g in ("method", "field")
               if g not in given and isinstance(logged.get(g), dict) and logged[g].get("name")]
    fresh = compose(choices + list(overrides))
    merged = _overlay(fresh, logged)
    for key in [o.key_or_group for o in parsed]:
        new, old = _get(fresh, key), _get(logged, key)
        if new == old:
            continue
        for path, before, after in _differences(key, old, new):
            if structural(path):
                if structural(key) and _show(old) != _show(new):  # say field=grid, not field.backend
                    path, before, after = key, old, new
                raise InputError(path, f"run {run_id} has {_show(before)}, the command line {_show(after)}: "
                                       f"a resumed run keeps it (start a new run to change it)")
        _set(merged, key, copy.deepcopy(new))
    merged["resume"] = run_id
    return merged


def structural(path: str) -> bool:
    """Whether a resumed run must keep the key ``path`` (dotted) as it was."""
    if any(path == s or path.startswith(s + ".") for s in STRUCTURAL):
        return True
    parts = path.split(".")
    # A method's own section (dac.*, teacher.*, ...): only its stages' trainer budgets may change.
    return parts[0] not in platform_sections() and "trainer" not in parts


def platform_sections() -> set[str]:
    """The top-level keys of the root config and its groups; the others belong to a method."""
    root = yaml.safe_load(ROOT_CONFIG.read_text())
    groups = {next(iter(d)) for d in root.get("defaults", []) if isinstance(d, dict)}
    return (set(root) - {"defaults"}) | groups


def record_resume(run_id: str, overrides: list[str], cfg: dict, tracking_uri: str | None = None) -> None:
    """Keep the overrides of this resume as tag ``fieldkd.resume.N``, and the config now in
    force as ``config.yaml`` (the base of the next resume)."""
    from .tracking import Run

    run = Run(run_id, tracking_uri)
    count = sum(1 for k in run.get().data.tags if k.startswith(RESUME_TAG))
    run.set_tags({f"{RESUME_TAG}{count + 1}": " ".join(overrides)})
    if overrides:
        run.log_text(yaml.safe_dump(cfg, sort_keys=False), CONFIG_ARTIFACT)


def resume_config(run_id: str, overrides: list[str], compose: Callable[[list[str]], dict]) -> dict:
    """The config to resume run ``run_id`` with, checked, with the resume recorded on the run."""
    cfg = resumed_config(logged_config(run_id), overrides, compose, run_id)
    folder = Path(cfg["output_dir"]).resolve() / run_id
    if not folder.is_dir():
        raise InputError("output_dir", f"{folder} not found: resume from the folder the run started in, "
                                       f"or give output_dir=DIR (the folder that holds {run_id})")
    record_resume(run_id, overrides, cfg)
    return cfg


def _overlay(base: dict, top: dict) -> dict:
    out = dict(base)
    for key, value in top.items():
        both = isinstance(value, dict) and isinstance(base.get(key), dict)
        out[key] = _overlay(base[key], value) if both else copy.deepcopy(value)
    return out


def _get(cfg: dict, key: str):
    node = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _set(cfg: dict, key: str, value) -> None:
    *parents, last = key.split(".")
    node = cfg
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def _differences(key: str, old, new):
    """(dotted key, old, new) of every leaf that differs under ``key``."""
    if isinstance(old, dict) and isinstance(new, dict):
        for sub in sorted(set(old) | set(new)):
            a, b = old.get(sub, _MISSING), new.get(sub, _MISSING)
            if a != b:
                yield from _differences(f"{key}.{sub}", a, b)
    else:
        yield key, old, new


def _show(value) -> str:
    if value is _MISSING:
        return "no such key"
    if isinstance(value, dict):
        return f"{value['name']!r}" if "name" in value else "other settings"
    return repr(value)
