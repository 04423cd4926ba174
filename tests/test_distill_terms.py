"""Distillation terms: the KD-MVS depth-distribution losses in closed form, and the registry that
lets a term be added with one function (picked up by the distillation task with no other edit)."""

import math
from types import SimpleNamespace

import pytest
import torch

from fieldkd.platform.distill import (DistillationTask, DistillConfig, OnTheFlySource, SampleLayout, ScheduleConfig,
                                      SphereInquirer, Stage, Teacher, get_term, register_term, term_names)
from fieldkd.platform.distill.losses import (MIN_PROB, difference, gaussian_kl, gaussian_kl_map,
                                             hypothesis_cross_entropy, volume_moments)
from fieldkd.platform.distill.schedule import weights_at
from fieldkd.platform.distill.stage import schedule_of
from fieldkd.platform.distill.terms import TermContext, unregister_term
from fieldkd.platform.errors import InputError
from fieldkd.platform.evaluate.image import mse_to_psnr
from fieldkd.platform.fields import build_field
from fieldkd.platform.render import RenderConfig, Renderer
from fieldkd.platform.scenes import load_scene

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BUILT_IN = ("feature", "density", "colour", "alpha", "rgb", "depth", "interlevel", "gt_rgb", "gaussian_kl", "depth_ce")


def kl(mu_p, s_p, mu_q, s_q, min_sigma=1e-3, direction="student||label"):
    t = torch.tensor
    return gaussian_kl(t([mu_p]), t([s_p]), t([mu_q]), t([s_q]), min_sigma, direction=direction).item()


# --- Gaussian KL ---

def test_kl_of_identical_gaussians_is_zero():
    mu, sigma = torch.tensor([[0.0, 3.0], [-2.0, 700.0]]), torch.tensor([[1.0, 0.5], [2.0, 4.0]])
    assert gaussian_kl_map(mu, sigma, mu.clone(), sigma.clone()).abs().max().item() < 1e-6


def test_kl_known_values_and_direction():
    # label N(0,1), student N(1,2^2). KL(student || label), the default (official):
    # log(1/2) + (4 + 1) / 2 - 1/2; KL(label || student): log 2 + (1 + 1) / 8 - 1/2
    assert kl(0.0, 1.0, 1.0, 2.0) == pytest.approx(-math.log(2) + 2.5 - 0.5, rel=1e-6)
    assert kl(0.0, 1.0, 1.0, 2.0, direction="label||student") == pytest.approx(math.log(2) + 0.25 - 0.5, rel=1e-6)
    # The default costs a student twice as broad as its label log(1/2) + 4/2 - 1/2 and one twice as
    # sharp log 2 + 1/8 - 1/2; "label||student" the other way round.
    assert kl(5.0, 1.0, 5.0, 2.0) == pytest.approx(-math.log(2) + 2.0 - 0.5, rel=1e-6)
    assert kl(5.0, 2.0, 5.0, 1.0) == pytest.approx(math.log(2) + 0.125 - 0.5, rel=1e-6)
    assert kl(5.0, 1.0, 5.0, 2.0, direction="label||student") == pytest.approx(math.log(2) + 0.125 - 0.5, rel=1e-6)
    with pytest.raises(ValueError, match="direction"):
        kl(0.0, 1.0, 1.0, 2.0, direction="forward")


@pytest.mark.parametrize("s_q", [0.5, 2.0, 8.0])
def test_student_to_label_kl_pulls_the_mean_by_the_labels_variance_only(s_q):
    """KL(student || label)'s gradient in the student's mean is (mu_q - mu_p) / sigma_p^2 whatever the
    student's width; KL(label || student)'s is (mu_q - mu_p) / sigma_q^2 and its gradient in
    sigma_q is -(sigma_p^2 + d^2) / sigma_q^3 + 1 / sigma_q: a sharp student that misses gets a huge push
    to broaden (measured on KD-MVS students: the cause of probabilistic labels losing to hard ones)."""
    mu_q = torch.tensor([13.0], requires_grad=True)
    sq = torch.tensor([s_q], requires_grad=True)
    gaussian_kl(torch.tensor([10.0]), torch.tensor([2.0]), mu_q, sq, 0.1).backward()
    assert mu_q.grad.item() == pytest.approx(3.0 / 4.0, rel=1e-5)
    assert sq.grad.item() == pytest.approx(s_q / 4.0 - 1.0 / s_q, rel=1e-5)  # zero at the label's width
    mu_q.grad = sq.grad = None
    gaussian_kl(torch.tensor([10.0]), torch.tensor([2.0]), mu_q, sq, 0.1, direction="label||student").backward()
    assert mu_q.grad.item() == pytest.approx(3.0 / s_q ** 2, rel=1e-5)
    assert sq.grad.item() == pytest.approx(-(4.0 + 9.0) / s_q ** 3 + 1.0 / s_q, rel=1e-5)


