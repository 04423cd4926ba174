"""Distillation losses and the stage schedule: closed-form cases."""

import math

import pytest
import torch

from fieldkd.platform.distill.losses import (KINDS, alpha_loss, colour_loss, density_loss, depth_loss, difference,
                                             feature_loss, interlevel_loss, outer_envelope, rgb_loss, sample_alphas)
from fieldkd.platform.distill.schedule import ScheduleConfig, Stage, pvd_schedule, stage_at, weights_at


def test_every_kind_is_zero_when_equal_and_known_on_a_simple_case():
    s, t = torch.tensor([1.0, 2.0]), torch.zeros(2)
    expected = {"mse": 2.5, "l1": 1.5, "norm_l2": math.sqrt(5.0), "norm_l1": 3.0,
                "smooth_l1": ((1 - 0.025) + (2 - 0.025)) / 2}
    assert set(expected) == set(KINDS)
    for kind, value in expected.items():
        assert difference(s, t, kind).item() == pytest.approx(value, rel=1e-6), kind
        assert difference(s, s.clone(), kind).item() == 0.0, kind
    with pytest.raises(ValueError):
        difference(s, t, "l3")
    with pytest.raises(ValueError):
        difference(s, torch.zeros(3))


def test_mask_selects_and_an_empty_selection_is_zero_with_a_graph():
    s = torch.tensor([1.0, 5.0], requires_grad=True)
    t = torch.zeros(2)
    assert difference(s, t, "mse", torch.tensor([True, False])).item() == pytest.approx(1.0)
    empty = difference(s, t, "mse", torch.tensor([False, False]))
    assert empty.item() == 0.0
    empty.backward()  # no NaN from a mean over nothing, and backward works
    assert torch.equal(s.grad, torch.zeros(2))


@pytest.mark.parametrize("loss", [feature_loss, colour_loss, rgb_loss, depth_loss, alpha_loss])
def test_gradient_reaches_the_student_only(loss):
    s = torch.rand(6, 3, requires_grad=True)
    t = torch.rand(6, 3, requires_grad=True)
    loss(s, t, "mse").backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_density_clip_is_applied_to_the_teacher():
    teacher = torch.tensor([10.0, -5.0, 3.0])
    # A student at the clipped values matches exactly.
    assert density_loss(torch.tensor([7.0, -2.0, 3.0]), teacher).item() == 0.0
    # Against zeros, the clipped targets (7, -2, 3) count, not the raw ones.
    assert density_loss(torch.zeros(3), teacher).item() == pytest.approx((49 + 4 + 9) / 3)
    assert density_loss(torch.zeros(3), teacher, clip=None).item() == pytest.approx((100 + 25 + 9) / 3)
    student = torch.zeros(3, requires_grad=True)
    teacher.requires_grad_(True)
    density_loss(student, teacher).backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0


def test_saturated_density_only_penalises_the_wrong_side_of_the_clip():
    teacher = torch.tensor([-5.0, -5.0, 9.0, 9.0])
    student = torch.tensor([-4.0, 0.0, 8.0, 6.0], requires_grad=True)
    # Plain clip: every student is pulled to -2 or 7.
    assert density_loss(student, teacher).item() == pytest.approx((4 + 4 + 1 + 1) / 4)
    # Saturated: -4 is already below -2 and 8 above 7; only 0 and 6 are wrong.
    loss = density_loss(student, teacher, saturate=True)
    assert loss.item() == pytest.approx((4 + 1) / 4)
    loss.backward()
    assert student.grad[0] == 0 and student.grad[2] == 0
    assert student.grad[1] > 0 and student.grad[3] < 0


def test_sample_alphas_match_the_closed_form():
    density = torch.tensor([1.0, 0.0, 2.0])
    starts = torch.zeros(3)
    ends = torch.tensor([math.log(2.0), 5.0, math.log(2.0)])
    assert torch.allclose(sample_alphas(density, starts, ends), torch.tensor([0.5, 0.0, 0.75]))


def test_depth_loss_masks_background_rays():
    s, t = torch.tensor([1.0, 9.0]), torch.tensor([1.0, 2.0])
    assert depth_loss(s, t, "l1", mask=torch.tensor([True, False])).item() == 0.0
    assert depth_loss(s, t, "l1").item() == pytest.approx(3.5)


