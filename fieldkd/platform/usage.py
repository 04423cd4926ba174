"""``fieldkd --help`` and ``fieldkd run --help``: what can be chosen, read from the registries
(method entry points, config groups, scene readers, the generator's scenes), one line each."""

from __future__ import annotations

import inspect

from .methods_registry import method_entry_points

EXAMPLES = """examples:
  fieldkd run method=baseline field=hash trainer.max_seconds=60
  fieldkd run method=pvd teacher.field=hash student.field=mlp
  fieldkd run scene=blender scene.path=data/lego trainer=gpu device=cuda
  fieldkd sweep tune_space=baseline
  fieldkd scenes make default out=data/default format=nerfstudio width=80 height=80"""


def first_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def yaml_comment(path) -> str:
    """The first comment line of a config file: what the option is."""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def _table(title: str, rows: dict[str, str]) -> str:
    width = max((len(k) for k in rows), default=0)
    return "\n".join([title] + [f"  {k.ljust(width)}  {v}".rstrip() for k, v in sorted(rows.items())])


def methods() -> dict[str, str]:
    found = {}
    for ep in method_entry_points().values():
        try:
            doc = first_line(inspect.getdoc(ep.load()))
        except Exception as exc:  # a broken plug-in still shows up, with why
            doc = f"(cannot load: {type(exc).__name__})"
        found[ep.name] = doc.split(":", 1)[1].strip() if doc.startswith(f"{ep.name}:") else doc
    return found


def group(name: str) -> dict[str, str]:
    from .config import conf_dir

    return {p.stem: yaml_comment(p) for p in sorted((conf_dir() / name).glob("*.yaml"))}


def formats() -> dict[str, str]:
    from .scenes.registry import READERS

    return {name: first_line(inspect.getdoc(inspect.getmodule(read))) for name, read in READERS.items()}


def generated_scenes() -> dict[str, str]:
    from .scenes.indoor import ROOMS
    from .scenes.specs import SCENES

    makers = {**SCENES, **ROOMS}
    return {name: first_line(inspect.getdoc(make)) or "a generated scene" for name, make in makers.items()}


def choices() -> str:
    return "\n\n".join([
        _table("methods (method=NAME):", methods()),
        _table("fields (field=NAME; also teacher.field, student.field):", group("field")),
        _table("scene configs (scene=NAME):", group("scene")),
        _table("scene formats (scene.format=NAME; fieldkd scenes make ... format=NAME):", formats()),
        _table("generated scenes (scene.generate=NAME; fieldkd scenes make NAME):", generated_scenes()),
    ])


def run_help(command: str = "run") -> str:
    what = {"run": "[method=NAME]", "sweep": "tune_space=NAME [resume=SWEEP_RUN_ID] [method=NAME]"}[command]
    return "\n\n".join([
        f"usage: fieldkd {command} {what} [GROUP=OPTION ...] [KEY=VALUE ...]\n\n"
        "Train a method (a sweep: many runs of it); the last stdout line is a JSON summary. Any config\n"
        "key can be set (fieldkd/conf/config.yaml); unknown keys and values of the wrong type are refused.",
        choices(), EXAMPLES])
