"""Ray Tune sweeps: ``fieldkd sweep tune_space=NAME [overrides] [resume=SWEEP_RUN_ID]``.

A sweep is one MLflow parent run (tag ``fieldkd.stage=sweep``) and one child
run per trial (``fieldkd.stage=trial``). A trial is an ordinary run of the
configured method: the base overrides plus ``key=value`` for each sampled key,
executed by :func:`fieldkd.platform.runner.execute` inside the trial's Ray
worker, where its stages run in-process on the trial's CPUs. Every metric a
stage logs that contains ``tune.metric`` (``val/psnr`` at each periodic
evaluation) is also reported to Tune, so ASHA can stop a trial early; the
method's final metrics are reported last.

Files, under ``output_dir/<sweep run id>/``:

- ``tune/``: the Tune experiment (one folder per trial id), restored on resume;
- ``trials/<trial id>.json``: the trial's MLflow run id, its sampled values and,
  once it finished, its final metrics. A trial that was cut off (a killed
  sweep, a crashed worker) finds its run there and continues it, from its
  training checkpoint in ``output_dir/<trial run id>/``; a finished trial that
  Tune starts again only reports what it recorded.

``resume=SWEEP_RUN_ID`` reads the sweep's arguments from the parent run's
``sweep.json`` artifact and restores the Tune experiment: finished trials are
kept, unfinished and errored ones continue.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml
from ray import tune

from ..atomic import clean_stale, write_text
from ..errors import InputError, PartialFailure
from ..owned import require_own_folder
from ..run_info import run_name, trial_name, used_config
from ..stage_request import scene_label
from ..summary import finite, is_finite
from ..tracking import Run, flatten
from .search_space import (
    NO_MAX_T,
    TuneSpace,
    describe,
    example_values,
    hydra_value,
    load_space,
    override_key,
    param_space,
    parse_space,
    plain,
    sweep_settings,
    trial_overrides,
)
from .session import init_ray, pin_threads

SPEC_ARTIFACT = "sweep.json"
RUN_KEY = "fieldkd/run_id"     # in every result a trial reports: the trial's MLflow run
FINAL_KEY = "fieldkd/final"    # 1 in the result that carries the method's final metrics
STOPPED_TAG = "fieldkd.trial.stopped_early"
ORPHAN_TAG = "fieldkd.trial.orphaned"
STATE_SAVE_S = "1"  # how often Tune saves the experiment state (its default waits 10 s or more)
EXIT_INTERRUPTED = 130
USAGE = "usage: fieldkd sweep tune_space=NAME [hydra overrides] [resume=SWEEP_RUN_ID]"


class SweepInterrupted(KeyboardInterrupt):
    """The sweep stopped before its trials ended; the message says how to resume it."""


class TrialStopped(KeyboardInterrupt):
    """Tune stopped this trial (ASHA): raised out of the training loop, so that the
    trial's run is closed as KILLED by :func:`execute`, not as FAILED."""


@dataclass
class SweepSpec:
    """What a sweep was started with: enough to resume it from its run id alone."""

    tune_space: str
    space: dict            # the tune space file as read
    overrides: list[str]   # the Hydra overrides given on the command line
    output_dir: str        # absolute
    workdir: str           # where the sweep was started: relative paths in overrides mean the same in trials


@dataclass
class TrialSetup:
    """What every trial needs besides its sampled values (passed with ``tune.with_parameters``)."""

    sweep_run_id: str
    tracking_uri: str
    overrides: list[str]
    keys: list[str]
    tune_space: str
    metric: str
    cpus_per_trial: float
    records: str
    workdir: str


# -- the command ----------------------------------------------------------------------------

