"""The ``fieldkd`` command.

    fieldkd run method=NAME [hydra overrides]     train a method; the last stdout line is a JSON summary
    fieldkd sweep tune_space=NAME [overrides]      Ray Tune over config keys (resume=SWEEP_RUN_ID continues one)
    fieldkd scenes make NAME out=DIR [format=...]  write a generated scene in a real dataset format
    fieldkd scenes list                            the scenes the generator knows
    fieldkd runs compare RUN_ID... [out=DIR]       runs and their children side by side (compare.md, .png)

stdout carries only the summary line: everything else (progress bars, library
chatter) goes to stderr, so ``fieldkd run ... | tail -1`` is always the JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time

from .compute import interrupts
from .config import compose_config, is_config_error, one_line
from .errors import InputError, PartialFailure, StageError
from .methods_registry import load_method
from .resume import resume_config, split_resume
from .summary import finite

EXIT_BAD_INPUT = 2
EXIT_PARTIAL = 3  # a result, with part of the work failed (a sweep's errored trials)
EXIT_INTERRUPTED = 130  # SIGINT; SIGTERM: 143 (128 + the signal)
EXIT_STAGE_FAILED = 1
def run_command(overrides: list[str]) -> dict:
    started = time.perf_counter()
    resume, rest = split_resume(overrides)  # resume=ID: the run's own config, the overrides on top
    # Checked before anything heavy is imported or started.
    cfg = resume_config(resume, rest, compose_config) if resume else compose_config(overrides)
    method = load_method(cfg["method"]["name"])
    from .runner import execute

    run_id, metrics = execute(cfg, method.run)
    tell_where(run_id)
    return {"run_id": run_id, "method": cfg["method"]["name"], "metrics": finite(metrics),
            "seconds": round(time.perf_counter() - started, 3)}


def tell_where(run_id: str) -> None:
    """Before the summary line: the run id, the MLflow UI command and the run's URL (on stderr)."""
    from .tracking import Run
    from .tracking.where import where_to_look

    run = Run(run_id)
    try:
        experiment_id = run.info.experiment_id
        experiment = run.client.get_experiment(experiment_id).name
    except Exception as exc:  # the run is done and recorded; a failed look-up must not lose its summary
        print(f"fieldkd: run {run_id} (could not look it up in MLflow: {one_line(exc)})", file=sys.stderr)
        return
    for line in where_to_look(run.tracking_uri, experiment, experiment_id, run_id):
        print(line, file=sys.stderr, flush=True)


def sweep_command(args: list[str]) -> dict:
    """A Ray Tune sweep; see :mod:`fieldkd.platform.compute.sweep`."""
    from .compute.sweep import sweep_command as run_sweep

    summary = run_sweep(args)
    tell_where(summary["run_id"])
    return summary


def scenes_command(args: list[str]) -> dict:
    if args and args[0] == "make" and len(args) >= 2:
        # Arguments are checked before the scene modules (and torch) load.
        name, options = args[1], dict(_key_value(a) for a in args[2:])
        if "out" not in options:
            raise InputError("fieldkd scenes make", "missing out=DIR")
        out = options.pop("out")
        fmt = options.pop("format", "blender")
        words = {k: options.pop(k) for k in ("lens", "center_crop") if k in options}
        orbit = {k: _orbit(k, options.pop(k)) for k in ("camera_radius", "elevation_range") if k in options}
        ints = {k: _size(k, v) for k, v in options.items()}
        from .scenes import write_scene

        path = write_scene(name, out, fmt, **words, **orbit, **ints)
        return {"scene": name, "format": fmt, "path": str(path)}
    if not args or args[0] == "list":
        from .scenes.indoor import ROOMS
        from .scenes.specs import SCENES

        return {"scenes": sorted(SCENES), "rooms": sorted(ROOMS)}
    raise InputError("fieldkd scenes", "usage: fieldkd scenes make NAME out=DIR "
                                       "[format=blender|nerfstudio|monosdf|neus] "
                                       "[width=80] [height=80] [n_train=60] [n_val=10] [n_test=20] "
                                       "[lens=opencv|fisheye] [per_frame_intrinsics=1] [center_crop=...] "
                                       "[camera_radius=4] [elevation_range=10,60]")


MAX_SCENE_SIZE = 8192  # pixels per side, views per split: far beyond what the generator is for
# others (width, height, n_train, ...): at least 1
MIN_SCENE_SIZE = {"n_val": 0, "n_test": 0, "seed": 0, "per_frame_intrinsics": 0}


def _orbit(key: str, text: str) -> float | tuple[float, float]:
    """``camera_radius`` (a number) or ``elevation_range`` (MIN,MAX in degrees) of an object scene's
    orbit; the generator checks their ranges."""
    parts = text.split(",")
    try:
        values = [float(v) for v in parts]
    except ValueError:
        values = []
    wanted = 1 if key == "camera_radius" else 2
    if len(values) != wanted:
        raise InputError(key, f"must be {'a number' if wanted == 1 else 'two numbers MIN,MAX'}, got {text!r}")
    return values[0] if wanted == 1 else (values[0], values[1])


