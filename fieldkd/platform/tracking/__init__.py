"""MLflow tracking: stores, runs, lineage, retries and system metrics."""

from .retry import RetryPolicy, call_with_retry, is_transient
from .run import PARENT_TAG, Run, flatten
from .store import prepare_local_store, tracking_uri
from .system import SystemMetrics

__all__ = ["PARENT_TAG", "RetryPolicy", "Run", "SystemMetrics", "call_with_retry", "flatten",
           "is_transient", "prepare_local_store", "tracking_uri"]