def sweep_command(args: list[str]) -> dict:
    """Run (or resume) a sweep; returns the summary line's content."""
    started = time.perf_counter()
    space_name, resume, overrides = parse_arguments(args)
    with contextlib.ExitStack() as stack:
        if resume:
            from ..runner import check_resume

            check_resume(resume)
            parent, spec = recorded_sweep(resume, space_name, overrides)
            if os.path.isdir(spec.workdir):  # relative paths in the overrides mean what they meant then
                stack.enter_context(_working_directory(spec.workdir))
        else:
            parent = spec = None
        summary, errored = _sweep(parent, spec, space_name, overrides, resume)
    summary["seconds"] = round(time.perf_counter() - started, 3)
    if errored:  # a best trial exists, but a sweep that lost trials must not pass for a clean one
        raise PartialFailure(f"sweep {summary['run_id']}: {errored} trial(s) errored; their runs in MLflow "
                             f"carry the error (continue it with: fieldkd sweep resume={summary['run_id']})",
                             summary)
    return summary


def _sweep(parent: Run | None, spec: SweepSpec | None, space_name: str | None, overrides: list[str],
           resume: str | None) -> tuple[dict, int]:
    """The sweep's summary and how many of its trials errored."""
    from ..config import compose_config

    if resume:
        cfg = compose_config(spec.overrides)
        space = parse_space(spec.space, spec.tune_space, f"{SPEC_ARTIFACT} of sweep {resume}", list(cfg["tune"]))
    else:
        cfg = compose_config(overrides)
        space = load_space(space_name, list(cfg["tune"]))
        spec = SweepSpec(space_name, space.raw, overrides, str(Path(cfg["output_dir"]).resolve()), os.getcwd())
    settings = sweep_settings(cfg["tune"], space, spec.overrides)
    if settings["seed"] is None:
        settings["seed"] = cfg["seed"]
    check_sweep(cfg, space, settings, spec.overrides)
    if resume:
        check_restorable(Path(spec.output_dir) / resume)

    owns_ray = init_ray()
    try:
        if parent is None:
            parent = start_sweep_run(cfg, space, settings, spec)
        else:
            parent = Run.resume(parent.run_id)
        interval = cfg["tracking"]["system_metrics_s"]
        if interval:
            parent.start_system_metrics(float(interval))
        try:
            best = run_tuner(parent, space, settings, spec, resuming=bool(resume))
        except KeyboardInterrupt:
            parent.finish("KILLED")
            raise
        except BaseException:
            parent.finish("FAILED")
            raise
        parent.finish()
    finally:
        if owns_ray:
            import ray

            ray.shutdown()
    metrics, best_config, errored = best
    return {"run_id": parent.run_id, "method": cfg["method"]["name"], "metrics": finite(metrics),
            "best_config": best_config, "seconds": None}, errored


def parse_arguments(args: list[str]) -> tuple[str | None, str | None, list[str]]:
    space_name = resume = None
    overrides = []
    for arg in args:
        key = override_key(arg)
        if key == "tune_space":
            space_name = arg.split("=", 1)[1]
        elif key == "resume":
            resume = arg.split("=", 1)[1] or None
        else:
            overrides.append(arg)
    if not space_name and not resume:
        raise InputError("fieldkd sweep", f"missing tune_space=NAME; {USAGE}")
    return space_name, resume, overrides


def check_sweep(cfg: dict, space: TuneSpace, settings: dict, overrides: list[str]) -> None:
    """Fail in a second, before Ray starts: swept keys that the config lacks, a missing scene,
    a metric that will never be reported."""
    from ..config import compose_config
    from ..runner import check_scene

    try:
        compose_config(trial_overrides(overrides, example_values(space)))
    except InputError as exc:  # the base overrides composed: the space's keys or values do not fit
        raise InputError(space.path, f"the space does not fit the config: {exc}") from None
    except Exception as exc:
        from ..config import is_config_error, one_line

        if is_config_error(exc):
            raise InputError(space.path, f"the space does not fit the config: {one_line(exc)}") from exc
        raise
    check_scene(cfg["scene"])
    eval_every = cfg["trainer"]["eval_every"]
    if settings["metric"].startswith("val/") and not 0 < eval_every < cfg["trainer"]["steps"]:
        raise InputError("tune.metric", f"{settings['metric']} is reported by periodic evaluation, every "
                                        f"trainer.eval_every={eval_every} steps: set it below "
                                        f"trainer.steps={cfg['trainer']['steps']}")
    shadowed = [arg for arg in overrides if override_key(arg) in space.domains]
    if shadowed:
        print(f"fieldkd: the tune space sets {', '.join(override_key(a) for a in shadowed)}; "
              f"ignoring {' '.join(shadowed)}", file=sys.stderr)


