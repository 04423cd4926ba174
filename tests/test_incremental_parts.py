"""The pure parts of incremental learning: pose interpolation, the trajectory inquirer,
depth / normal / uncertainty losses, the KD ramp, the uncertainty filter, chunks and the
forgetting matrix."""

import math

import numpy as np
import pytest
import torch

from fieldkd.methods.unikd import chunk_of_views, contiguous_chunks, with_overrides
from fieldkd.platform.distill.filters import UncertaintyFilter
from fieldkd.platform.distill.incremental import StreamConfig, kd_weight
from fieldkd.platform.distill.inquirers import TrajectoryInquirer
from fieldkd.platform.errors import InputError
from fieldkd.platform.evaluate.forgetting import forgetting, forgetting_matrix, matrix_figure, matrix_table
from fieldkd.platform.scenes.cameras import Cameras, look_at
from fieldkd.platform.scenes.poses import (along_trajectory, interpolate_poses, matrix_to_quaternion,
                                           quaternion_to_matrix, slerp)
from fieldkd.platform.scenes.generator import room_spec
from fieldkd.platform.scenes.scene import SceneSplit
from fieldkd.platform.scenes.trajectory import loop_poses, path_angles
from fieldkd.platform.train.supervision import (Supervision, Targets, depth_loss, normal_losses, scale_shift_fit,
                                                supervised_loss, uncertainty_loss)


