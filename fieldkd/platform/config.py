"""The run config: Hydra composition with command-line overrides, checked against a typed schema.

The schema is derived, not written out: the keys a config may hold and their types are those of
the config composed with the same groups (method, field, scene, trainer) but no value overrides.
``fieldkd/conf/types.yaml`` declares only what a default cannot tell: keys whose default is null,
choices, ranges and open-ended sections. A ``trainer`` section below the root (a stage's trainer
overrides, e.g. ``teacher.trainer``) takes the root trainer's keys, each of which may be null.

Every problem is an :class:`InputError` naming the key: a wrong type or value, an unknown key
(with or without Hydra's ``+``, with the nearest known keys), an unknown group option.
"""

from __future__ import annotations

import difflib
from functools import lru_cache
from pathlib import Path

import yaml
from omegaconf.errors import MissingMandatoryValue

from . import schema
from .errors import InputError
from .schema import Spec

CONF_MODULE = "fieldkd.conf"


def conf_dir() -> Path:
    from .. import conf

    return Path(conf.__file__).parent


def groups() -> dict[str, list[str]]:
    """Config groups (folders of conf/) and their options."""
    return {d.name: sorted(p.stem for p in d.glob("*.yaml")) for d in sorted(conf_dir().iterdir())
            if d.is_dir() and any(d.glob("*.yaml"))}


@lru_cache(maxsize=1)
def declared_types() -> dict[str, Spec]:
    raw = yaml.safe_load((conf_dir() / "types.yaml").read_text()) or {}
    return {str(key): schema.parse(text) for key, text in raw.items()}


def compose_config(overrides: list[str]) -> dict:
    """The resolved config (a plain dict) of the command-line overrides, checked."""
    choices, values = split_overrides(overrides)
    known = Schema(_compose(choices, resolve=False), declared_types())
    for key, line in values:
        known.locate(key)
    try:
        cfg = _compose(choices + ["++" + line.lstrip("+") for _, line in values], resolve=True)
    except MissingMandatoryValue as exc:
        raise InputError(exc.full_key, f"must be set: add {exc.full_key}=VALUE") from None
    return known.check(cfg)


def _compose(overrides: list[str], resolve: bool) -> dict:
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    GlobalHydra.instance().clear()
    with initialize_config_module(config_module=CONF_MODULE, version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=resolve, throw_on_missing=resolve)


