"""Atomic checkpoints: a crash mid-write never leaves a corrupt file behind."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Protocol

import torch

LAST = "last.pt"


def save_checkpoint(state: dict, directory: str | Path, name: str = LAST) -> Path:
    """Write to a temporary file in the same directory, then rename over the target."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / name
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / LAST
    return torch.load(path, map_location=map_location, weights_only=False)


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
        path = find_checkpoint(self.directory)
        return load_checkpoint(path, map_location) if path else None

    def save(self, state: dict, step: int) -> None:
        save_checkpoint(state, self.directory)
