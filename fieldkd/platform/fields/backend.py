"""Which implementation of the hash-grid encoding to use.

The chosen name ("tcnn" or "torch") is exposed as ``field.backend`` so the
caller can record it as the MLflow tag ``fieldkd.backend``.
"""

from __future__ import annotations

import importlib.util

import torch

HASH_BACKENDS = ("auto", "tcnn", "torch")


def tcnn_importable() -> bool:
    """True when the optional tinycudann package can be imported."""
    if importlib.util.find_spec("tinycudann") is None:
        return False
    try:
        import tinycudann  # noqa: F401
    except Exception:  # a broken CUDA build raises on import, not on find_spec
        return False
    return True


def pick_hash_backend(requested: str = "auto") -> str:
    """Resolve ``requested`` to "tcnn" or "torch".

    "auto" picks tcnn only when it imports AND CUDA is available (tcnn has no
    CPU path); asking for "tcnn" explicitly without either is an error rather
    than a silent fallback, so a run never measures the wrong backend.
    """
    if requested not in HASH_BACKENDS:
        raise ValueError(f"unknown hash backend {requested!r}; choose one of {HASH_BACKENDS}")
    if requested == "torch":
        return "torch"
    usable = torch.cuda.is_available() and tcnn_importable()
    if requested == "tcnn" and not usable:
        missing = "CUDA is not available" if not torch.cuda.is_available() else (
            "tinycudann is not installed (pip install fieldkd[tcnn])"
        )
        raise RuntimeError(f"hash backend 'tcnn' was requested but {missing}; use backend=torch or auto")
    return "tcnn" if usable else "torch"
