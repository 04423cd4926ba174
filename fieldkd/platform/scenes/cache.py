"""On-demand cache of the bundled procedural scenes.

Location: ``$FIELDKD_CACHE/scenes/<name>-<fmt>-v<version>`` or, without the
variable, ``~/.cache/fieldkd/scenes/<name>-<fmt>-v<version>``. A scene is
generated into a temporary sibling directory and renamed into place, so an
interrupted run never leaves a half-written scene; a lock file serialises
concurrent workers so the scene is generated once.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

from .generator import GENERATOR_VERSION, write_scene


def cache_root() -> Path:
    base = os.environ.get("FIELDKD_CACHE")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "fieldkd") / "scenes"


def default_scene_dir(name: str = "default", fmt: str = "blender", progress: bool = True) -> Path:
    """Directory of the procedural scene ``name`` in format ``fmt``, generated on first use."""
    return build_once(cache_root() / f"{name}-{fmt}-v{GENERATOR_VERSION}",
                      lambda tmp: write_scene(name, tmp, fmt=fmt, progress=progress))


def build_once(final: Path, build: Callable[[Path], object]) -> Path:
    """``final``, made on first use by ``build(tmp)`` into an empty temporary sibling that is then
    renamed into place (under a lock, so concurrent workers build it once)."""
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / f".{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if final.is_dir():  # another worker finished while we waited
            return final
        # We hold the lock, so leftovers of interrupted runs are nobody's work in progress.
        for stale in final.parent.glob(f".{final.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        # Not mkdtemp, whose 0700 would hide the scene from the rest of a shared cache's group.
        tmp = final.parent / f".{final.name}.tmp-{secrets.token_hex(4)}"
        tmp.mkdir(mode=0o777)  # less the umask, as any folder
        try:
            build(tmp)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final
