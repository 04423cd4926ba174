"""fieldkd --help and fieldkd run --help list what can be chosen, from the registries."""

import subprocess
import sys
from importlib.metadata import entry_points

from fieldkd.conf import field_names
from fieldkd.platform.cli import main
from fieldkd.platform.scenes.indoor import ROOMS
from fieldkd.platform.scenes.registry import FORMATS
from fieldkd.platform.scenes.specs import SCENES


def listed(text: str, names) -> list[str]:
    """The names that have no line of their own (name, then a description) in ``text``."""
    lines = [line.split() for line in text.splitlines() if line.startswith("  ")]
    return [n for n in names if not any(len(words) > 1 and words[0] == n for words in lines)]


def expected() -> list[str]:
    methods = [ep.name for ep in entry_points(group="fieldkd.methods")]
    return [*methods, *field_names(), *FORMATS, *SCENES, *ROOMS, "blender", "nerfstudio", "indoor"]


def test_run_help_lists_methods_fields_scenes_and_formats():
    proc = subprocess.run([sys.executable, "-m", "fieldkd.platform.cli", "run", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: fieldkd run")
    assert listed(proc.stdout, expected()) == []
    assert "examples:" in proc.stdout and "fieldkd run method=pvd" in proc.stdout


def test_top_level_help_lists_them_too(capsys):
    try:
        main(["--help"])
    except SystemExit as exit:
        assert exit.code == 0
    out = capsys.readouterr().out
    assert "{run,sweep,scenes,runs}" in out and listed(out, expected()) == []
    assert "methods (method=NAME):" in out and "examples:" in out
