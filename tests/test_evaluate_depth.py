import numpy as np
import pytest
import torch

from fieldkd.platform.evaluate import depth_metrics


def test_known_values():
    gt = np.array([[1.0, 2.0], [4.0, 0.0]])  # 0: no ground truth, ignored
    pred = np.array([[1.5, 2.0], [3.0, 9.0]])
    m = depth_metrics(pred, gt)
    assert m["abs_rel"] == pytest.approx((0.5 / 1 + 0 + 1.0 / 4) / 3)
    assert m["mae"] == pytest.approx((0.5 + 0 + 1.0) / 3)
    assert m["rmse"] == pytest.approx(np.sqrt((0.25 + 0 + 1.0) / 3))


def test_mask_and_torch_inputs():
    gt = torch.tensor([[1.0, 2.0], [4.0, 8.0]])
    pred = gt * 1.1
    mask = torch.tensor([[True, False], [False, False]])
    m = depth_metrics(pred, gt, mask)
    assert m["abs_rel"] == pytest.approx(0.1, rel=1e-5)
    assert m["mae"] == pytest.approx(0.1, rel=1e-5)


def test_no_valid_pixel_raises():
    with pytest.raises(ValueError, match="no pixel"):
        depth_metrics(np.ones((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError):
        depth_metrics(np.ones((2, 2)), np.ones((2, 3)))