def test_outer_envelope_sums_the_overlapping_intervals():
    t_target = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    t_env = torch.tensor([[0.5, 1.5, 4.0]])
    w_env = torch.tensor([[0.3, 0.6]])
    # [0,1) overlaps [0.5,1.5); [1,2) overlaps both; [2,3) only [1.5,4).
    assert torch.allclose(outer_envelope(t_target, t_env, w_env), torch.tensor([[0.3, 0.9, 0.6]]))
    # On identical intervals the envelope is the weights themselves.
    w = torch.tensor([[0.1, 0.2, 0.7]])
    assert torch.allclose(outer_envelope(t_target, t_target, w), w)


def test_interlevel_loss_closed_form_and_gradient():
    edges = torch.tensor([[0.0, 1.0, 2.0]])
    teacher = torch.tensor([[0.5, 0.5]], requires_grad=True)
    assert interlevel_loss(edges, teacher.detach().clone(), edges, teacher).item() == 0.0
    # A student with no weight falls short by everything: sum w^2 / w = sum w.
    student = torch.zeros(1, 2, requires_grad=True)
    loss = interlevel_loss(edges, student, edges, teacher)
    assert loss.item() == pytest.approx(1.0, rel=1e-5)
    loss.backward()
    assert student.grad is not None and (student.grad < 0).all() and teacher.grad is None
    # Only the second interval falls short, by 0.5: 0.5^2 / 0.5.
    assert interlevel_loss(edges, torch.tensor([[1.0, 0.0]]), edges, teacher).item() == pytest.approx(0.5, rel=1e-5)
    # A coarse student interval covering both teacher intervals with weight 1 covers them.
    coarse = torch.tensor([[0.0, 2.0]])
    assert interlevel_loss(coarse, torch.tensor([[1.0]]), edges, teacher).item() == 0.0


def test_pvd_stages_at_the_official_length():
    cfg = pvd_schedule()
    w = weights_at(0, 30000, cfg)
    assert w["feature"] == pytest.approx(0.002) and w["density"] == w["colour"] == w["rgb"] == 0.0
    assert stage_at(1999, 30000, cfg)[1].name == "feature"
    w = weights_at(2000, 30000, cfg)
    assert w["density"] == w["colour"] == pytest.approx(0.002) and w["rgb"] == 0.0
    assert w["feature"] == pytest.approx(0.002 * 0.995 ** 2000)
    assert stage_at(4999, 30000, cfg)[1].name == "volume"
    w = weights_at(5000, 30000, cfg)
    assert w["rgb"] == 1.0 and w["density"] == pytest.approx(0.002)
    assert weights_at(29999, 30000, cfg)["rgb"] == 1.0


def test_stage_boundaries_scale_with_the_run_and_follow_progress():
    cfg = pvd_schedule()
    assert [stage_at(s, 300, cfg)[0] for s in (0, 19, 20, 49, 50, 299)] == [0, 0, 1, 1, 2, 2]
    # A timed run passes its progress: half-way through is stage 3 whatever the step.
    assert stage_at(3, 300, cfg, progress=0.5)[1].name == "render"


def test_feature_stage_is_skipped_for_grids():
    cfg = pvd_schedule()
    w = weights_at(0, 300, cfg, skip_feature_stage=True)
    assert w["feature"] == 0.0 and w["density"] == pytest.approx(0.002)
    assert stage_at(49, 300, cfg, True)[1].name == "volume"
    assert stage_at(50, 300, cfg, True)[1].name == "render"
    assert all(weights_at(s, 300, cfg, True)["feature"] == 0.0 for s in range(0, 300, 7))


def test_schedule_config_round_trips_and_rejects_nonsense():
    cfg = pvd_schedule()
    assert ScheduleConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError):
        ScheduleConfig((Stage("a", 1.0, ("nonsense",)),), {})
    with pytest.raises(ValueError):
        ScheduleConfig((Stage("a", 0.5, ("rgb",)),), {"rgb": 1.0})  # never reaches the end of the run
