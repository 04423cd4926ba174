"""MLflow tracking: stores, runs and lineage."""

from .run import PARENT_TAG, Run, flatten
from .store import tracking_uri

__all__ = ["PARENT_TAG", "Run", "flatten", "tracking_uri"]