def split_overrides(overrides: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Group choices (``field=mlp``, checked here) and value overrides as (key, text)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    options = groups()
    choices, values = [], []
    for line in overrides:
        try:
            parsed = OverridesParser.create().parse_overrides([line])[0]
        except HydraException as exc:
            raise InputError(line, f"not a valid override: {' '.join(str(exc).split())}") from None
        key = parsed.key_or_group
        if parsed.is_delete():
            raise InputError(key, "deleting a config key (~KEY) is not supported; set it instead")
        if key in options and parsed.package is None:
            value = parsed.value()
            if not isinstance(value, str) or value not in options[key]:
                raise InputError(key, f"unknown {key} {value!r}{_hint(str(value), options[key])}; "
                                      f"one of {', '.join(options[key])}")
            choices.append(line)
        else:
            values.append((key, line))
    return choices, values


def _hint(word: str, candidates) -> str:
    close = nearest(word, list(candidates))
    return f" (did you mean {' or '.join(close)}?)" if close else ""


def nearest(word: str, candidates: list[str], cutoff: float = 0.7) -> list[str]:
    """The closest candidates: a key the word begins, else the best matches (difflib's ratio)."""
    head, _, last = word.rpartition(".")
    begun = [c for c in candidates if c.rpartition(".")[0] == head and c.rpartition(".")[2].startswith(last)]
    if begun:
        return begun[:2]
    scored = sorted(((difflib.SequenceMatcher(None, word, c).ratio(), c) for c in candidates), reverse=True)
    return [c for ratio, c in scored[:2] if ratio >= max(cutoff, scored[0][0] - 0.03)]


class Schema:
    """What a config may hold: the keys of ``reference`` (a composed default config) with their
    types, and the ``declared`` specs by dotted key."""

    def __init__(self, reference: dict, declared: dict[str, Spec]):
        self.reference, self.declared = reference, declared

    def locate(self, key: str) -> Spec | dict | None:
        """The spec of a dotted key (the default's keys for a section; None for an undeclared
        null default); InputError when there is no such key."""
        node, path, nullable = self.reference, (), False
        for part in key.split("."):
            spec = self.declared.get(".".join(path)) if path else None
            if spec is not None and spec.kind in ("map", "overrides", "any"):  # an open section
                item = spec.item or Spec("any")
                return item.or_null() if nullable else item
            if not isinstance(node, dict) or part not in node:
                raise self.unknown(key)
            node, path = node[part], path + (part,)
            if part == "trainer" and len(path) > 1:  # a stage's trainer overrides
                node, path, nullable = self.reference["trainer"], ("trainer",), True
        found = self.declared.get(".".join(path))
        if found is None and isinstance(node, dict):
            return node
        found = found or schema.infer(node)
        if found is None:
            return None
        return found.or_null() if nullable else found

    def unknown(self, key: str, where: str | None = None) -> InputError:
        hint = _hint(key, self.keys())
        section = key.rpartition(".")[0]
        if not hint and section:
            with_section = [k.rpartition(".")[2] for k in self.keys() if k.rpartition(".")[0] == section]
            hint = f"; {section} has {', '.join(with_section)}" if with_section else ""
        return InputError(where or key, f"no such config key{f' {key}' if where else ''}{hint}")

    def keys(self) -> list[str]:
        """Every dotted key, sections included (stage trainer sections with the root trainer's keys)."""
        found = []

        def walk(node: dict, prefix: str):
            for k, v in node.items():
                found.append(prefix + k)
                if k == "trainer" and prefix:
                    v = self.reference["trainer"]
                if isinstance(v, dict) and self.declared.get(prefix + k) is None:
                    walk(v, prefix + k + ".")

        walk(self.reference, "")
        return found

    def check(self, cfg: dict) -> dict:
        """``cfg`` with every value checked (and integral floats of int keys made ints)."""
        return {k: self.value(v, k) for k, v in cfg.items()}

    def value(self, value, key: str):
        spec = self.locate(key)
        if isinstance(spec, dict):  # a section of fixed keys (a stage's trainer section may be null)
            if value is None and key.endswith(".trainer"):
                return None
            if not isinstance(value, dict):
                raise InputError(key, f"must be a section with keys {', '.join(spec)}, got {value!r}")
            return {k: self.value(v, f"{key}.{k}") for k, v in value.items()}
        if spec is None:  # a null default without a declared type (see conf/types.yaml)
            return value
        checked = schema.check(value, spec, key)
        if spec.kind == "overrides" and checked is not None:
            checked = {name: self.overrides(sets, f"{key}.{name}") for name, sets in checked.items()}
        return checked

    def overrides(self, sets, where: str) -> dict:
        """A stream's ``{dotted.key: value}``: each key must exist and its value fit."""
        if not isinstance(sets, dict):
            raise InputError(where, f"must be a mapping of config keys to values, got {sets!r}")
        out = {}
        for dotted, value in sets.items():
            try:
                self.locate(str(dotted))
            except InputError:
                raise self.unknown(str(dotted), where) from None
            try:
                out[dotted] = self.value(value, str(dotted))
            except InputError as exc:
                raise InputError(where, f"{exc.where}: {exc.problem}") from None
        return out


def is_config_error(exc: Exception) -> bool:
    """An error of Hydra or OmegaConf composing the config (a bad override, a missing group)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return isinstance(exc, (HydraException, OmegaConfBaseException))


def one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
