"""File names that a dataset gives: they must stay inside the dataset folder.

A reader that opens a file a dataset names (a ``file_path`` in a transforms
file, a mask or depth path, the images in a folder next to the cameras file)
passes the name through :func:`inside` first.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError
from .limits import current

HINT = "set scene.allow_outside_paths=true to allow it"


def dataset_root(path) -> Path:
    """The dataset folder a user gave: the folder itself, or the one holding the file they named."""
    root = Path(path)
    root = root.parent if root.is_file() else root
    if not root.is_dir():
        raise InputError(root, "scene directory not found")
    return root


def inside(root: Path, name, source, what: str = "path") -> Path:
    """``root / name``, refused unless it stays inside the dataset folder ``root``.

    ``source`` is the file (or folder) that gives ``name``; errors are
    ``InputError(source, ...)`` naming ``what`` and ``name``. Refused: an
    absolute path, '..' that climbs out of ``root``, and a path whose real
    location (symlinks followed) lies outside ``root``. With
    scene.allow_outside_paths=true all three are allowed; a relative name is
    still taken relative to ``root``.
    """
    root, name = Path(root), Path(name)
    if current().allow_outside_paths:
        return root / name
    if name.is_absolute():
        raise InputError(source, f"{what} {str(name)!r} is an absolute path; dataset files must lie "
                                 f"inside the dataset folder ({HINT})")
    path = root / name
    top = os.path.abspath(root)
    if not _within(os.path.abspath(path), top):
        raise InputError(source, f"{what} {str(name)!r} leads out of the dataset folder with '..' ({HINT})")
    real = os.path.realpath(path)
    if not _within(real, os.path.realpath(top)):
        raise InputError(source, f"{what} {str(name)!r} is a symlink to {real}, outside the dataset folder ({HINT})")
    return path


def _within(path: str, folder: str) -> bool:
    return os.path.commonpath([path, folder]) == folder