def test_the_width_each_direction_asks_of_a_student_that_misses():
    """A student whose mean stays 3 from the label's (e.g. the label outside a cascade stage's window):
    KL(student || label) is least at the label's width, 2; KL(label || student) at sqrt(2^2 + 3^2), as
    broad as the miss."""
    widths = torch.linspace(0.5, 8.0, 1501)
    label_mu, label_sigma, mu_q = torch.full_like(widths, 10.0), torch.full_like(widths, 2.0), torch.full_like(widths, 13.0)
    best = {d: widths[gaussian_kl_map(*((mu_q, widths, label_mu, label_sigma) if d == "student||label"
                                        else (label_mu, label_sigma, mu_q, widths)), 0.1).argmin()].item()
            for d in ("student||label", "label||student")}
    assert best["student||label"] == pytest.approx(2.0, abs=0.01)
    assert best["label||student"] == pytest.approx(13 ** 0.5, abs=0.01)


def test_kl_is_non_negative_and_a_masked_mean():
    g = torch.Generator().manual_seed(0)
    shape = (2, 16, 16)
    mu_p, mu_q = torch.randn(shape, generator=g) * 5, torch.randn(shape, generator=g) * 5
    s_p, s_q = torch.rand(shape, generator=g) * 3, torch.rand(shape, generator=g) * 3
    per_pixel = gaussian_kl_map(mu_q, s_q, mu_p, s_p, 0.05)  # KL(student || label), the default
    assert per_pixel.min().item() >= -1e-5
    mask = torch.rand(shape, generator=g) > 0.5
    assert gaussian_kl(mu_p, s_p, mu_q, s_q, 0.05, mask).item() == pytest.approx(per_pixel[mask].mean().item(),
                                                                                  rel=1e-6)
    reverse = gaussian_kl_map(mu_p, s_p, mu_q, s_q, 0.05)
    assert gaussian_kl(mu_p, s_p, mu_q, s_q, 0.05, mask, "label||student").item() == pytest.approx(
        reverse[mask].mean().item(), rel=1e-6)


def test_sigma_clamp_keeps_the_kl_and_its_gradient_finite():
    # Both sigmas 0, means 1 apart, clamped at 0.1: log 1 + (0.01 + 1) / 0.02 - 1/2 = 50.
    mu_q = torch.tensor([1.0], requires_grad=True)
    s_q = torch.tensor([0.0], requires_grad=True)
    value = gaussian_kl(torch.tensor([0.0]), torch.tensor([0.0]), mu_q, s_q, min_sigma=0.1)
    assert value.item() == pytest.approx(50.0, rel=1e-5)
    value.backward()
    assert torch.isfinite(mu_q.grad).all() and mu_q.grad.item() == pytest.approx(1.0 / 0.01, rel=1e-5)


def test_a_per_sample_sigma_clamp_stays_with_its_sample():
    # Both samples' labels and students have sigma 0 and means 1 apart; clamps 1 and 10. With only
    # sample 0 in the mask: log 1 + (1 + 1) / 2 - 1/2 = 0.5 (sample 1's clamp would give less).
    zeros, ones = torch.zeros(2, 2, 2), torch.ones(2, 2, 2)
    mask = torch.zeros(2, 2, 2, dtype=torch.bool)
    mask[0] = True
    clamp = torch.tensor([1.0, 10.0]).reshape(2, 1, 1)
    for direction in ("student||label", "label||student"):
        assert gaussian_kl(zeros, zeros, ones, zeros, clamp, mask, direction).item() == pytest.approx(0.5, rel=1e-6)
        # unmasked: sample 1's pixels cost (100 + 1) / 200 - 1/2 = 0.005 each
        assert gaussian_kl(zeros, zeros, ones, zeros, clamp, None, direction).item() == pytest.approx(
            (0.5 + 0.005) / 2, rel=1e-5)


def test_invalid_labels_outside_the_mask_do_not_reach_the_gradient():
    mu_q = torch.tensor([1.0, 2.0], requires_grad=True)
    s_q = torch.tensor([1.0, 1.0], requires_grad=True)
    mu_p, s_p = torch.tensor([1.5, float("nan")]), torch.tensor([1.0, float("nan")])
    mask = torch.tensor([True, False])
    value = gaussian_kl(mu_p, s_p, mu_q, s_q, 0.01, mask)
    assert value.item() == pytest.approx(0.125, rel=1e-5)  # (0.5)^2 / 2
    value.backward()
    assert torch.isfinite(mu_q.grad).all() and mu_q.grad[1].item() == 0.0
    empty = gaussian_kl(mu_p, s_p, mu_q, s_q, 0.01, torch.zeros(2, dtype=torch.bool))
    assert empty.item() == 0.0 and empty.requires_grad


