"""The KD-MVS student's KL with the label put on the volume's own hypotheses (mvs_loss.kl_form=discrete),
in closed form against the normal CDF."""

from __future__ import annotations

import math

import pytest
import torch

from fieldkd.platform.distill.losses import (
    discretised_gaussian,
    discretised_gaussian_kl,
    hypothesis_cross_entropy,
)
from fieldkd.platform.errors import InputError
from fieldkd.platform.networks.mvs import LabelledMVSTask, build_cascade_mvs
from fieldkd.platform.networks.mvs.losses import labelled_loss

HYP = torch.tensor([0.0, 4.0, 8.0, 12.0]).reshape(1, 4, 1, 1)


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _map(value: float) -> torch.Tensor:
    return torch.tensor([[[value]]])


def test_the_label_on_the_hypotheses_in_closed_form():
    target = discretised_gaussian(HYP, _map(5.0), _map(2.0)).flatten()
    # each hypothesis holds the mass between the midpoints to its neighbours (2, 6, 10), the ends the tails
    expected = torch.tensor([_phi(-1.5), _phi(0.5) - _phi(-1.5), _phi(2.5) - _phi(0.5), 1.0 - _phi(2.5)])
    torch.testing.assert_close(target, expected)
    # its soft-argmin lands between the hypotheses, near the label's mean (a one-hot volume says 4)
    assert abs(float((target * HYP.flatten()).sum()) - 5.0) < 0.05
    # far narrower than the spacing: one-hot at the nearest hypothesis; the clamp keeps sigma = 0 finite
    torch.testing.assert_close(discretised_gaussian(HYP, _map(5.0), _map(0.0), 0.01).flatten(),
                               torch.tensor([0.0, 1.0, 0.0, 0.0]))
    # a mean outside the window puts all the mass on the end it is beyond
    torch.testing.assert_close(discretised_gaussian(HYP, _map(40.0), _map(2.0)).flatten(),
                               torch.tensor([0.0, 0.0, 0.0, 1.0]))


def test_discretised_kl_is_zero_at_the_label_and_the_cross_entropy_for_a_narrow_one():
    target = discretised_gaussian(HYP, _map(5.0), _map(2.0))
    for direction in ("student||label", "label||student"):
        assert float(discretised_gaussian_kl(target, HYP, _map(5.0), _map(2.0), direction=direction)) < 1e-6
    q = torch.tensor([0.1, 0.2, 0.3, 0.4]).reshape(1, 4, 1, 1)
    t = target.flatten()
    forward = float((t * (t / q.flatten()).log()).sum())
    reverse = float((q.flatten() * (q.flatten() / t).log()).sum())
    assert float(discretised_gaussian_kl(q, HYP, _map(5.0), _map(2.0), direction="label||student")) == \
        pytest.approx(forward, rel=1e-5)
    assert float(discretised_gaussian_kl(q, HYP, _map(5.0), _map(2.0))) == pytest.approx(reverse, rel=1e-5)
    # a label much narrower than the spacing: KL(label || student) is the cross-entropy to the nearest hypothesis
    torch.testing.assert_close(discretised_gaussian_kl(q, HYP, _map(5.0), _map(0.1), direction="label||student"),
                               hypothesis_cross_entropy(q, HYP, _map(5.0)))
    # only the masked pixels count
    mask = torch.tensor([[[False]]])
    assert float(discretised_gaussian_kl(q, HYP, _map(5.0), _map(2.0), mask=mask)) == 0.0


def test_labelled_loss_with_the_discrete_form():
    prob = torch.softmax(torch.randn(1, 4, 2, 4, generator=torch.Generator().manual_seed(0)), 1)
    hyp = HYP.expand(1, 4, 2, 4)
    mu, sigma = torch.full((1, 4, 8), 5.0), torch.full((1, 4, 8), 1.5)
    mask = torch.zeros(1, 4, 8, dtype=torch.bool)
    mask[0, 0, 0] = True  # stage pixels are every 2nd full-size pixel: (0, 0) is pixel (0, 0)
    loss, metrics = labelled_loss([{"prob_volume": prob, "hypotheses": hyp}], mu, sigma, mask, 0.01,
                                  stage_weights=(1.0,), kl_form="discrete")
    m = torch.zeros(1, 2, 4, dtype=torch.bool)
    m[0, 0, 0] = True
    kl = discretised_gaussian_kl(prob, hyp, mu[:, ::2, ::2], sigma[:, ::2, ::2], 0.01, m)
    ce = -prob[0, 1, 0, 0].log()  # 4 is the hypothesis nearest 5
    torch.testing.assert_close(loss, 0.5 * kl + 2.0 * ce)
    assert metrics["train/stage1_kl"] == pytest.approx(float(kl))
    moments, _ = labelled_loss([{"prob_volume": prob, "hypotheses": hyp}], mu, sigma, mask, 0.01, stage_weights=(1.0,))
    assert abs(float(moments - loss)) > 0.1  # labelled_loss's own default, the moments' form, is another loss
    with pytest.raises(ValueError, match="KL form"):
        labelled_loss([{"prob_volume": prob, "hypotheses": hyp}], mu, sigma, mask, 0.01, kl_form="gauss")
    with pytest.raises(InputError, match="kl_form"):
        LabelledMVSTask(build_cascade_mvs({"hypotheses": [8, 8, 4], "base_channels": 4, "regularizer_channels": 4}),
                        iter([]), "cpu", {"kl_form": "gauss"})
