"""Hash backend selection: auto prefers tcnn only when it can actually run."""

import pytest
import torch

from fieldkd.platform.fields import backend as backend_mod
from fieldkd.platform.fields import build_field, pick_hash_backend


def fake_env(monkeypatch, cuda: bool, tcnn: bool):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(backend_mod, "tcnn_importable", lambda: tcnn)


def test_torch_is_always_available(monkeypatch):
    fake_env(monkeypatch, cuda=False, tcnn=False)
    assert pick_hash_backend("torch") == "torch"


@pytest.mark.parametrize("cuda, tcnn, expected", [
    (False, False, "torch"),
    (True, False, "torch"),
    (False, True, "torch"),  # tcnn without CUDA cannot run
    (True, True, "tcnn"),
])
def test_auto(monkeypatch, cuda, tcnn, expected):
    fake_env(monkeypatch, cuda, tcnn)
    assert pick_hash_backend() == expected
    assert pick_hash_backend("auto") == expected


@pytest.mark.parametrize("cuda, tcnn, reason", [
    (False, True, "CUDA is not available"),
    (True, False, "tinycudann is not installed"),
])
def test_explicit_tcnn_fails_clearly_when_unusable(monkeypatch, cuda, tcnn, reason):
    fake_env(monkeypatch, cuda, tcnn)
    with pytest.raises(RuntimeError, match=reason):
        pick_hash_backend("tcnn")


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown hash backend"):
        pick_hash_backend("cuda")


def test_fields_expose_their_backend(monkeypatch):
    fake_env(monkeypatch, cuda=False, tcnn=False)
    aabb = [[-1, -1, -1], [1, 1, 1]]
    assert build_field("hash", aabb, n_levels=2, log2_hashmap_size=10).backend == "torch"
    assert build_field("grid", aabb, resolution=4).backend == "torch"
    with pytest.raises(RuntimeError):
        build_field("hash", aabb, backend="tcnn")
