"""Tune search spaces: the YAML files of ``fieldkd/tune_spaces/``.

A tune space file names the config keys a sweep varies, the domain of each,
and (optionally) sweep settings; ``fieldkd/tune_spaces/README.md`` documents
the schema. This module reads and checks such a file, merges its settings with
the config's ``tune:`` section and the command line, and turns its domains
into Ray Tune's. Nothing here starts Ray.

Settings come from three places, the later winning:

1. ``tune:`` in ``fieldkd/conf/config.yaml`` (the defaults);
2. the tune space file's top-level keys other than ``space``;
3. ``tune.KEY=VALUE`` overrides on the command line.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import yaml

from ..errors import InputError

SEARCHES = ("grid", "random", "optuna")
SCHEDULERS = ("asha", "fifo")
MODES = ("max", "min")
RANDOM_NUM_SAMPLES = 8  # tune.num_samples=null with search random or optuna
NO_MAX_T = 2 ** 20  # ASHA's max_t when tune.max_t is null: trials end at their own budget

# domain name -> (number of arguments, None for a list of values; what the arguments mean)
DOMAINS: dict[str, tuple[int | None, str]] = {
    "grid": (None, "every value is tried (combined with the other grid keys)"),
    "choice": (None, "one of the values, drawn per trial"),
    "uniform": (2, "[low, high]: a float, uniform"),
    "quniform": (3, "[low, high, q]: a float, uniform, rounded to a multiple of q"),
    "loguniform": (2, "[low, high]: a float, uniform in log space (low > 0)"),
    "randint": (2, "[low, high]: an integer, low <= x < high"),
    "lograndint": (2, "[low, high]: an integer, uniform in log space, low <= x < high (low > 0)"),
}


@dataclass
class TuneSpace:
    name: str            # the name given on the command line (a file name under tune_spaces/, or a path)
    path: str            # where it was read from, for messages
    domains: dict[str, tuple[str, list]]  # config key -> (domain, arguments)
    settings: dict       # the file's tune settings (search, num_samples, metric, ...)
    raw: dict            # the file as read: logged on the sweep's run

    @property
    def keys(self) -> list[str]:
        return list(self.domains)


def builtin_space_dir() -> Path:
    return Path(str(files("fieldkd") / "tune_spaces"))


def builtin_spaces() -> list[str]:
    return sorted(p.stem for p in builtin_space_dir().glob("*.yaml"))


def find_space(name: str) -> Path:
    """A tune space by name (``fieldkd/tune_spaces/NAME.yaml``) or by path to a YAML file."""
    if name.endswith((".yaml", ".yml")) or "/" in name:
        path = Path(name)
        if not path.is_file():
            raise InputError(name, "tune space file not found")
        return path
    path = builtin_space_dir() / f"{name}.yaml"
    if not path.is_file():
        raise InputError("tune_space", f"unknown tune space {name!r}; shipped: {', '.join(builtin_spaces()) or 'none'}"
                                       " (or give a path to a YAML file)")
    return path


def load_space(name: str, tune_keys: list[str]) -> TuneSpace:
    """Read and check a tune space file. ``tune_keys`` are the keys of the config's ``tune:`` section,
    the settings a file may set."""
    path = find_space(name)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InputError(str(path), f"not valid YAML: {' '.join(str(exc).split())}") from exc
    return parse_space(raw, name, str(path), tune_keys)


def parse_space(raw, name: str, where: str, tune_keys: list[str]) -> TuneSpace:
    if not isinstance(raw, dict):
        raise InputError(where, "a tune space is a mapping with a 'space:' section")
    unknown = sorted(set(raw) - {"space", *tune_keys})
    if unknown:
        raise InputError(where, f"unknown key(s) {', '.join(unknown)}; allowed: space, {', '.join(tune_keys)}")
    space = raw.get("space")
    if not isinstance(space, dict) or not space:
        raise InputError(where, "'space:' must map config keys to domains, e.g. trainer.lr: {loguniform: [1e-3, 1e-1]}")
    domains = {}
    for key, spec in space.items():
        domains[str(key)] = parse_domain(spec, f"{where}: space.{key}")
    settings = {k: v for k, v in raw.items() if k != "space"}
    return TuneSpace(name=name, path=where, domains=domains, settings=settings, raw=raw)


def parse_domain(spec, where: str) -> tuple[str, list]:
    if not isinstance(spec, dict) or len(spec) != 1:
        raise InputError(where, f"a domain is a one-key mapping: one of {', '.join(DOMAINS)}, e.g. {{grid: [1, 2]}}")
    (kind, args), = spec.items()
    if kind not in DOMAINS:
        raise InputError(where, f"unknown domain {kind!r}; known: {', '.join(DOMAINS)}")
    arity, meaning = DOMAINS[kind]
    if not isinstance(args, list) or not args:
        raise InputError(where, f"{kind} takes a non-empty list: {meaning}")
    if arity is None:
        return kind, args
    if len(args) != arity or not all(_is_number(a) for a in args):
        raise InputError(where, f"{kind} takes {arity} numbers {meaning}")
    low, high = args[0], args[1]
    if not low < high:
        raise InputError(where, f"{kind} needs low < high, got {args}")
    if kind in ("randint", "lograndint") and not all(float(a).is_integer() for a in args):
        raise InputError(where, f"{kind} takes integers, got {args}")
    if kind in ("loguniform", "lograndint") and low <= 0:
        raise InputError(where, f"{kind} needs low > 0, got {args}")
    if kind == "quniform" and args[2] <= 0:
        raise InputError(where, f"quniform needs q > 0, got {args}")
    return kind, args


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


# -- settings -----------------------------------------------------------------------------------

def override_key(arg: str) -> str | None:
    """The config key a Hydra override sets (``+a.b=1`` -> ``a.b``), or None for other arguments."""
    if "=" not in arg:
        return None
    return arg.split("=", 1)[0].lstrip("+~")


def sweep_settings(cfg_tune: dict, space: TuneSpace, overrides: list[str]) -> dict:
    """The sweep's settings: config defaults, then the tune space file, then ``tune.*`` overrides."""
    settings = dict(cfg_tune)
    settings.update(space.settings)
    for arg in overrides:
        key = override_key(arg)
        if key and key.startswith("tune.") and key[len("tune."):] in cfg_tune:
            name = key[len("tune."):]
            settings[name] = cfg_tune[name]
    return check_settings(settings, space)


