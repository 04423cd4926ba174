import math
import sys
import types

import numpy as np
import pytest
import torch

from fieldkd.platform.evaluate import LpipsMetric, make_lpips, mse_to_psnr, psnr, ssim
from fieldkd.platform.evaluate.image import ssim_win_size


def _image(h=32, w=32, seed=0):
    return np.random.default_rng(seed).random((h, w, 3))


def test_psnr_identical_is_inf():
    img = _image()
    assert psnr(img, img) == math.inf
    assert mse_to_psnr(0.0) == math.inf


def test_psnr_known_mse_is_20db():
    assert mse_to_psnr(0.01) == pytest.approx(20.0, abs=1e-12)
    gt = np.full((8, 8, 3), 0.5)
    assert psnr(gt + 0.1, gt) == pytest.approx(20.0, abs=1e-9)  # every pixel off by 0.1


def test_psnr_accepts_torch_and_checks_shapes():
    gt = torch.full((4, 5, 3), 0.5)
    assert psnr(gt + 0.1, gt.numpy()) == pytest.approx(20.0, abs=1e-5)
    with pytest.raises(ValueError):
        psnr(np.zeros((4, 4, 3)), np.zeros((4, 5, 3)))
    with pytest.raises(ValueError):
        mse_to_psnr(-1.0)


def test_ssim_identical_is_one_and_noise_lowers_it():
    img = _image()
    assert ssim(img, img) == pytest.approx(1.0)
    noisy = np.clip(img + np.random.default_rng(1).normal(0, 0.1, img.shape), 0, 1)
    assert ssim(noisy, img) < 0.99


def test_ssim_on_tiny_images():
    img = _image(16, 16)
    assert ssim(torch.from_numpy(img), img) == pytest.approx(1.0)
    assert 0 < ssim(_image(5, 6, seed=2), _image(5, 6, seed=3)) < 1
    assert ssim_win_size(16, 16) == 7
    assert ssim_win_size(6, 40) == 5
    with pytest.raises(ValueError, match="3x3"):
        ssim_win_size(2, 10)


def test_make_lpips_works_or_says_why():
    metric, reason = make_lpips()
    assert isinstance(reason, str) and reason
    if metric is None:
        assert "lpips" in reason or "weights" in reason
    else:
        img = _image(64, 64)
        assert metric(img, img) == pytest.approx(0.0, abs=1e-6)


def _fake_lpips(model_cls):
    module = types.ModuleType("lpips")
    module.LPIPS = model_cls
    return module


def test_make_lpips_never_downloads(monkeypatch, tmp_path):
    # A stand-in lpips whose constructor wants a backbone that is not cached.
    class NeedsDownload(torch.nn.Module):
        def __init__(self, **kwargs):
            super().__init__()
            torch.hub.load_state_dict_from_url("https://example.invalid/fieldkd-test-backbone.pth")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setitem(sys.modules, "lpips", _fake_lpips(NeedsDownload))
    original = torch.hub.download_url_to_file
    metric, reason = make_lpips()
    assert metric is None
    assert reason.startswith("weights unavailable") and "fieldkd-test-backbone.pth" in reason
    assert torch.hub.download_url_to_file is original  # the guard is lifted again


def test_lpips_metric_plumbing_with_fake_model(monkeypatch):
    class MeanAbs(torch.nn.Module):
        def __init__(self, **kwargs):
            super().__init__()

        def forward(self, a, b, normalize=False):
            assert a.shape == (1, 3, 6, 7)  # NCHW
            return (a - b).abs().mean(dim=(1, 2, 3), keepdim=True)

    monkeypatch.setitem(sys.modules, "lpips", _fake_lpips(MeanAbs))
    metric, reason = make_lpips()
    assert isinstance(metric, LpipsMetric) and reason
    img = _image(6, 7)
    assert metric(img, img) == 0.0
    assert metric(img, 1 - img) > 0


def test_make_lpips_reports_missing_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "lpips", None)  # makes `import lpips` fail
    metric, reason = make_lpips()
    assert metric is None and reason.startswith("lpips not installed")


def test_make_lpips_survives_broken_import(monkeypatch, tmp_path):
    # e.g. a torchvision built for another torch raises RuntimeError on import.
    (tmp_path / "lpips").mkdir()
    (tmp_path / "lpips" / "__init__.py").write_text("raise RuntimeError('operator does not exist')\n")
    monkeypatch.delitem(sys.modules, "lpips", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    metric, reason = make_lpips()
    assert metric is None and "RuntimeError" in reason