def start_sweep_run(cfg: dict, space: TuneSpace, settings: dict, spec: SweepSpec) -> Run:
    logged = used_config({**cfg, "tune": settings}, also=("tune",))
    parent = Run.start(cfg["tracking"]["experiment"], sweep_name(cfg, space), tags={
        "fieldkd.method": cfg["method"]["name"],
        "fieldkd.field": cfg["field"]["name"],
        "fieldkd.scene": scene_label(cfg["scene"]),
        "fieldkd.stage": "sweep",
        "fieldkd.tune_space": space.name,
        "fieldkd.search": settings["search"],
    })
    parent.log_params({**flatten(logged), **flatten({"tune_space": {"name": space.name, **space.raw}})})
    parent.log_text(yaml.safe_dump(logged, sort_keys=False), "config.yaml")
    parent.log_text(yaml.safe_dump(space.raw, sort_keys=False), "tune_space.yaml")
    parent.log_text(json.dumps(asdict(spec), indent=1), SPEC_ARTIFACT)
    return parent


def sweep_name(cfg: dict, space: TuneSpace) -> str:
    return cfg["run_name"] or f"sweep {Path(space.name).stem} {run_name(cfg)}"


def recorded_sweep(run_id: str, space_name: str | None, overrides: list[str]) -> tuple[Run, SweepSpec]:
    """The sweep run ``run_id`` and the arguments it was started with."""
    parent = Run(run_id)
    try:
        stored = parent.get()
    except Exception as exc:
        raise InputError("resume", f"no MLflow run {run_id!r} in {parent.tracking_uri}") from exc
    if stored.data.tags.get("fieldkd.stage") != "sweep":
        raise InputError("resume", f"run {run_id} is not a sweep (fieldkd.stage="
                                   f"{stored.data.tags.get('fieldkd.stage')!r}); resume a run with fieldkd run")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = parent.client.download_artifacts(run_id, SPEC_ARTIFACT, tmp)
        except Exception as exc:
            raise InputError("resume", f"sweep {run_id} has no {SPEC_ARTIFACT} artifact") from exc
        spec = SweepSpec(**json.loads(Path(path).read_text()))
    given = ([f"tune_space={space_name}"] if space_name else []) + overrides
    started_with = [f"tune_space={spec.tune_space}", *spec.overrides]
    if given and given != started_with:
        raise InputError("resume", f"sweep {run_id} was started with {' '.join(started_with)}; "
                                   "resume it with the same arguments or none")
    return parent, spec


# -- Tune --------------------------------------------------------------------------------------

def run_tuner(parent: Run, space: TuneSpace, settings: dict, spec: SweepSpec,
              resuming: bool) -> tuple[dict, dict, int]:
    """Run the trials on Tune (restoring the experiment when resuming); returns the best trial's
    metrics and sampled values, also logged on the parent run, and the number of errored trials."""
    sweep_dir = Path(spec.output_dir) / parent.run_id
    records = sweep_dir / "trials"
    records.mkdir(parents=True, exist_ok=True)
    clean_stale(records)  # records whose write a killed sweep cut short
    setup = TrialSetup(
        sweep_run_id=parent.run_id, tracking_uri=parent.tracking_uri,
        overrides=trial_overrides(spec.overrides, {"output_dir": spec.output_dir}),
        keys=space.keys, tune_space=space.name, metric=settings["metric"],
        cpus_per_trial=float(settings["cpus_per_trial"]), records=str(records), workdir=spec.workdir)
    resources = {"cpu": float(settings["cpus_per_trial"])}
    if settings["gpus_per_trial"]:
        resources["gpu"] = float(settings["gpus_per_trial"])
    trainable = tune.with_resources(tune.with_parameters(run_trial, setup=setup), resources)
    experiment = sweep_dir / "tune"

    # Ctrl-C is a KeyboardInterrupt here, as in `fieldkd run`: Tune's own handler would stop the
    # running trials as if they had ended, and hand back results that look complete.
    with _environment(TUNE_GLOBAL_CHECKPOINT_S=os.environ.get("TUNE_GLOBAL_CHECKPOINT_S", STATE_SAVE_S),
                      TUNE_DISABLE_SIGINT_HANDLER="1"):
        if resuming and tune.Tuner.can_restore(str(experiment)):
            print(f"fieldkd: resuming the Tune experiment in {experiment}", file=sys.stderr)
            tuner = tune.Tuner.restore(str(experiment), trainable, resume_unfinished=True, restart_errored=True,
                                       param_space=param_space(space))
        else:
            tuner = tune.Tuner(trainable, param_space=param_space(space),
                               tune_config=tune_config(settings),
                               run_config=tune.RunConfig(
                                   name=experiment.name, storage_path=str(sweep_dir),
                                   failure_config=tune.FailureConfig(max_failures=int(settings["max_failures"])),
                                   callbacks=[TrialRuns(str(records), parent.tracking_uri)], verbose=1))
        try:
            results = tuner.fit()
        except KeyboardInterrupt as exc:
            raise SweepInterrupted(interrupted(parent)) from exc

    outcomes = [trial_outcome(result, records) for result in results]
    if results.num_terminated + results.num_errors < len(results):
        raise SweepInterrupted(interrupted(parent))
    settle_leftovers(parent, outcomes)
    return (*log_best(parent, outcomes, settings), sum(o.error for o in outcomes))