# --- moments of a probability volume ---

def hypotheses_like(b=1, d=4, h=2, w=3, start=500.0, step=2.0):
    return (start + step * torch.arange(d, dtype=torch.float32))[None, :, None, None].expand(b, d, h, w).clone()


def test_moments_of_one_hot_and_two_point_volumes():
    hyp = hypotheses_like()  # 500, 502, 504, 506
    one_hot = torch.zeros(1, 4, 2, 3)
    one_hot[:, 2] = 1.0
    mean, std = volume_moments(one_hot, hyp)
    assert mean.shape == (1, 2, 3) and torch.allclose(mean, torch.full_like(mean, 504.0))
    assert std.max().item() < 1e-5
    half = torch.zeros(1, 4, 2, 3)
    half[:, 0] = half[:, 2] = 0.5  # 500 and 504: mean 502, std 2
    mean, std = volume_moments(half, hyp)
    assert torch.allclose(mean, torch.full_like(mean, 502.0)) and torch.allclose(std, torch.full_like(std, 2.0))


def test_kl_through_the_moments_of_a_peaked_volume_has_finite_gradients():
    one_hot = torch.zeros(1, 4, 2, 3)
    one_hot[:, 1] = 1.0  # variance exactly 0, where the square root's gradient is infinite
    one_hot.requires_grad_(True)
    mean, std = volume_moments(one_hot, hypotheses_like())
    value = gaussian_kl(torch.full((1, 2, 3), 503.0), torch.full((1, 2, 3), 1.0), mean, std, 0.5)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(one_hot.grad).all()


# --- cross-entropy against the nearest hypothesis ---

def test_cross_entropy_at_the_nearest_hypothesis():
    hyp = hypotheses_like(h=1, w=1)  # 500, 502, 504, 506
    one_hot = torch.tensor([0.0, 1.0, 0.0, 0.0]).reshape(1, 4, 1, 1)
    assert hypothesis_cross_entropy(one_hot, hyp, torch.tensor([[[502.6]]])).item() == 0.0
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4]).reshape(1, 4, 1, 1)
    # 503.2 is nearest to 504 (index 2), 499 below the range to the first plane.
    assert hypothesis_cross_entropy(probs, hyp, torch.tensor([[[503.2]]])).item() == pytest.approx(-math.log(0.3))
    assert hypothesis_cross_entropy(probs, hyp, torch.tensor([[[499.0]]])).item() == pytest.approx(-math.log(0.1))
    # A zero at the target costs -log(MIN_PROB), not infinity.
    assert hypothesis_cross_entropy(one_hot, hyp, torch.tensor([[[506.0]]])).item() == pytest.approx(
        -math.log(MIN_PROB), rel=1e-5)


def test_cross_entropy_from_log_probabilities_and_masked():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 3, 3, generator=g, requires_grad=True)
    hyp = hypotheses_like(b=2, h=3, w=3)
    target = 499.0 + 8.0 * torch.rand(2, 3, 3, generator=g)
    mask = torch.rand(2, 3, 3, generator=g) > 0.3
    from_logp = hypothesis_cross_entropy(torch.log_softmax(logits, 1), hyp, target, mask, log_probs=True)
    from_p = hypothesis_cross_entropy(torch.softmax(logits, 1), hyp, target, mask)
    assert from_logp.item() == pytest.approx(from_p.item(), rel=1e-5)
    index = ((target - 500.0) / 2.0).round().clamp(0, 3).long()
    expected = -torch.log_softmax(logits, 1).gather(1, index[:, None]).squeeze(1)[mask].mean()
    assert from_logp.item() == pytest.approx(expected.item(), rel=1e-6)
    from_logp.backward()
    assert torch.isfinite(logits.grad).all()


# --- the registry ---

def test_the_built_in_terms_are_registered_in_order_and_unknown_names_are_one_line_errors():
    assert term_names()[:len(BUILT_IN)] == BUILT_IN
    with pytest.raises(InputError) as info:
        get_term("gaussian_kld")
    message = str(info.value)
    assert "\n" not in message and "gaussian_kld" in message and all(name in message for name in BUILT_IN)
    with pytest.raises(InputError) as info:  # from config: distill.stages names the term
        schedule_of({"distill": {"stages": [{"name": "a", "until": 1.0, "terms": ["rgbb"]}],
                                 "weights": {"rgbb": 1.0}}})
    assert "\n" not in str(info.value) and "rgbb" in str(info.value) and "interlevel" in str(info.value)
    with pytest.raises(ValueError):
        register_term("rgb")(lambda pred, target, ctx: None)


