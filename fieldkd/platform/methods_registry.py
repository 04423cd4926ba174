"""Methods are found by name among the installed entry points (group ``fieldkd.methods``), so the
platform names none of them: a new method is one module plus one line in ``setup.cfg``."""

from __future__ import annotations

from importlib.metadata import entry_points

from .errors import InputError

METHOD_GROUP = "fieldkd.methods"


def method_entry_points() -> dict:
    return {ep.name: ep for ep in entry_points(group=METHOD_GROUP)}


def load_method(name: str):
    """The module of method ``name`` (its ``run(ctx)`` is the recipe)."""
    found = method_entry_points()
    if name not in found:
        raise InputError("method", f"unknown method {name!r}; installed: {', '.join(sorted(found)) or 'none'}")
    return found[name].load()