def rotation_z(angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def pose(rot: torch.Tensor, centre) -> torch.Tensor:
    m = torch.eye(4)
    m[:3, :3], m[:3, 3] = rot, torch.as_tensor(centre, dtype=torch.float32)
    return m


def test_quaternions_round_trip_every_branch():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(500, 4, generator=g)
    # Rotations by ~180 degrees about each axis exercise the x, y and z pivots.
    q = torch.cat([q, torch.tensor([[0.0, 1, 0, 0], [0.0, 0, 1, 0], [0.0, 0, 0, 1], [1.0, 0, 0, 0]])])
    rot = quaternion_to_matrix(q)
    assert torch.allclose(rot @ rot.transpose(-1, -2), torch.eye(3).expand_as(rot), atol=1e-5)
    back = quaternion_to_matrix(matrix_to_quaternion(rot))
    assert torch.allclose(back, rot, atol=1e-5)


def test_slerp_turns_at_constant_speed():
    a, b = matrix_to_quaternion(rotation_z(0.0)), matrix_to_quaternion(rotation_z(math.radians(120)))
    for t in (0.0, 0.25, 0.5, 1.0):
        got = quaternion_to_matrix(slerp(a, b, torch.tensor(t)))
        assert torch.allclose(got, rotation_z(math.radians(120) * t), atol=1e-5)
    # The shorter arc: from 0 to 350 degrees goes back by 10 degrees, not forward by 350.
    half = quaternion_to_matrix(slerp(a, matrix_to_quaternion(rotation_z(math.radians(350))), torch.tensor(0.5)))
    assert torch.allclose(half, rotation_z(math.radians(-5)), atol=1e-5)


def test_interpolated_poses_lie_between_their_neighbours():
    frames = torch.stack([pose(rotation_z(math.radians(30 * i)), [i, 2 * i, 0]) for i in range(4)])
    assert torch.allclose(interpolate_poses(frames[0], frames[1], torch.tensor(0.0)), frames[0], atol=1e-6)
    assert torch.allclose(interpolate_poses(frames[0], frames[1], torch.tensor(1.0)), frames[1], atol=1e-6)
    got, lower = along_trajectory(frames, torch.tensor([0.0, 0.5, 1.0, 0.5 / 3]))
    assert lower.tolist() == [0, 1, 2, 0]
    assert torch.allclose(got[0], frames[0], atol=1e-6) and torch.allclose(got[2], frames[3], atol=1e-6)
    assert torch.allclose(got[1, :3, 3], torch.tensor([1.5, 3.0, 0.0]))
    assert torch.allclose(got[1, :3, :3], rotation_z(math.radians(45)), atol=1e-5)
    assert torch.allclose(got[3, :3, 3], torch.tensor([0.5, 1.0, 0.0]), atol=1e-6)


@pytest.mark.parametrize("name", ["indoor", "indoor_b"])
def test_room_walks_do_not_come_back_to_their_start(name):
    # A closed loop would let the last chunk of a stream re-learn the first chunk's views.
    path = room_spec(name).path
    centres = loop_poses(path, 100)[:, :3, 3]
    step = float((centres[1:] - centres[:-1]).norm(dim=-1).mean())
    assert float((centres[-1] - centres[0]).norm()) > 10 * step
    spacing = path_angles(path, 100).diff().abs()
    assert torch.allclose(spacing, torch.full_like(spacing, math.radians(path.turn_deg) / 100))
    assert path.turn_deg < 360


def ring_cameras(n: int, radius: float = 2.0) -> Cameras:
    angles = torch.linspace(0, math.pi, n)
    c2w = torch.stack([look_at(torch.stack([radius * torch.cos(a), radius * torch.sin(a), torch.tensor(0.3)]),
                               torch.zeros(3)) for a in angles])
    ones = torch.ones(n)
    return Cameras(c2w, 20 * ones, 20 * ones, 8 * ones, 6 * ones, 16, 12)


def test_trajectory_inquirer_draws_one_pose_on_the_path_per_batch():
    cams = ring_cameras(5)
    inquirer = TrajectoryInquirer(cams, rays_per_pose=64, seed=3)
    for _ in range(10):
        inquiry = inquirer.sample(64)
        origins = inquiry.rays.origins
        assert torch.allclose(origins, origins[:1].expand_as(origins))  # one pose per batch
        centre = origins[0]
        # On a chord between neighbours 45 degrees apart on the circle of radius 2, at height 0.3.
        radius = float(centre[:2].norm())
        assert 2.0 * math.cos(math.pi / 8) - 1e-4 < radius <= 2.0 + 1e-5 and abs(float(centre[2]) - 0.3) < 1e-5
        assert torch.allclose(inquiry.rays.directions.norm(dim=-1), torch.ones(64), atol=1e-5)
    again = TrajectoryInquirer(cams, rays_per_pose=64, seed=3)
    assert torch.equal(again.sample(64).rays.origins, TrajectoryInquirer(cams, rays_per_pose=64, seed=3)
                       .sample(64).rays.origins)


def test_scale_shift_fit_and_depth_losses():
    target = torch.tensor([1.0, 2.0, 3.0, 5.0, 8.0])
    pred = (target - 0.7) / 2.5
    mask = torch.ones(5, dtype=torch.bool)
    scale, shift = scale_shift_fit(pred, target, mask)
    assert abs(float(scale) - 2.5) < 1e-4 and abs(float(shift) - 0.7) < 1e-4
    assert float(depth_loss(pred, target, mask, "ssi")) < 1e-8
    assert float(depth_loss(pred, target, mask, "plain")) == pytest.approx(float(((pred - target) ** 2).mean()))
    # Masked entries do not count; an empty mask costs nothing.
    off = target.clone()
    off[0] = 100.0
    assert float(depth_loss(target, off, mask & (torch.arange(5) > 0), "plain")) == 0.0
    assert float(depth_loss(pred, target, torch.zeros(5, dtype=torch.bool), "ssi")) == 0.0


def test_normal_losses():
    n = torch.tensor([[0.0, 0.0, 2.0], [1.0, 0.0, 0.0]])
    target = torch.tensor([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0]])
    l1, cos = normal_losses(n, target, torch.tensor([True, False]))
    assert float(l1) == 0.0 and float(cos) == pytest.approx(0.0, abs=1e-7)
    l1, cos = normal_losses(n, target, torch.tensor([False, True]))
    assert float(l1) == pytest.approx(2.0) and float(cos) == pytest.approx(2.0)


