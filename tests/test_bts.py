"""The BTS density field: geometry in closed form, the heads, the losses and a few training steps."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from fieldkd.platform.errors import InputError
from fieldkd.platform.networks.bts import (
    BTSNet,
    DistilledBTSTask,
    SelfSupervisedBTSTask,
    build_bts,
    density_in_input_frame,
    kd_density_loss,
    predict_occupied,
    reconstruction_loss,
    render_input_depth,
)
from fieldkd.platform.networks.bts.geometry import (
    inverse_depth_samples,
    pixel_rays,
    positional_encoding,
    to_camera,
)
from fieldkd.platform.networks.bts.render import (
    expected_depth,
    ray_weights,
    sample_colours,
)
from fieldkd.platform.networks.bts.tasks import frustum_points
from fieldkd.platform.train.loop import Trainer, TrainerConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = dict(blocks=[1, 1, 1], encoder_widths=[8, 8, 16, 16], decoder_widths=[8, 8, 16, 16], feature_channels=16,
            z_near=3.0, z_far=20.0)
H = W = 32
K = torch.tensor([[30.0, 0.0, 15.5], [0.0, 30.0, 15.5], [0.0, 0.0, 1.0]])
PLANE = 6.0


def _pose(tx=0.0, yaw_deg=0.0):
    a = math.radians(yaw_deg)
    pose = torch.eye(4)
    pose[:3, :3] = torch.tensor([[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0], [-math.sin(a), 0.0, math.cos(a)]])
    pose[0, 3] = tx
    return pose


def _texture(x, y):
    # about half a radian per pixel at the plane: textured, but smooth for bilinear sampling
    return torch.stack([0.5 + 0.35 * torch.sin(1.5 * x + 1.0) * torch.cos(1.0 * y),
                        0.5 + 0.35 * torch.sin(1.0 * y - 2.0 * x),
                        0.5 + 0.35 * torch.cos(2.5 * x) * torch.sin(1.0 + 1.5 * y)], dim=0)


def _render_plane(pose):
    """The image a camera at ``pose`` sees of the textured plane z = PLANE (world = frame 0's camera)."""
    vs, us = torch.meshgrid(torch.arange(H).float(), torch.arange(W).float(), indexing="ij")
    origins, dirs = pixel_rays(K, pose, torch.stack([us, vs], -1).reshape(-1, 2))
    t = (PLANE - origins[:, 2]) / dirs[:, 2]
    hit = origins + t[:, None] * dirs
    return _texture(hit[:, 0], hit[:, 1]).reshape(3, H, W)


@pytest.fixture(scope="module")
def sequence():
    poses = torch.stack([_pose(0.0), _pose(0.5)])
    return {"images": torch.stack([_render_plane(p) for p in poses]), "intrinsics": K.expand(2, 3, 3).clone(),
            "cam_to_world": poses}


def _net(**extra):
    torch.manual_seed(0)
    return build_bts({**TINY, **extra})


# -- geometry -------------------------------------------------------------------------------------

def test_positional_encoding_width_follows_the_config():
    assert positional_encoding(torch.zeros(5, 3), 6).shape == (5, 39)
    assert BTSNet().in_width == 64 + 39 == 103  # the official input width
    assert _net().in_width == 16 + 39
    assert _net(n_freqs=4).in_width == 16 + 27
    assert _net(n_freqs=4).single_head[0].in_features == 43


def test_inverse_depth_samples_endpoints_and_monotonicity():
    z = inverse_depth_samples(3.0, 80.0, 64)
    assert z[0].item() == pytest.approx(3.0, rel=1e-5) and z[-1].item() == pytest.approx(80.0, rel=1e-5)
    assert (z[1:] > z[:-1]).all()
    steps = (1.0 / z[1:]) - (1.0 / z[:-1])
    assert torch.allclose(steps, steps[0].expand_as(steps), atol=1e-6)  # equal steps in 1/z
    torch.manual_seed(0)
    jittered = inverse_depth_samples(3.0, 80.0, 16, (100,), jitter=True)
    assert (jittered[:, 1:] > jittered[:, :-1]).all() and jittered.min() >= 3.0 and jittered.max() <= 80.0


def test_feature_sampled_at_a_projected_point_is_the_feature_at_that_pixel():
    net = _net()
    torch.manual_seed(1)
    feats = torch.randn(1, 1, 16, H, W)
    pose = _pose(0.7, 20.0)
    pose[1, 3] = -0.3
    pixels = torch.tensor([[5.0, 7.0], [0.0, 31.0], [20.0, 11.0]])
    origins, dirs = pixel_rays(K, pose, pixels)
    depth = torch.tensor([[4.0], [9.0], [15.0]])
    points = origins + depth * dirs
    inputs, valid = net.point_inputs(feats, K[None, None], pose[None, None], points[None])
    assert valid.all()
    expected = feats[0, 0, :, pixels[:, 1].long(), pixels[:, 0].long()].T
    assert torch.allclose(inputs[0, 0, :, :16], expected, atol=1e-5)
    assert torch.allclose(to_camera(points, pose)[:, 2], depth[:, 0], atol=1e-5)
    # behind the camera: invalid, and the density there is 0
    behind = origins - depth * dirs
    _, valid = net.point_inputs(feats, K[None, None], pose[None, None], behind[None])
    assert not valid.any()
    out = net.density(feats, K[None, None], pose[None, None], behind[None], head="single")
    assert not out.valid.any() and (out.density == 0).all()


def test_ray_weights_sum_to_one_and_an_empty_ray_ends_at_the_far_plane():
    z = inverse_depth_samples(3.0, 20.0, 16, (2,))
    density = torch.zeros(2, 16)
    density[1, 5] = 1e4
    w = ray_weights(density, z)
    assert torch.allclose(w.sum(-1), torch.ones(2))
    assert expected_depth(w, z)[0] == pytest.approx(20.0) and expected_depth(w, z)[1] == pytest.approx(z[1, 5].item())


def test_image_based_rendering_reproduces_the_input_view_at_the_true_depth(sequence):
    """Colours of frame 1 sampled at the true surface of frame 0's rays match frame 0's pixels."""
    z = inverse_depth_samples(3.0, 12.0, 7)  # 1/6 is on the inverse-depth grid: z[4] == 6
    assert z[4].item() == pytest.approx(PLANE)
    vs, us = torch.meshgrid(torch.arange(4, 28).float(), torch.arange(4, 28).float(), indexing="ij")
    uv = torch.stack([us, vs], -1).reshape(-1, 2)
    origins, dirs = pixel_rays(K, sequence["cam_to_world"][0], uv)
    target = sequence["images"][0][:, uv[:, 1].long(), uv[:, 0].long()].T
    errors = []
    for k in (4, 1):
        colours, valid = sample_colours(sequence["images"][1:], sequence["intrinsics"][1:],
                                        sequence["cam_to_world"][1:], origins + z[k] * dirs)
        errors.append((colours[0][valid[0]] - target[valid[0]]).abs().mean().item())
    assert errors[0] < 0.01 and errors[0] < 0.2 * errors[1], errors


# -- heads ----------------------------------------------------------------------------------------

def test_each_head_names_itself_and_the_head_is_required(sequence):
    net = _net().eval()
    batch = [sequence[k][None] for k in ("images", "intrinsics", "cam_to_world")]
    points = torch.tensor([[[0.0, 0.0, 6.0], [1.0, 0.5, 9.0]]])
    for head in ("single", "multi"):
        out = net(*batch, points, head=head)
        assert out.head == head and out.density.shape == (1, 2) and out.valid.all() and (out.density > 0).all()
    with pytest.raises(TypeError):
        net(*batch, points)  # no silent default head
    # the evaluation helper takes points in the input camera's frame and says which head it used
    moved = {**sequence, "cam_to_world": torch.stack([_pose(1.0, 10.0), _pose(1.5, 10.0)])}
    world = moved["cam_to_world"][0, :3, :3] @ points[0].T + moved["cam_to_world"][0, :3, 3:]
    net.train()
    occupied, head = predict_occupied(net, moved["images"], moved["intrinsics"], moved["cam_to_world"], points[0],
                                      head="single", threshold=0.0)
    assert head == "single" and occupied.all() and net.training  # the training mode is restored
    direct = net.eval()(*[moved[k][None] for k in ("images", "intrinsics", "cam_to_world")], world.T[None],
                        head="single")
    helper = density_in_input_frame(net, moved["images"], moved["intrinsics"], moved["cam_to_world"], points[0],
                                    head="single")
    assert torch.allclose(direct.density[0], helper.density, atol=1e-6)
    with pytest.raises(ValueError):
        net(*batch, points, head="coarse")


def test_multi_view_softmax_ignores_views_that_do_not_see_the_point(sequence):
    net = _net().eval()
    images = sequence["images"][None]
    intrinsics = sequence["intrinsics"][None]
    away = torch.stack([_pose(0.0), _pose(0.0, 180.0)])[None]  # view 1 looks backwards
    point = torch.tensor([[[0.2, 0.1, 7.0]]])
    feats = net.encode(images)
    both = net.density(feats, intrinsics, away, point, head="multi")
    only_first = net.density(feats[:, :1], intrinsics[:, :1], away[:, :1], point, head="multi")
    changed = net.density(net.encode(torch.stack([images[0, 0], 1 - images[0, 1]])[None]), intrinsics, away, point,
                          head="multi")
    assert torch.allclose(both.density, only_first.density) and torch.allclose(both.density, changed.density)
    # a view that does see the point does count (so the test above can fail)
    poses = sequence["cam_to_world"][None]
    seen = net.density(net.encode(images), intrinsics, poses, point, head="multi")
    seen_changed = net.density(net.encode(torch.stack([images[0, 0], 1 - images[0, 1]])[None]), intrinsics, poses,
                               point, head="multi")
    assert not torch.allclose(seen.density, seen_changed.density)
    # view dropout with p = 1 keeps the first view only
    dropping = _net(view_dropout=1.0).train()
    feats = dropping.encode(images)
    dropped = dropping.density(feats, intrinsics, poses, point, head="multi", view_dropout=True)
    first = dropping.density(feats[:, :1], intrinsics[:, :1], poses[:, :1], point, head="multi", view_dropout=False)
    assert torch.allclose(dropped.density, first.density)


def test_pretrained_weights_load_without_code_and_bad_files_are_input_errors(tmp_path, sequence):
    source, target = _net(), _net(n_freqs=6)
    torch.nn.init.constant_(target.single_head[2].bias, 3.0)
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": source.state_dict()}, path)
    target.load_pretrained(path)
    points = torch.tensor([[[0.0, 0.0, 6.0]]])
    batch = [sequence[k][None] for k in ("images", "intrinsics", "cam_to_world")]
    assert torch.equal(source.eval()(*batch, points, head="single").density,
                       target.eval()(*batch, points, head="single").density)
    built = build_bts({**TINY, "pretrained": str(path)})
    assert torch.equal(built.single_head[2].bias, source.single_head[2].bias)
    (tmp_path / "code.pt").write_bytes(b"not a torch file")
    with pytest.raises(InputError):
        target.load_pretrained(tmp_path / "code.pt")
    with pytest.raises(InputError):
        target.load_pretrained(tmp_path / "missing.pt")
    torch.save(_net(feature_channels=8).state_dict(), tmp_path / "other.pt")
    with pytest.raises(InputError):
        target.load_pretrained(tmp_path / "other.pt")


# -- losses ---------------------------------------------------------------------------------------

def test_kd_term_is_zero_for_identical_densities_and_never_reaches_the_teacher():
    torch.manual_seed(0)
    teacher = (torch.rand(50) * 3).requires_grad_()
    student = teacher.detach().clone().requires_grad_()
    assert kd_density_loss(student, teacher).item() == 0.0
    shifted = (student + 0.1 * torch.randn(50)).clamp(min=0)
    mask = torch.arange(50) < 40
    loss = kd_density_loss(shifted, teacher, mask)
    loss.backward()
    assert loss.item() > 0 and teacher.grad is None and student.grad.abs().sum() > 0
    assert student.grad[40:].abs().sum() == 0  # outside the frustum mask: no gradient
    # clipped to [0, 2]: densities both above 2 agree
    assert kd_density_loss(torch.tensor([5.0]), torch.tensor([9.0])).item() == 0.0
    assert kd_density_loss(torch.tensor([1.0]), torch.tensor([0.5])).item() == pytest.approx(1e-2 * 0.5)


def test_kd_clip_on_the_teacher_only_still_pulls_an_overfilled_student_down():
    teacher = torch.tensor([0.1, 3.0, 3.0, 0.5])
    student = torch.tensor([5.0, 5.0, 1.0, 0.2], requires_grad=True)
    # official: both clipped to 2; the first sample (student 5 over teacher 0.1) has no gradient
    both = kd_density_loss(student, teacher, weight=1.0, clip=2.0)
    assert both.item() == pytest.approx((1.9 + 0.0 + 1.0 + 0.3) / 4)
    (grad,) = torch.autograd.grad(both, student)
    assert grad.tolist() == pytest.approx([0.0, 0.0, -0.25, -0.25])
    # teacher-side clip: |5 - 0.1|, nothing for a student above a saturated teacher, up to 2 below it
    one = kd_density_loss(student, teacher, weight=1.0, clip=2.0, clip_form="teacher")
    assert one.item() == pytest.approx((4.9 + 0.0 + 1.0 + 0.3) / 4)
    (grad,) = torch.autograd.grad(one, student)
    assert grad.tolist() == pytest.approx([0.25, 0.0, -0.25, -0.25])
    with pytest.raises(ValueError):
        kd_density_loss(student, teacher, clip_form="student")


def test_reconstruction_takes_the_best_usable_frame_and_drops_invalid_rays():
    torch.manual_seed(0)
    target = torch.rand(2, 3, 8, 8)
    good, bad = target.clone(), torch.rand(2, 3, 8, 8)
    invalid = torch.zeros(2, 2, 8, 8)
    loss, kept = reconstruction_loss(torch.stack([bad, good]), target, invalid)
    assert loss.item() == pytest.approx(0.0, abs=1e-6) and kept == 1.0
    invalid[1, 0] = 0.95  # the good frame is unusable for patch 0's rays
    loss, kept = reconstruction_loss(torch.stack([bad, good]), target, invalid)
    assert loss.item() > 0.05 and kept == 1.0
    invalid[0, 0] = 0.95  # no usable frame for patch 0: its rays are dropped
    loss, kept = reconstruction_loss(torch.stack([bad, good]), target, invalid)
    assert loss.item() == pytest.approx(0.0, abs=1e-6) and kept == 0.5


# -- training -------------------------------------------------------------------------------------

TASK = dict(patch_size=8, patches_per_frame=4, n_samples=16, near=3.0, far=20.0)


def _measure(task, batch):
    torch.manual_seed(123)
    with torch.no_grad():
        return task.batch_loss(batch)[0].item()


def _fit(task, steps, lr=3e-3):
    cfg = TrainerConfig(steps=steps, lr=lr, optimizer="adam", schedule="constant", warmup_steps=0, amp=False,
                        progress=False, log_every=1000, checkpoint_every=0, eps=1e-8)
    return Trainer(cfg, show_progress=False).fit(task)


def _depth_error(net, sequence, head):
    depth = render_input_depth(net, sequence["images"], sequence["intrinsics"], sequence["cam_to_world"], head=head,
                               n_samples=32, near=3.0, far=20.0)
    return (depth - PLANE).abs().mean().item()


@pytest.mark.parametrize("head", ["single", "multi"])
def test_self_supervised_steps_reduce_the_loss_and_find_the_plane(sequence, head):
    net = _net()
    task = SelfSupervisedBTSTask(net, itertools.repeat(sequence), "cpu", TASK, head)
    net.train()
    before, depth_before = _measure(task, sequence), _depth_error(net, sequence, head)
    _fit(task, 12)
    net.train()
    after, depth_after = _measure(task, sequence), _depth_error(net, sequence, head)
    # measured after 12 steps: loss ratios 0.13 (single) and 0.39 (multi); the input view's mean
    # depth error (1.8 m untrained, the rays end too early) ratios 0.53 and 0.36
    assert after < 0.6 * before, (before, after)
    assert depth_after < 0.75 * depth_before, (depth_before, depth_after)


def test_shared_network_distillation_reduces_the_loss_and_the_kd_gradient_spares_the_teacher(sequence):
    net = _net()
    task = DistilledBTSTask(net, net, itertools.repeat(sequence), "cpu", TASK)
    net.train()
    images, intrinsics, poses = (sequence[k][None] for k in ("images", "intrinsics", "cam_to_world"))
    points = torch.tensor([[0.0, 0.0, 5.0], [0.5, -0.2, 8.0], [1.0, 0.3, 12.0]])
    rendered, kd = task.item_density_fn(images, intrinsics, poses)(points)
    assert [o.head for o in rendered] == ["multi"]  # the teacher keeps learning from the images
    kd.backward()
    teacher_grads = [p.grad for m in (net.multi_view, net.multi_fuse) for p in m.parameters()]
    assert all(g is None for g in teacher_grads) and any(p.grad is not None for p in net.single_head.parameters())
    net.zero_grad(set_to_none=True)

    before = _measure(task, sequence)
    _fit(task, 12)
    net.train()
    after = _measure(task, sequence)
    assert after < 0.7 * before, (before, after)  # measured: 0.41


def _kd(task, sequence):
    torch.manual_seed(5)
    images, intrinsics, poses = (sequence[k][None] for k in ("images", "intrinsics", "cam_to_world"))
    with torch.no_grad():
        points = torch.rand(500, 3) * torch.tensor([4.0, 2.0, 14.0]) + torch.tensor([-2.0, -1.0, 4.0])
        return task.item_density_fn(images, intrinsics, poses)(points)[1].item()


def test_a_separate_teacher_is_frozen_and_the_student_moves_towards_it(sequence):
    teacher, student = _net(), _net()
    torch.nn.init.constant_(teacher.multi_fuse[2].bias, 1.0)  # a teacher whose densities differ
    task = DistilledBTSTask(student, teacher, itertools.repeat(sequence), "cpu", {**TASK, "kd_weight": 1.0})
    frozen = {k: v.clone() for k, v in teacher.state_dict().items()}
    student.train()
    before, kd_before = _measure(task, sequence), _kd(task, sequence)
    assert kd_before > 0.1
    _fit(task, 12)
    student.train()
    after, kd_after = _measure(task, sequence), _kd(task, sequence)
    assert all(torch.equal(frozen[k], v) for k, v in teacher.state_dict().items())
    assert all(p.grad is None for p in teacher.parameters())
    assert kd_after < 0.5 * kd_before and after < 0.6 * before, (kd_before, kd_after, before, after)  # measured 0.09, 0.34
    with pytest.raises(InputError):
        DistilledBTSTask(student, teacher, iter([]), "cpu", {**TASK, "render_head": "multi"})


def test_a_kd_only_student_has_no_photometric_term_and_still_follows_its_teacher(sequence):
    teacher, student = _net(), _net()
    torch.nn.init.constant_(teacher.multi_fuse[2].bias, 1.0)
    task = DistilledBTSTask(student, teacher, itertools.repeat(sequence), "cpu",
                            {**TASK, "kd_weight": 1.0, "render_head": "none"})
    student.train()
    torch.manual_seed(7)
    loss, metrics, n = task.batch_loss(sequence)
    assert not any("photometric" in key or "smoothness" in key for key in metrics), metrics
    assert loss.item() == pytest.approx(metrics["train/kd"], rel=1e-6) and n > 0  # the loss is the KD term
    kd_before = _kd(task, sequence)
    _fit(task, 12)
    assert _kd(task, sequence) < 0.5 * kd_before
    with pytest.raises(InputError):  # a shared network would have no image loss left for its teacher
        DistilledBTSTask(student, student, iter([]), "cpu", {**TASK, "render_head": "none"})


def test_frustum_points_project_inside_the_image_between_near_and_far():
    K = torch.tensor([[50.0, 0.0, 31.5], [0.0, 50.0, 15.5], [0.0, 0.0, 1.0]])
    pose = _pose(1.5, 20.0)
    torch.manual_seed(0)
    points = frustum_points(K, pose, (32, 64), 4000, 3.0, 20.0)
    cam = to_camera(points, pose)
    uv = cam[:, :2] / cam[:, 2:] @ K[:2, :2].T + K[:2, 2]
    assert cam[:, 2].min() >= 3.0 - 1e-4 and cam[:, 2].max() <= 20.0 + 1e-4
    assert uv[:, 0].min() >= -0.5 - 1e-3 and uv[:, 0].max() <= 63.5 + 1e-3
    assert uv[:, 1].min() >= -0.5 - 1e-3 and uv[:, 1].max() <= 31.5 + 1e-3
    # uniform in depth and over the image: each half holds about half the points
    assert abs(float((cam[:, 2] < 11.5).float().mean()) - 0.5) < 0.04
    assert abs(float((uv[:, 0] < 31.5).float().mean()) - 0.5) < 0.04


def test_extra_kd_points_enter_the_kd_term_but_not_the_rendering(sequence):
    teacher, student = _net(), _net()
    torch.nn.init.constant_(teacher.multi_fuse[2].bias, 1.0)
    images, intrinsics, poses = (sequence[k][None] for k in ("images", "intrinsics", "cam_to_world"))
    points = torch.rand(300, 3) * torch.tensor([4.0, 2.0, 14.0]) + torch.tensor([-2.0, -1.0, 4.0])
    kd = {}
    for extra in (0, 2000):
        task = DistilledBTSTask(student, teacher, iter([]), "cpu", {**TASK, "kd_points": extra})
        with torch.no_grad():
            rendered, kd[extra] = task.item_density_fn(images, intrinsics, poses)(points)
        assert [out.density.shape[0] for out in rendered] == [300]  # only the ray samples are rendered
    assert kd[2000] != kd[0]


def test_geometry_stays_exact_under_mixed_precision(sequence):
    """The loop autocasts on GPUs; projections and feature sampling must not drop to bf16."""
    net = _net()
    K_wide = torch.tensor([[500.0, 0.0, 319.5], [0.0, 500.0, 95.5], [0.0, 0.0, 1.0]])
    pixels = torch.tensor([[600.25, 150.75]])
    origins, dirs = pixel_rays(K_wide, _pose(0.3, 5.0), pixels)
    points = origins + 47.0 * dirs
    feats = torch.randn(1, 1, 16, 192, 640)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inputs, valid = net.point_inputs(feats, K_wide[None, None], _pose(0.3, 5.0)[None, None], points[None])
        task = SelfSupervisedBTSTask(net, iter([]), "cpu", TASK, "multi")
        loss, _, _ = task.batch_loss(sequence)
    exact, _ = net.point_inputs(feats, K_wide[None, None], _pose(0.3, 5.0)[None, None], points[None])
    assert valid.all() and torch.allclose(inputs[..., :16].float(), exact[..., :16], atol=1e-3)
    assert torch.isfinite(loss)


def test_head_learning_rate_scale_splits_the_heads_from_the_encoder_and_reaches_the_optimizer(sequence):
    net = _net()
    names = {id(p): n for n, p in net.named_parameters()}
    default = SelfSupervisedBTSTask(net, itertools.repeat(sequence), "cpu", TASK, "single").param_groups(1e-4)
    assert [g["lr"] for g in default] == [1e-4, 1e-4]  # scale 1: the official single rate
    task = SelfSupervisedBTSTask(net, itertools.repeat(sequence), "cpu", {**TASK, "head_lr_scale": 30.0}, "single")
    body, heads = task.param_groups(1e-4)
    assert body["lr"] == 1e-4 and heads["lr"] == pytest.approx(3e-3)
    assert all(names[id(p)].startswith("backbone.") for p in body["params"])
    assert {names[id(p)].split(".")[0] for p in heads["params"]} == {"single_head", "multi_view", "multi_fuse"}
    assert len(body["params"]) + len(heads["params"]) == len(list(net.parameters()))  # each parameter once
    # a frozen teacher's parameters are in no group; the student's heads get the scaled rate
    student, teacher = _net(), _net()
    groups = DistilledBTSTask(student, teacher, itertools.repeat(sequence), "cpu",
                              {**TASK, "head_lr_scale": 10.0}).param_groups(1e-4)
    assert [g["lr"] for g in groups] == [1e-4, pytest.approx(1e-3)]
    assert not {id(p) for p in teacher.parameters()} & {id(p) for g in groups for p in g["params"]}
    # the trainer keeps each group's rate: after one step a head weight moved ~30x an encoder weight
    head_w, body_w = net.single_head[0].weight, next(net.backbone.parameters())
    before = head_w.detach().clone(), body_w.detach().clone()
    _fit(task, 1, lr=1e-4)
    moved_head = (head_w.detach() - before[0]).abs().max().item()
    moved_body = (body_w.detach() - before[1]).abs().max().item()
    assert moved_head == pytest.approx(3e-3, rel=0.05) and moved_body == pytest.approx(1e-4, rel=0.05)
    with pytest.raises(InputError):
        SelfSupervisedBTSTask(net, itertools.repeat(sequence), "cpu", {**TASK, "head_lr_scale": 0.0},
                              "single").param_groups(1e-4)


def test_a_student_with_a_frozen_encoder_keeps_its_features_and_learns_in_its_head(sequence):
    teacher, student = _net(), _net()
    torch.nn.init.constant_(teacher.multi_fuse[2].bias, 1.0)
    task = DistilledBTSTask(student, teacher, itertools.repeat(sequence), "cpu",
                            {**TASK, "kd_weight": 1.0, "render_head": "none", "train_encoder": False})
    names = {id(p): n for n, p in student.named_parameters()}
    trained = {names[id(p)].split(".")[0] for g in task.param_groups(1e-4) for p in g["params"]}
    assert trained == {"single_head", "multi_view", "multi_fuse"}
    student.eval()
    kd_before = _kd(task, sequence)
    backbone = {k: v.clone() for k, v in student.backbone.state_dict().items()}  # running BatchNorm statistics too
    head = student.single_head[0].weight.detach().clone()
    _fit(task, 12)
    assert all(torch.equal(backbone[k], v) for k, v in student.backbone.state_dict().items())
    assert not torch.equal(head, student.single_head[0].weight)
    student.eval()
    assert _kd(task, sequence) < 0.5 * kd_before


def test_the_kd_teacher_can_see_fewer_views_than_the_multi_head_encodes(sequence):
    teacher, student = _net(), _net()
    images, intrinsics, poses = (sequence[k][None] for k in ("images", "intrinsics", "cam_to_world"))
    points = torch.rand(400, 3) * torch.tensor([4.0, 2.0, 14.0]) + torch.tensor([-2.0, -1.0, 4.0])
    teacher.eval(), student.eval()
    with torch.no_grad():
        single = student(images, intrinsics, poses, points[None], head="single")
        kd = {}
        for views in (1, 2):
            task = DistilledBTSTask(student, teacher, iter([]), "cpu", {**TASK, "kd_weight": 1.0,
                                                                       "kd_teacher_views": views})
            student.eval()
            kd[views] = task.item_density_fn(images, intrinsics, poses)(points)[1].item()
            target = teacher(images[:, :views], intrinsics[:, :views], poses[:, :views], points[None], head="multi")
            expected = kd_density_loss(single.density[0], target.density[0], single.valid[0], 1.0, 2.0, "both")
            assert kd[views] == pytest.approx(expected.item(), rel=1e-5)
    assert kd[1] != pytest.approx(kd[2], rel=1e-3)  # the second view changes the teacher's densities
    with pytest.raises(InputError):
        DistilledBTSTask(student, teacher, iter([]), "cpu", {**TASK, "kd_teacher_views": 0})
