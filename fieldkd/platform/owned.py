"""Folders that fieldkd unpickles from must be the user's own.

Ray Tune restores a sweep by unpickling the files of its experiment folder. A
file there that someone else could have written could run their code in the
user's process, so before a restore the folder tree must belong to the current
user and be writable by nobody else.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import InputError


def require_own_folder(folder: str | Path, what: str, recursive: bool = True) -> None:
    """Raise :class:`InputError` unless ``folder`` (and, ``recursive``, everything under it) is
    owned by the current user and not group- or world-writable. ``what`` says what it is for."""
    folder = Path(folder)
    uid = os.getuid()
    for path in (folder, *(sorted(folder.rglob("*")) if recursive else ())):
        info = path.lstat()
        if info.st_uid != uid:
            raise InputError(path, f"belongs to uid {info.st_uid}, not to you (uid {uid}); "
                                   f"refusing to {what} from it")
        if not stat.S_ISLNK(info.st_mode) and info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise InputError(path, f"is writable by group or others (mode {stat.S_IMODE(info.st_mode):o}); "
                                   f"refusing to {what} from it (chmod -R go-w {folder} if you trust it)")