def check_restorable(sweep_dir: Path) -> None:
    """Tune unpickles what it finds in the experiment folder: someone else's file there could
    run their code, so the folder must be the user's own (see :mod:`fieldkd.platform.owned`)."""
    experiment = sweep_dir / "tune"
    if experiment.exists():
        require_own_folder(sweep_dir, "restore a Tune experiment", recursive=False)
        require_own_folder(experiment, "restore a Tune experiment (it unpickles)")


def interrupted(parent: Run) -> str:
    return f"sweep {parent.run_id} was interrupted; continue it with: fieldkd sweep resume={parent.run_id}"


def tune_config(settings: dict) -> tune.TuneConfig:
    seed, concurrent = settings["seed"], settings["max_concurrent"]
    if settings["search"] == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        search = OptunaSearch(seed=seed)  # Tune limits a searcher's trials with max_concurrent_trials
    else:
        from ray.tune.search import BasicVariantGenerator

        # Grid and random search: the variant generator limits its own trials.
        search = BasicVariantGenerator(random_state=seed, max_concurrent=concurrent or 0)
        concurrent = None
    if settings["scheduler"] == "asha":
        from ray.tune.schedulers import ASHAScheduler

        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=int(settings["max_t"] or NO_MAX_T),
                                  grace_period=int(settings["grace_period"]),
                                  reduction_factor=float(settings["reduction_factor"]))
    else:
        from ray.tune.schedulers import FIFOScheduler

        scheduler = FIFOScheduler()
    # No actor reuse: a trial that reports between stages (a stream's chunks) is still waiting on its
    # next stage when ASHA stops it, so Tune cannot hand its actor on, and the next trial errored.
    return tune.TuneConfig(metric=settings["metric"], mode=settings["mode"], search_alg=search, scheduler=scheduler,
                           num_samples=int(settings["num_samples"]),
                           max_concurrent_trials=concurrent,
                           trial_dirname_creator=trial_dirname, reuse_actors=False)


def trial_dirname(trial) -> str:
    return trial.trial_id


@contextlib.contextmanager
def _working_directory(path: str):
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


@contextlib.contextmanager
def _environment(**values: str):
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# -- one trial -------------------------------------------------------------------------------