def test_the_mvs_terms_read_prediction_and_target_dicts():
    g = torch.Generator().manual_seed(2)
    prob = torch.softmax(torch.randn(1, 4, 2, 3, generator=g), dim=1)
    hyp = hypotheses_like()
    mu, sigma = 500.0 + 6.0 * torch.rand(1, 2, 3, generator=g), 0.5 + torch.rand(1, 2, 3, generator=g)
    mask = torch.tensor([[[True, False, True], [True, True, False]]])
    pred, target = {"prob_volume": prob, "hypotheses": hyp}, {"mu": mu, "sigma": sigma, "mask": mask}
    ctx = TermContext("mse", SimpleNamespace(min_sigma=0.7))
    mean, std = volume_moments(prob, hyp)
    assert get_term("gaussian_kl")(pred, target, ctx).item() == pytest.approx(
        gaussian_kl(mu, sigma, mean, std, 0.7, mask).item())
    assert get_term("depth_ce")(pred, target, ctx).item() == pytest.approx(
        hypothesis_cross_entropy(prob, hyp, mu, mask).item())


# --- the distillation task picks up registered terms ---

@pytest.fixture(scope="module")
def untrained_teacher(tiny_blender):
    """An untrained teacher is enough: the test is about which terms run, not what they learn."""
    scene = load_scene("blender", tiny_blender)
    torch.manual_seed(0)
    render = RenderConfig(samples_per_ray=16, occupancy_resolution=8)
    field = build_field("hash", scene.aabb, backend="torch", n_levels=2, log2_hashmap_size=8, max_resolution=16)
    return Teacher(field, Renderer(scene.aabb, scene.near, scene.far, scene.background, render)), scene, render


def tiny_task(teacher, scene, render, schedule):
    student = build_field("hash", scene.aabb, backend="torch", n_levels=2, log2_hashmap_size=8, max_resolution=16)
    renderer = Renderer(scene.aabb, scene.near, scene.far, scene.background, render)
    source = OnTheFlySource(SphereInquirer(scene.split("train").cameras, scene.aabb, rays_per_pose=8, seed=3),
                            teacher, SampleLayout.from_renderer(renderer), seed=4)
    return DistillationTask(student, renderer, teacher, source, schedule,
                            DistillConfig(batch_rays=16, total_steps=10, loss="mse", regularize=False), "cpu")


@pytest.fixture
def custom_term():
    """A term registered here, reading the rendered colours of student and teacher."""
    @register_term("test_rgb_mse", predictions=("render_rgb",), targets=("render_rgb",))
    def _rgb_mse(pred, target, ctx):
        return difference(pred["render_rgb"], target["render_rgb"], ctx.kind)

    yield "test_rgb_mse"
    unregister_term("test_rgb_mse")


def test_a_term_registered_elsewhere_is_trained_and_logged(untrained_teacher, custom_term):
    teacher, scene, render = untrained_teacher
    schedule = ScheduleConfig((Stage("only", 1.0, (custom_term,)),), {custom_term: 2.0},
                              {custom_term: 0.5})
    assert weights_at(1, 10, schedule)[custom_term] == 1.0  # weight and decay from the schedule
    task = tiny_task(teacher, scene, render, schedule)
    loss, metrics, _ = task.training_step(1)
    value = metrics[f"distill/{custom_term}"]
    # The term saw the renders the task compares: its MSE is the logged PSNR's.
    assert mse_to_psnr(value) == pytest.approx(metrics["distill/psnr_to_teacher"], rel=1e-5)
    assert loss.item() == pytest.approx(1.0 * value, rel=1e-6)  # the only term, weight 2 * 0.5
    assert not any(k.startswith("distill/") and k[8:] in BUILT_IN for k in metrics)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in task.student.parameters())


def test_a_term_the_task_cannot_feed_fails_when_the_task_is_built(untrained_teacher):
    teacher, scene, render = untrained_teacher
    schedule = ScheduleConfig((Stage("kd", 1.0, ("rgb", "gaussian_kl")),), {"rgb": 1.0, "gaussian_kl": 0.5})
    with pytest.raises(InputError, match="gaussian_kl.*prob_volume"):
        tiny_task(teacher, scene, render, schedule)