def _size(key: str, text: str) -> int | float:
    """An option of ``scenes make``: a positive integer (width, height, n_train, ...), or the
    field of view ``camera_angle_x`` in radians."""
    if key == "camera_angle_x":
        try:
            angle = float(text)
        except ValueError:
            angle = float("nan")
        if not 0 < angle < 3.141592653589793:
            raise InputError(key, f"must be an angle in radians between 0 and pi, got {text!r}")
        return angle
    try:
        value = int(text)
    except ValueError:
        raise InputError(key, f"must be an integer, got {text!r}") from None
    low = MIN_SCENE_SIZE.get(key, 1)
    if not low <= value <= MAX_SCENE_SIZE:
        raise InputError(key, f"must be between {low} and {MAX_SCENE_SIZE}, got {value}")
    return value


def runs_command(args: list[str]) -> dict:
    from .compare import runs_command as compare_runs

    return compare_runs(args)


def _key_value(arg: str) -> tuple[str, str]:
    if "=" not in arg:
        raise InputError(arg, "expected key=value")
    key, value = arg.split("=", 1)
    return key, value


def main(argv: list[str] | None = None) -> int:
    from . import usage

    given = sys.argv[1:] if argv is None else argv
    # The lists of methods, fields and scenes load their registries: only when help is asked for.
    epilog = f"{usage.choices()}\n\n{usage.EXAMPLES}" if given[:1] in (["-h"], ["--help"]) else None
    parser = argparse.ArgumentParser(prog="fieldkd", description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=epilog)
    parser.add_argument("command", choices=list(COMMANDS))
    parser.add_argument("args", nargs=argparse.REMAINDER,
                        help="hydra overrides (run, sweep: also tune_space=NAME, resume=ID) or scene arguments")
    ns = parser.parse_args(argv)
    if ns.command in ("run", "sweep") and {"-h", "--help"} & set(ns.args):
        print(usage.run_help(ns.command))
        return 0

    stdout = sys.stdout
    try:
        # Anything a library prints goes to stderr; stdout is for the summary line.
        with contextlib.redirect_stdout(sys.stderr), \
                (interrupts.handling() if ns.command == "run" else contextlib.nullcontext()):
            summary = COMMANDS[ns.command](ns.args)
    except KeyboardInterrupt as exc:
        if ns.command == "sweep" and str(exc):  # a sweep that stopped early says how to resume it
            print(f"fieldkd: {exc}", file=sys.stderr)
            return EXIT_INTERRUPTED
        _close_progress_bars()
        print(interrupted_line(exc), file=sys.stderr)
        return getattr(exc, "exit_code", EXIT_INTERRUPTED)
    except PartialFailure as exc:
        print(f"fieldkd: error: {exc}", file=sys.stderr)
        stdout.write(json.dumps(exc.summary) + "\n")
        stdout.flush()
        return EXIT_PARTIAL
    except Exception as exc:
        if (bad := input_error_in(exc)) is not None:
            print(f"fieldkd: error: {bad}", file=sys.stderr)
            return EXIT_BAD_INPUT
        if is_config_error(exc):
            print(f"fieldkd: error: config: {one_line(exc)}", file=sys.stderr)
            return EXIT_BAD_INPUT
        if (failed := stage_error_in(exc)) is not None:
            print(f"fieldkd: error: {one_line(failed)}", file=sys.stderr)
            return EXIT_STAGE_FAILED
        raise
    stdout.write(json.dumps(summary) + "\n")
    stdout.flush()
    return 0


COMMANDS = {"run": run_command, "sweep": sweep_command, "scenes": scenes_command, "runs": runs_command}


def input_error_in(exc: BaseException | None) -> InputError | None:
    """The bad-input error behind ``exc``, also when it was raised in a Ray worker
    (Ray wraps it, keeping the original as ``cause``)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        cause = getattr(exc, "cause", None) or exc.__cause__
        if isinstance(exc, InputError) and not isinstance(cause, InputError):
            return exc
        exc = cause
    return None


def interrupted_line(exc: KeyboardInterrupt) -> str:
    """What stderr says last after Ctrl-C or SIGTERM: how to go on."""
    if not isinstance(exc, interrupts.Interrupted):
        return "fieldkd: interrupted"
    said = f"fieldkd: interrupted by {exc}"
    if exc.run_id is None:
        return f"{said} before a run started"
    return (f"{said}: run {exc.run_id} is KILLED, its stages kept their checkpoints; "
            f"continue it with: fieldkd run resume={exc.run_id}")


def _close_progress_bars() -> None:
    """Close the bars still drawn here (Ray draws its workers' bars in the driver), so that
    none is redrawn at exit after the last line."""
    tqdm = getattr(sys.modules.get("tqdm"), "tqdm", None)
    for bar in list(getattr(tqdm, "_instances", ())):
        with contextlib.suppress(Exception):
            bar.close()


def stage_error_in(exc: BaseException | None) -> StageError | None:
    """A stage's own error behind ``exc``, also from a Ray actor or a Ray Train worker."""
    todo, seen = [exc], set()
    while todo:
        exc = todo.pop()
        if exc is None or id(exc) in seen:
            continue
        seen.add(id(exc))
        if isinstance(exc, StageError):
            return exc
        todo += [getattr(exc, "cause", None), exc.__cause__, *getattr(exc, "worker_failures", {}).values()]
    return None


if __name__ == "__main__":
    sys.exit(main())