def run_trial(config: dict, setup: TrialSetup) -> None:
    """The Tune trainable: one run of the method, a child of the sweep run."""
    from ..config import compose_config
    from ..methods_registry import load_method
    from ..runner import execute
    from ..stages import reporting_to

    os.environ["MLFLOW_TRACKING_URI"] = setup.tracking_uri  # the sweep's store, also for stages
    if os.path.isdir(setup.workdir):
        os.chdir(setup.workdir)  # Tune starts trials in their own folders
    pin_threads(setup.cpus_per_trial)
    trial_id = tune.get_context().get_trial_id()
    values = {key: plain(config[key]) for key in setup.keys}
    record = read_record(setup.records, trial_id)
    if record is not None and record.get("final") is not None:
        report_final(record["final"], record["run_id"], setup.metric)  # finished before the sweep was cut off
        return
    cfg = compose_config(trial_overrides(setup.overrides, values))
    # ASHA ranks trials by their count of reports: these come every trainer.eval_every steps only.
    cfg["trainer"]["eval_every_seconds"] = 0
    if record is None:
        run = start_trial_run(cfg, setup, trial_id, values)
        record = {"trial_id": trial_id, "run_id": run.run_id, "config": values, "final": None}
        write_record(setup.records, record)
    run = Run(record["run_id"])
    last: dict = {}

    def to_tune(metrics: dict, step: int) -> None:
        if setup.metric not in metrics:
            return
        result = {k: float(v) for k, v in metrics.items() if is_finite(v)}
        if setup.metric not in result:
            return
        last[setup.metric] = result[setup.metric]
        try:
            tune.report({**result, "step": int(step), RUN_KEY: run.run_id})
        except SystemExit as exc:  # how Tune ends a trial it stopped, inside report
            raise TrialStopped(f"trial {trial_id} stopped by the scheduler at step {step}") from exc

    try:
        with reporting_to(to_tune):
            _, metrics = execute({**cfg, "resume": run.run_id}, load_method(cfg["method"]["name"]).run,
                                 parent=setup.sweep_run_id)
    except TrialStopped:
        run.set_tags({"fieldkd.stage": "trial", STOPPED_TAG: "true"})
        return
    run.set_tags({"fieldkd.stage": "trial"})  # the method's stage set its own name
    final = {k: float(v) for k, v in metrics.items() if is_finite(v)}
    if setup.metric not in final and setup.metric in last:
        final[setup.metric] = last[setup.metric]  # e.g. val/psnr: its last periodic evaluation
    record["final"] = final
    write_record(setup.records, record)
    if setup.metric not in final:
        run.set_tags({"fieldkd.trial.error": missing_metric(setup.metric)})
    report_final(final, run.run_id, setup.metric)


def start_trial_run(cfg: dict, setup: TrialSetup, trial_id: str, values: dict) -> Run:
    run = Run.start(cfg["tracking"]["experiment"], trial_name(trial_id, values), tags={
        "fieldkd.method": cfg["method"]["name"],
        "fieldkd.field": cfg["field"]["name"],
        "fieldkd.scene": scene_label(cfg["scene"]),
        "fieldkd.stage": "trial",
        "fieldkd.trial": trial_id,
        "fieldkd.tune_space": setup.tune_space,
        "fieldkd.trial.values": describe(values),
    }, parent=setup.sweep_run_id)
    used = used_config(cfg)
    run.log_params(flatten(used))
    run.log_text(yaml.safe_dump(used, sort_keys=False), "config.yaml")
    return run


def missing_metric(metric: str) -> str:
    return (f"the trial finished without logging {metric} (tune.metric), so Tune cannot rank it; for val/* "
            "metrics let trainer.eval_every steps fit in the trial's budget (trainer.steps, trainer.max_seconds)")


def report_final(final: dict, run_id: str, metric: str) -> None:
    """Report the method's final metrics: the trial's last result."""
    if metric not in final:  # also when a retry finds the run finished: fail at once, nothing is rerun
        raise RuntimeError(missing_metric(metric))
    try:
        tune.report({**final, RUN_KEY: run_id, FINAL_KEY: 1})
    except SystemExit:  # stopped on its last result (ASHA's max_t): nothing is left to do
        pass


def read_record(records: str | Path, trial_id: str) -> dict | None:
    path = Path(records) / f"{trial_id}.json"
    return json.loads(path.read_text()) if path.exists() else None


def write_record(records: str | Path, record: dict) -> None:
    path = Path(records) / f"{record['trial_id']}.json"
    write_text(path, json.dumps(record, indent=1))


# -- trial runs' end states, the best trial ----------------------------------------------------

