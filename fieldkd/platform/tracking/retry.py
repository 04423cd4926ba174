"""Bounded retries with backoff for tracking calls that fail for a passing reason.

Passing reasons are a locked SQLite database (another process holds the write lock
for longer than the busy timeout), a tracking server that is unavailable, rate
limiting or restarting, and dropped connections. Anything else (a bad value, a
missing run, a conflicting param) is raised at once.

Writes are safe to repeat: a failed SQLite transaction is rolled back, MLflow drops
a metric that is already stored with the same key, step, timestamp and value, and
params and tags are set to the same value again.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from mlflow.exceptions import MlflowException

log = logging.getLogger("fieldkd.tracking")

T = TypeVar("T")

TRANSIENT_CODES = frozenset({
    "TEMPORARILY_UNAVAILABLE",   # SQLAlchemy OperationalError in the store; HTTP 503
    "REQUEST_LIMIT_EXCEEDED",    # HTTP 429
    "DEADLINE_EXCEEDED",
})

TRANSIENT_TEXT = (
    "database is locked",
    "database table is locked",
    "database schema is locked",
    "database is busy",
    "max retries exceeded",       # requests/urllib3 gave up connecting
    "connection refused",
    "connection reset",
    "connection aborted",
    "remote end closed connection",
    "read timed out",
    "failed with error code 502",
    "failed with error code 503",
    "failed with error code 504",
)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry.

    ``attempts`` counts every try, the first included. Delays grow from
    ``first_delay_s`` by doubling up to ``max_delay_s``, with +-50 % jitter so that
    writers that collided do not collide again. No retry starts once ``budget_s``
    seconds have passed since the first try (SQLite already waits up to 20 s for a
    lock inside each try, and MLflow's HTTP client retries on its own).
    """

    attempts: int = 8
    first_delay_s: float = 0.1
    max_delay_s: float = 5.0
    budget_s: float = 120.0

    def delay(self, retry: int) -> float:
        base = min(self.max_delay_s, self.first_delay_s * 2 ** retry)
        return base * random.uniform(0.5, 1.5)


DEFAULT_POLICY = RetryPolicy()
NO_RETRY = RetryPolicy(attempts=1)


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` (or an exception it was raised from) is worth retrying."""
    for err in _chain(exc):
        if isinstance(err, MlflowException) and err.error_code in TRANSIENT_CODES:
            return True
        if isinstance(err, (ConnectionError, TimeoutError)):
            return True
        if isinstance(err, sqlite3.OperationalError) and "locked" in str(err).lower():
            return True
        name = type(err).__name__
        if name in ("ConnectionError", "ConnectTimeout", "ReadTimeout", "ChunkedEncodingError"):
            return True  # requests / urllib3, without importing them
        text = str(err).lower()
        if any(fragment in text for fragment in TRANSIENT_TEXT):
            return True
    return False


def call_with_retry(fn: Callable[..., T], *args, policy: RetryPolicy = DEFAULT_POLICY,
                    on_retry: Callable[[BaseException], None] | None = None, **kwargs) -> T:
    """``fn(*args, **kwargs)``, tried again after transient failures within ``policy``."""
    started = time.monotonic()
    for attempt in range(1, policy.attempts + 1):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            out_of_budget = time.monotonic() - started >= policy.budget_s
            if attempt >= policy.attempts or out_of_budget or not is_transient(exc):
                raise
            wait = policy.delay(attempt - 1)
            log.warning("tracking call %s failed (%s: %s); retry %d of %d in %.2f s",
                        getattr(fn, "__name__", "call"), type(exc).__name__,
                        str(exc).splitlines()[0][:200] if str(exc) else "", attempt,
                        policy.attempts - 1, wait)
            if on_retry is not None:
                on_retry(exc)
            time.sleep(wait)
    raise AssertionError("unreachable")
