"""Types of config values: a small spec language, and the check of one value against a spec.

A spec is a line of text, e.g. ``int >= 1``, ``float > 0 | null``, ``one of adam, adamw``,
``list of float``, ``map of float >= 0``, ``overrides`` (a mapping of stream names to
``{dotted.key: value}``, each checked as that key). ``one of @module:NAME`` takes the choices
from a fieldkd module (a tuple, a dict's keys, or a function returning them).
Keys without a declared spec take the type of their default value (:func:`infer`).
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass

from .errors import InputError

KINDS = ("int", "float", "bool", "str", "any", "choice", "list", "map", "overrides")
BOUNDS = {">=": lambda v, b: v >= b, ">": lambda v, b: v > b, "<=": lambda v, b: v <= b, "<": lambda v, b: v < b}


@dataclass(frozen=True)
class Spec:
    kind: str
    bounds: tuple = ()  # ((op, number), ...)
    choices: tuple = ()
    item: Spec | None = None  # the elements of a list, the values of a map
    nullable: bool = False

    def describe(self) -> str:
        words = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
                 "any": "any value", "overrides": "a mapping of names to {config.key: value}"}
        if self.kind == "choice":
            text = "one of " + ", ".join(str(c) for c in self.choices)
        elif self.kind in ("list", "map"):
            text = f"a {self.kind}" + (f", each {self.item.describe()}" if self.item else "")
        else:
            text = words[self.kind]
        text += " " + " and ".join(f"{op} {_number(b)}" for op, b in self.bounds) if self.bounds else ""
        return text + (" or null" if self.nullable else "")

    def or_null(self) -> Spec:
        return Spec(self.kind, self.bounds, self.choices, self.item, True)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def parse(text: str) -> Spec:
    """A spec from its text; a malformed spec is a bug of the types file (ValueError)."""
    text = " ".join(str(text).split())
    nullable = text.endswith("| null")
    if nullable:
        text = text[: -len("| null")].strip()
    if text.startswith("one of "):
        return Spec("choice", choices=_choices(text[len("one of "):]), nullable=nullable)
    for kind in ("list", "map"):
        if text == kind:
            return Spec(kind, nullable=nullable)
        if text.startswith(f"{kind} of "):
            return Spec(kind, item=parse(text[len(kind) + 4:]), nullable=nullable)
    kind, _, rest = text.partition(" ")
    if kind not in KINDS:
        raise ValueError(f"unknown type {kind!r} in spec {text!r}")
    bounds = []
    for part in filter(None, (p.strip() for p in rest.split(","))):
        op, _, value = part.partition(" ")
        if op not in BOUNDS:
            raise ValueError(f"unknown bound {part!r} in spec {text!r}")
        bounds.append((op, float(value)))
    return Spec(kind, tuple(bounds), nullable=nullable)


def _choices(text: str) -> tuple:
    if text.startswith("@"):
        module, _, name = text[1:].partition(":")
        if not module.startswith("fieldkd."):
            raise ValueError(f"choices come from fieldkd's own modules, not {module!r}")
        found = getattr(importlib.import_module(module), name)
        return tuple(found() if callable(found) else found)
    return tuple(c.strip() for c in text.split(","))


def infer(default) -> Spec | None:
    """The spec of a key from its default value; None for a null default (type unknown) or a section."""
    if default is None:
        return None
    if isinstance(default, bool):
        return Spec("bool")
    if isinstance(default, int):
        return Spec("int")
    if isinstance(default, float):
        return Spec("float")
    if isinstance(default, str):
        return Spec("str")
    if isinstance(default, list):
        items = {s.kind for s in map(infer, default) if s is not None} if default else set()
        if items <= {"int", "float"} and items:
            return Spec("list", item=Spec("float" if "float" in items else "int"))
        return Spec("list", item=Spec(items.pop()) if len(items) == 1 else None)
    return None  # a section: its keys are checked one by one


def check(value, spec: Spec, key: str):
    """``value`` if it fits ``spec`` (an integral float becomes an int, a number a string
    where a string is wanted), else InputError naming ``key``."""
    if value is None:
        if spec.nullable or spec.kind == "any":
            return None
        raise _bad(key, spec, value)
    kind = spec.kind
    if kind == "any":
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise _bad(key, spec, value)
        return value
    if kind == "str":
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise _bad(key, spec, value)
        return str(value)
    if kind == "choice":
        text = str(value).lower() if isinstance(value, bool) else str(value)  # YAML's true is "true"
        if text not in {str(c) for c in spec.choices}:
            raise _bad(key, spec, value)
        if isinstance(value, bool):
            return value
        return str(value) if isinstance(value, str) or all(isinstance(c, str) for c in spec.choices) else value
    if kind in ("int", "float"):
        return _check_number(value, spec, key)
    if kind == "list":
        if not isinstance(value, list):
            raise _bad(key, spec, value)
        if spec.item is None:
            return value
        try:
            return [check(v, spec.item, key) for v in value]
        except InputError:
            raise _bad(key, spec, value) from None
    if kind in ("map", "overrides"):
        if not isinstance(value, dict):
            raise _bad(key, spec, value)
        if spec.item is None:
            return dict(value)
        return {k: check(v, spec.item, f"{key}.{k}") for k, v in value.items()}
    raise ValueError(f"unknown spec kind {kind!r}")


def _check_number(value, spec: Spec, key: str):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _bad(key, spec, value)
    if spec.kind == "int" and isinstance(value, float):
        if not value.is_integer():
            raise _bad(key, spec, value)
        value = int(value)
    if not all(BOUNDS[op](value, bound) for op, bound in spec.bounds):
        raise _bad(key, spec, value)
    return value


def _bad(key: str, spec: Spec, value) -> InputError:
    return InputError(key, f"must be {spec.describe()}, got {value!r}")
