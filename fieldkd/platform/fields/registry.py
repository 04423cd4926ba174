"""Name -> field class. Adding a field is one module in ``models/`` with a
``@register_field("name")`` class, plus its import in ``models/__init__.py``."""

from __future__ import annotations

import inspect
from typing import Callable

from ..errors import InputError
from .radiance import RadianceField

FIELDS: dict[str, Callable[..., RadianceField]] = {}


def register_field(name: str):
    def decorate(cls):
        if name in FIELDS:
            raise ValueError(f"field {name!r} is registered twice")
        FIELDS[name] = cls
        cls.field_name = name
        return cls

    return decorate


def config_keys(builder) -> set[str]:
    """Keyword arguments a field class accepts, following ``**kwargs`` up the
    chain of base-class constructors."""
    keys: set[str] = set()
    classes = builder.__mro__ if inspect.isclass(builder) else ()
    funcs = [c.__dict__["__init__"] for c in classes if "__init__" in c.__dict__] or [builder]
    for fn in funcs:
        params = inspect.signature(fn).parameters.values()
        keys |= {p.name for p in params
                 if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in ("self", "aabb")}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return keys


def build_field(name: str, aabb, /, **cfg) -> RadianceField:
    """Build the field registered as ``name`` for scene box ``aabb`` (2, 3).

    ``cfg`` holds the field's keyword arguments (a Hydra ``field=<name>``
    group passes its keys straight through; a ``name`` key equal to the field
    name is ignored). The result remembers ``field_name`` and ``config`` so
    ``build_field(f.field_name, f.aabb, **f.config)`` rebuilds it.
    """
    if name not in FIELDS:
        raise InputError(f"field={name}", f"unknown field; choose one of {sorted(FIELDS)}")
    cfg = dict(cfg)
    if cfg.pop("name", name) != name:
        raise InputError(f"field={name}", "config key 'name' disagrees with the field name")
    builder = FIELDS[name]
    unknown = set(cfg) - config_keys(builder)
    if unknown:
        raise InputError(
            f"field={name}",
            f"unknown config key(s) {sorted(unknown)}; accepted: {sorted(config_keys(builder))}",
        )
    field = builder(aabb, **cfg)
    field.config = cfg
    return field
