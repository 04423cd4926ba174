"""Shared fixtures: tiny generated scenes in the real on-disk formats."""

from __future__ import annotations

import pytest

from fieldkd.platform.scenes import write_scene

TINY = dict(width=24, height=24, n_train=8, n_val=2, n_test=2)


@pytest.fixture(scope="session")
def tiny_blender(tmp_path_factory):
    return write_scene("default", tmp_path_factory.mktemp("scenes") / "tiny_blender", "blender", **TINY)


@pytest.fixture(scope="session")
def tiny_nerfstudio(tmp_path_factory):
    return write_scene("default", tmp_path_factory.mktemp("scenes") / "tiny_ns", "nerfstudio", **TINY)


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri
