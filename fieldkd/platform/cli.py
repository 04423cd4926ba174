"""The ``fieldkd`` command.

    fieldkd run method=NAME [hydra overrides]     train a method; the last stdout line is a JSON summary
    fieldkd sweep tune_space=NAME [overrides]      Ray Tune over config keys (resume=SWEEP_RUN_ID continues one)
    fieldkd scenes make NAME out=DIR [format=...]  write a generated scene in a real dataset format
    fieldkd scenes list                            the scenes the generator knows

stdout carries only the summary line: everything else (progress bars, library
chatter) goes to stderr, so ``fieldkd run ... | tail -1`` is always the JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from importlib.metadata import entry_points

from .config import compose_config
from .errors import InputError, PartialFailure
from .summary import finite

EXIT_BAD_INPUT = 2
EXIT_PARTIAL = 3  # a result, with part of the work failed (a sweep's errored trials)
EXIT_INTERRUPTED = 130
METHOD_GROUP = "fieldkd.methods"


def load_method(name: str):
    found = {ep.name: ep for ep in entry_points(group=METHOD_GROUP)}
    if name not in found:
        raise InputError("method", f"unknown method {name!r}; installed: {', '.join(sorted(found)) or 'none'}")
    return found[name].load()


def run_command(overrides: list[str]) -> dict:
    started = time.perf_counter()
    cfg = compose_config(overrides)  # checked before anything heavy is imported or started
    method = load_method(cfg["method"]["name"])
    from .runner import execute

    run_id, metrics = execute(cfg, method.run)
    return {"run_id": run_id, "method": cfg["method"]["name"], "metrics": finite(metrics),
            "seconds": round(time.perf_counter() - started, 3)}


def sweep_command(args: list[str]) -> dict:
    """A Ray Tune sweep; see :mod:`fieldkd.platform.compute.sweep`."""
    from .compute.sweep import sweep_command as run_sweep

    return run_sweep(args)


def scenes_command(args: list[str]) -> dict:
    if args and args[0] == "make" and len(args) >= 2:
        # Arguments are checked before the scene modules (and torch) load.
        name, options = args[1], dict(_key_value(a) for a in args[2:])
        if "out" not in options:
            raise InputError("fieldkd scenes make", "missing out=DIR")
        out = options.pop("out")
        fmt = options.pop("format", "blender")
        ints = {k: _size(k, v) for k, v in options.items()}
        from .scenes import write_scene

        path = write_scene(name, out, fmt, **ints)
        return {"scene": name, "format": fmt, "path": str(path)}
    if not args or args[0] == "list":
        from .scenes.indoor import ROOMS
        from .scenes.specs import SCENES

        return {"scenes": sorted(SCENES), "rooms": sorted(ROOMS)}
    raise InputError("fieldkd scenes", "usage: fieldkd scenes make NAME out=DIR "
                                       "[format=blender|nerfstudio|monosdf] "
                                       "[width=80] [height=80] [n_train=60] [n_val=10] [n_test=20]")


MAX_SCENE_SIZE = 8192  # pixels per side, views per split: far beyond what the generator is for
MIN_SCENE_SIZE = {"n_val": 0, "n_test": 0, "seed": 0}  # others (width, height, n_train, ...): 1


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
        with contextlib.redirect_stdout(sys.stderr):
            summary = COMMANDS[ns.command](ns.args)
    except KeyboardInterrupt as exc:
        if ns.command == "sweep" and str(exc):  # a sweep that stopped early says how to resume it
            print(f"fieldkd: {exc}", file=sys.stderr)
            return EXIT_INTERRUPTED
        raise
    except PartialFailure as exc:
        print(f"fieldkd: error: {exc}", file=sys.stderr)
        stdout.write(json.dumps(exc.summary) + "\n")
        stdout.flush()
        return EXIT_PARTIAL
    except Exception as exc:
        if (bad := input_error_in(exc)) is not None:
            print(f"fieldkd: error: {bad}", file=sys.stderr)
            return EXIT_BAD_INPUT
        if _is_config_error(exc):
            print(f"fieldkd: error: config: {_one_line(exc)}", file=sys.stderr)
            return EXIT_BAD_INPUT
        raise
    stdout.write(json.dumps(summary) + "\n")
    stdout.flush()
    return 0


COMMANDS = {"run": run_command, "sweep": sweep_command, "scenes": scenes_command}


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


def _is_config_error(exc: Exception) -> bool:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return isinstance(exc, (HydraException, OmegaConfBaseException))


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


if __name__ == "__main__":
    sys.exit(main())
