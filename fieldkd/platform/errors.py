"""Errors that the CLI turns into one line and an exit code: 2 for bad input, 3 for a partial failure,
1 for a stage that cannot go on."""

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


class PartialFailure(Exception):
    """A command that has a result although part of its work failed (a sweep with errored
    trials): the CLI still prints ``summary`` as its summary line, then exits with code 3."""

    def __init__(self, message: str, summary: dict):
        self.summary = summary
        super().__init__(message)


class StageError(Exception):
    """A stage that cannot go on (e.g. its loss stayed NaN): its run is FAILED, the message says why."""