def test_uncertainty_loss_is_the_unikd_formula():
    rgb, target = torch.tensor([[0.5, 0.5, 0.5]]), torch.tensor([[0.7, 0.5, 0.1]])
    beta = torch.tensor([0.3], requires_grad=True)
    expected = 0.01 * np.mean(np.array([0.2, 0.0, 0.4]) / (2 * 0.4**2)) + (math.log(0.4) + 3) / 2
    loss = uncertainty_loss(rgb, target, beta)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert float(beta.grad) > 0  # small errors: the log term pulls beta down
    # The optimum is beta + 0.1 = sqrt(0.02 |error|): 0.134 for an error of 0.9.
    small = torch.tensor([0.0], requires_grad=True)
    uncertainty_loss(torch.zeros(1, 3), torch.ones(1, 3) * 0.9, small).backward()
    assert float(small.grad) < 0  # a large error at beta = 0: beta should grow
    large = torch.tensor([0.06], requires_grad=True)
    uncertainty_loss(torch.zeros(1, 3), torch.ones(1, 3) * 0.9, large).backward()
    assert float(large.grad) > 0


@pytest.mark.parametrize("floor,error", [(0.1, 0.9), (0.01, 0.05), (0.01, 0.2)])
def test_uncertainty_loss_optimum_follows_the_floor(floor, error):
    # Minimising over beta lands on sqrt(0.02 |error|) - floor.
    beta = torch.tensor([0.05], requires_grad=True)
    optimiser = torch.optim.Adam([beta], lr=1e-3)
    for _ in range(3000):
        optimiser.zero_grad()
        uncertainty_loss(torch.zeros(1, 3), torch.full((1, 3), error), beta, floor).backward()
        optimiser.step()
    assert float(beta) == pytest.approx(math.sqrt(0.02 * error) - floor, abs=2e-3)


def test_supervised_loss_uses_what_is_given():
    out = {"rgb": torch.full((4, 3), 0.5), "depth": torch.tensor([1.0, 2.0, 3.0, 4.0]),
           "opacity": torch.tensor([1.0, 1.0, 1.0, 0.1]), "normal": torch.tensor([[0.0, 0.0, 1.0]] * 4),
           "uncertainty": torch.zeros(4)}
    targets = Targets(torch.full((4, 3), 0.25), torch.tensor([2.0, 4.0, 6.0, 0.0]), torch.tensor([[0.0, 0, 1]] * 4))
    plain = Supervision(depth=0.5, depth_mode="plain", normal_l1=1.0, normal_cos=1.0, uncertainty=0.0)
    loss, terms = supervised_loss(out, targets, plain)
    assert set(terms) == {"rgb", "depth", "normal_l1", "normal_cos"}
    # depth: rays 0-2 (ray 3 is too transparent and has no target): errors 1, 2, 3.
    assert float(terms["depth"]) == pytest.approx((1 + 4 + 9) / 3)
    assert float(loss) == pytest.approx(0.0625 + 0.5 * 14 / 3)
    _, ssi = supervised_loss(out, targets, Supervision(depth=1.0, depth_mode="ssi", uncertainty=0.0))
    assert float(ssi["depth"]) < 1e-8  # depth x 2 is a scale away
    _, only_rgb = supervised_loss({k: v for k, v in out.items() if k != "uncertainty"}, Targets(targets.rgb),
                                  Supervision(depth=1.0, normal_l1=1.0))
    assert set(only_rgb) == {"rgb"}
    _, l1 = supervised_loss(out, targets, Supervision(rgb="l1"))
    assert float(l1["rgb"]) == pytest.approx(0.25) and "uncertainty" in l1
    valid = Targets(targets.rgb, valid=torch.tensor([False, False, False, False]))
    loss, terms = supervised_loss(out, valid, Supervision())
    assert float(loss) == 0.0 and terms == {}
    with pytest.raises(ValueError, match="depth_mode"):
        Supervision.from_dict({"depth_mode": "metric"})
    with pytest.raises(ValueError, match="unknown supervision"):
        Supervision.from_dict({"depht": 1.0})


