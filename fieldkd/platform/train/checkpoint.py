"""Checkpoints: written atomically, read without running code.

A checkpoint holds tensors and plain Python values only (dicts, lists, tuples,
numbers, strings), so ``torch.load(weights_only=True)`` reads it; a file that
holds anything else is refused with a one-line :class:`InputError`, and nothing
in it is executed.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Protocol

import torch

from ..atomic import atomic_open, clean_stale
from ..errors import InputError

LAST = "last.pt"


def save_checkpoint(state: dict, directory: str | Path, name: str = LAST) -> Path:
    """Write to a temporary file in the same directory, then rename over the target."""
    target = Path(directory) / name
    with atomic_open(target) as fh:
        torch.save(state, fh)
    return target


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """The state saved by :func:`save_checkpoint`; loading never runs code from the file."""
    path = Path(path)
    if path.is_dir():
        path = path / LAST
    if not path.is_file():
        raise InputError(path, "checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise InputError(path, "refused: not a checkpoint of tensors and plain values only (written by an "
                               "older fieldkd, or not by fieldkd); nothing in it was run") from exc
    except (RuntimeError, EOFError, ValueError) as exc:
        raise InputError(path, f"not a readable checkpoint ({' '.join(str(exc).split())[:120]})") from exc
    if not isinstance(state, dict):
        raise InputError(path, f"not a fieldkd checkpoint (it holds a {type(state).__name__}, not a dict)")
    return state


def find_checkpoint(directory: str | Path) -> Path | None:
    candidate = Path(directory) / LAST
    return candidate if candidate.exists() else None


class Checkpoints(Protocol):
    """Where the training loop keeps its state: a directory, or Ray Train's reports."""

    def load(self, map_location) -> dict | None: ...

    def save(self, state: dict, step: int) -> None: ...


class DirectoryCheckpoints:
    """``last.pt`` in a directory, which may be shared storage."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def load(self, map_location="cpu") -> dict | None:
        clean_stale(self.directory, recursive=False)  # a killed save's temporary file
        path = find_checkpoint(self.directory)
        return load_checkpoint(path, map_location) if path else None

    def save(self, state: dict, step: int) -> None:
        save_checkpoint(state, self.directory)
