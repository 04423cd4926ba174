"""Errors that the CLI turns into one line and exit code 2."""

from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """Bad user input: names the offending file (or key) and the problem."""

    def __init__(self, where: str | Path, problem: str):
        self.where = str(where)
        self.problem = problem
        super().__init__(f"{self.where}: {problem}")

    def __reduce__(self):
        # Rebuild from both fields, so the error survives the trip back from a Ray worker.
        return (type(self), (self.where, self.problem))