def test_kd_ramp_and_stream_span():
    assert kd_weight(0.0) == 0.0 and kd_weight(1.0) == pytest.approx(1.0)
    assert kd_weight(0.5, 2.0) == pytest.approx(1.0)  # 2 * sin^2(pi/4)
    assert kd_weight(0.3, 0.5, "constant") == 0.5
    with pytest.raises(ValueError, match="ramp"):
        kd_weight(0.5, ramp="linear")
    stream = StreamConfig.from_dict({"stream_span": [0.4, 0.6]})
    assert stream.stream_fraction(0.0) == pytest.approx(0.4) and stream.stream_fraction(0.5) == pytest.approx(0.5)
    assert stream.stream_fraction(2.0) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="stream_span"):
        StreamConfig.from_dict({"stream_span": [0.6, 0.4]})


def test_uncertainty_filter_levels():
    rendered = {"uncertainty": torch.tensor([0.01, 0.01, 0.05, 0.01])}  # mean 0.02
    assert UncertaintyFilter(0.03, "pose")(rendered).ray_keep.all()
    rejected = UncertaintyFilter(0.015, "pose")(rendered)
    assert not rejected.ray_keep.any() and rejected.stats["mean_uncertainty"] == pytest.approx(0.02)
    per_ray = UncertaintyFilter(0.02, "ray")(rendered)
    assert per_ray.ray_keep.tolist() == [True, True, False, True] and per_ray.stats["ray_acceptance"] == 0.75
    with pytest.raises(ValueError, match="uncertainty head"):
        UncertaintyFilter(0.02)({"rgb": torch.zeros(2, 3)})
    with pytest.raises(ValueError, match="level"):
        UncertaintyFilter(0.02, "pixel")


def split_of(cameras: Cameras) -> SceneSplit:
    return SceneSplit(torch.zeros(len(cameras), cameras.height, cameras.width, 3), cameras,
                      [f"f{i}" for i in range(len(cameras))])


def test_chunks_and_test_views_follow_the_path():
    assert contiguous_chunks(10, 3) == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    with pytest.raises(ValueError, match="between 1 and the 4"):
        contiguous_chunks(4, 5)
    train = ring_cameras(12)
    test = train[torch.tensor([1, 6, 11])]
    chunks = contiguous_chunks(12, 3)
    assert chunk_of_views(split_of(train), chunks, split_of(test)).tolist() == [0, 1, 2]


def test_with_overrides_sets_dotted_keys_on_a_copy():
    cfg = {"seed": 0, "unikd": {"threshold": 0.02}}
    got = with_overrides(cfg, {"seed": 3, "unikd.threshold": 0.1})
    assert got == {"seed": 3, "unikd": {"threshold": 0.1}} and cfg["unikd"]["threshold"] == 0.02
    with pytest.raises(InputError, match="no such config key"):
        with_overrides(cfg, {"unikd.treshold": 1})


def test_forgetting_matrix_table_and_figure():
    stages = [{"chunk_0/test/psnr": 30.0, "chunk_1/test/psnr": 12.0},
              {"chunk_0/test/psnr": 25.0, "chunk_1/test/psnr": 29.0}]
    matrix = forgetting_matrix(stages, 2)
    assert matrix.tolist() == [[30.0, 12.0], [25.0, 29.0]]
    assert forgetting(matrix).tolist() == [5.0, 0.0]
    table = matrix_table({"unikd": matrix, "joint": matrix[1:]})
    assert table.splitlines() == ["stream\tafter\tchunk_0\tchunk_1", "unikd\tchunk_0\t30.000\t12.000",
                                  "unikd\tchunk_1\t25.000\t29.000", "joint\tall\t25.000\t29.000"]
    fig = matrix_figure({"unikd": matrix, "joint": matrix[1:]})
    assert [ax.get_title() for ax in fig.axes[:2]] == ["unikd", "joint"]
    assert sorted(t.get_text() for t in fig.axes[0].texts) == ["12.0", "25.0", "29.0", "30.0"]