class TrialRuns(tune.Callback):
    """Closes the MLflow run of a trial that Tune ended while the run was still open: stopped
    early (its process may be gone before it could say so) or errored."""

    def __init__(self, records: str, tracking_uri: str):
        self.records = records
        self.tracking_uri = tracking_uri

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._close(trial.trial_id, "KILLED", {STOPPED_TAG: "true"})

    def on_trial_error(self, iteration, trials, trial, **info):
        self._close(trial.trial_id, "FAILED", {})

    def _close(self, trial_id: str, status: str, tags: dict) -> None:
        try:
            record = read_record(self.records, trial_id)
            if record is None or record.get("final") is not None:
                return
            close_if_running(Run(record["run_id"], self.tracking_uri), status, tags)
        except Exception as exc:  # never take the sweep down over bookkeeping
            print(f"fieldkd: could not close the run of trial {trial_id}: {exc}", file=sys.stderr)


def close_if_running(run: Run, status: str, tags: dict) -> bool:
    if run.info.status != "RUNNING":
        return False
    run.set_tags(tags)
    run.finish(status)
    return True


@dataclass
class TrialOutcome:
    trial_id: str
    run_id: str | None
    config: dict
    final: dict | None       # the method's final metrics (with tune.metric): the trial finished
    last: dict               # the last result Tune received
    error: bool


def trial_outcome(result, records: Path) -> TrialOutcome:
    trial_id = Path(result.path).name
    record = read_record(records, trial_id) or {}
    return TrialOutcome(trial_id=trial_id, run_id=record.get("run_id") or (result.metrics or {}).get(RUN_KEY),
                        config=record.get("config") or {}, final=record.get("final"),
                        last=dict(result.metrics or {}), error=result.error is not None)


def settle_leftovers(parent: Run, outcomes: list[TrialOutcome]) -> None:
    """After the last trial: no child run stays RUNNING. A trial that ended unfinished was stopped
    early or errored; a child no trial knows was started by a sweep killed before Tune saved it."""
    known = {o.run_id: o for o in outcomes if o.run_id}
    for child in parent.children():
        outcome = known.get(child.run_id)
        if outcome is None:
            close_if_running(child, "KILLED", {ORPHAN_TAG: "true"})
        elif outcome.final is None:
            close_if_running(child, "FAILED", {}) if outcome.error else \
                close_if_running(child, "KILLED", {STOPPED_TAG: "true"})


def log_best(parent: Run, outcomes: list[TrialOutcome], settings: dict) -> tuple[dict, dict]:
    """Pick the best finished trial by ``tune.metric`` (or, when none finished, the best last
    report) and log it on the sweep run."""
    metric, sign = settings["metric"], (1.0 if settings["mode"] == "max" else -1.0)
    finished = [o for o in outcomes if o.final is not None and is_finite(o.final.get(metric))]
    if finished:
        best = max(finished, key=lambda o: sign * o.final[metric])
        metrics = dict(best.final)
    else:
        reported = [o for o in outcomes if is_finite(o.last.get(metric))]
        if not reported:
            errors = sum(o.error for o in outcomes)
            raise RuntimeError(f"no trial of sweep {parent.run_id} reported {metric} "
                               f"({len(outcomes)} trials, {errors} errored); see the trial runs in MLflow")
        best = max(reported, key=lambda o: sign * o.last[metric])
        metrics = {metric: float(best.last[metric])}
    best_config = plain(best.config)
    counts = {"sweep/trials": len(outcomes), "sweep/finished": len(finished),
              "sweep/errored": sum(o.error for o in outcomes),
              "sweep/stopped_early": sum(o.final is None and not o.error for o in outcomes)}
    parent.log_metrics({**metrics, **counts}, step=0)
    parent.log_params({f"best.{k}": hydra_value(v) for k, v in best_config.items()})
    parent.set_tags({"fieldkd.best_run_id": best.run_id or "", "fieldkd.best_config": describe(best_config)})
    print(f"fieldkd: sweep {parent.run_id}: {counts['sweep/trials']} trials, {counts['sweep/finished']} finished, "
          f"{counts['sweep/stopped_early']} stopped early, {counts['sweep/errored']} errored; best {metric} = "
          f"{metrics[metric]:.4g} with {describe(best_config)} (run {best.run_id})", file=sys.stderr)
    return metrics, best_config