def check_settings(settings: dict, space: TuneSpace) -> dict:
    where = f"tune settings (config tune:, {space.path}, tune.* overrides)"

    def positive_int(name: str, allow_none: bool = True) -> None:
        value = settings.get(name)
        if value is None and allow_none:
            return
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            allowed = "a positive integer or null" if allow_none else "a positive integer"
            raise InputError(where, f"{name} must be {allowed}, got {value!r}")

    if settings["search"] not in SEARCHES:
        raise InputError(where, f"search must be one of {', '.join(SEARCHES)}, got {settings['search']!r}")
    if settings["scheduler"] not in SCHEDULERS:
        raise InputError(where, f"scheduler must be one of {', '.join(SCHEDULERS)}, got {settings['scheduler']!r}")
    if settings["mode"] not in MODES:
        raise InputError(where, f"mode must be max or min, got {settings['mode']!r}")
    if not isinstance(settings["metric"], str) or not settings["metric"]:
        raise InputError(where, f"metric must be a metric name such as val/psnr, got {settings['metric']!r}")
    for name in ("num_samples", "max_concurrent", "max_t"):
        positive_int(name)
    positive_int("grace_period", allow_none=False)
    if not _is_number(settings["reduction_factor"]) or settings["reduction_factor"] <= 1:
        raise InputError(where, f"reduction_factor must be a number > 1, got {settings['reduction_factor']!r}")
    if not _is_number(settings["cpus_per_trial"]) or settings["cpus_per_trial"] <= 0:
        raise InputError(where, f"cpus_per_trial must be > 0, got {settings['cpus_per_trial']!r}")
    if not _is_number(settings["gpus_per_trial"]) or settings["gpus_per_trial"] < 0:
        raise InputError(where, f"gpus_per_trial must be >= 0, got {settings['gpus_per_trial']!r}")
    if not isinstance(settings["max_failures"], int) or settings["max_failures"] < 0:
        raise InputError(where, f"max_failures must be an integer >= 0, got {settings['max_failures']!r}")

    kinds = {kind for kind, _ in space.domains.values()}
    search = settings["search"]
    if search == "grid" and kinds != {"grid"}:
        raise InputError(space.path, "search: grid takes grid domains only; use search: random to mix grid "
                                     "with sampled domains")
    if search == "optuna" and "grid" in kinds:
        raise InputError(space.path, "search: optuna does not take grid domains; use choice")
    if settings["num_samples"] is None:
        settings["num_samples"] = 1 if search == "grid" else RANDOM_NUM_SAMPLES
    return settings


# -- Ray Tune domains and Hydra overrides ------------------------------------------------------

def param_space(space: TuneSpace) -> dict:
    """Ray Tune's ``param_space``: one entry per config key."""
    from ray import tune

    makers = {
        "grid": tune.grid_search,
        "choice": tune.choice,
        "uniform": lambda a: tune.uniform(a[0], a[1]),
        "quniform": lambda a: tune.quniform(a[0], a[1], a[2]),
        "loguniform": lambda a: tune.loguniform(a[0], a[1]),
        "randint": lambda a: tune.randint(int(a[0]), int(a[1])),
        "lograndint": lambda a: tune.lograndint(int(a[0]), int(a[1])),
    }
    return {key: makers[kind](list(args)) for key, (kind, args) in space.domains.items()}


def example_values(space: TuneSpace) -> dict:
    """One value from each domain, to check before any trial runs that the keys exist and take such values."""
    examples = {}
    for key, (kind, args) in space.domains.items():
        examples[key] = int(args[0]) if kind in ("randint", "lograndint") else args[0]
    return examples


def plain(value):
    """A sampled value as a plain Python value (Ray and Optuna may hand out numpy scalars)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return value


_BARE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
_RESERVED = {"true", "false", "null", "none", "inf", "nan"}


def hydra_value(value) -> str:
    """A Python value written in Hydra's override grammar."""
    value = plain(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, list):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    text = str(value)
    if _BARE.match(text) and text.lower() not in _RESERVED:
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def trial_overrides(base: list[str], values: dict) -> list[str]:
    """The base overrides with the swept keys set to ``values`` (a swept key's base value is dropped)."""
    swept = set(values)
    kept = [arg for arg in base if override_key(arg) not in swept]
    return kept + [f"{key}={hydra_value(value)}" for key, value in values.items()]


def describe(values: dict) -> str:
    return json.dumps(plain(values), sort_keys=True)
