"""fieldkd's Hydra configs; the field presets can also be read one by one."""

from __future__ import annotations

from pathlib import Path

import yaml

FIELD_DIR = Path(__file__).parent / "field"


def field_names() -> list[str]:
    return sorted(p.stem for p in FIELD_DIR.glob("*.yaml"))


def field_config(name: str) -> dict:
    """The preset of field ``name`` (``conf/field/NAME.yaml``)."""
    from ..platform.errors import InputError

    path = FIELD_DIR / f"{name}.yaml"
    if not path.is_file():
        raise InputError("field", f"unknown field {name!r}; known: {', '.join(field_names())}")
    return yaml.safe_load(path.read_text())
