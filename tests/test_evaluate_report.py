import numpy as np
import pytest
import torch

from fieldkd.platform.evaluate import colorize, error_map, side_by_side, to_uint8


def test_side_by_side_images_only():
    rng = np.random.default_rng(0)
    pred, gt = rng.random((6, 5, 3)), rng.random((6, 5, 3))
    out = side_by_side(torch.from_numpy(pred), gt)
    assert out.dtype == np.uint8 and out.shape == (6, 10, 3)
    assert np.array_equal(out[:, :5], to_uint8(pred))
    assert np.array_equal(out[:, 5:], to_uint8(gt))


def test_side_by_side_with_depth_and_error():
    img = np.full((4, 3, 3), 0.5)
    depth = np.array([[1.0, 2.0, 3.0]] * 4)
    depth_gt = depth.copy()
    depth_gt[0, 0] = 0.0  # missing ground truth shows as black
    out = side_by_side(img, img, depth, depth_gt, with_error=True)
    assert out.shape == (4, 15, 3)
    dp, dg = out[:, 9:12], out[:, 12:15]
    assert np.array_equal(dp[1:], dg[1:])  # shared colour range
    assert np.all(dg[0, 0] == 0) and np.any(dp[0, 0] != 0)
    assert not np.array_equal(dp[:, 0], dp[:, 2])  # depth varies -> colour varies


def test_side_by_side_rejects_mismatched_depth():
    img = np.zeros((4, 3, 3))
    with pytest.raises(ValueError):
        side_by_side(img, img, depth_pred=np.ones((3, 4)))


def test_error_map_and_colorize():
    a = np.zeros((3, 4, 3))
    b = a.copy()
    b[0, 0] = 1.0
    e = error_map(a, b)
    assert e.shape == (3, 4, 3) and e.dtype == np.uint8
    assert np.any(e[0, 0] != e[1, 1])
    c = colorize(np.array([[np.nan, 1.0]]), 0.0, 1.0)
    assert np.all(c[0, 0] == 0)
