"""The cascade MVS network: geometry and read-out in closed form, shapes, config round trips."""

from __future__ import annotations

import io

import pytest
import torch

from fieldkd.platform.errors import InputError
from fieldkd.platform.networks.mvs import CascadeMVSNet, build_cascade_mvs
from fieldkd.platform.networks.mvs.depth import (
    centred_hypotheses,
    combined_confidence,
    probability_mass,
    soft_argmin,
    uniform_hypotheses,
    upsample_depth,
)
from fieldkd.platform.networks.mvs.geometry import (
    homography_warp,
    projection,
    warp_with_depth,
)
from fieldkd.platform.networks.mvs.synthetic import collate, plane_scene

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TINY = {"hypotheses": [8, 4, 2], "base_channels": 4, "regularizer_channels": 4}


@pytest.fixture(scope="module")
def scene():
    # baseline 0.23 at depth 4 with focal 64: a 3.68 px disparity, so warps interpolate
    return collate([plane_scene(height=32, width=64, n_src=2, depth=4.0, baseline=0.23)])


def _run(net, batch):
    return net(batch["images"], batch["intrinsics"], batch["extrinsics"], batch["depth_min"], batch["depth_max"])


def test_warping_through_the_true_plane_reproduces_the_reference(scene):
    proj = projection(scene["intrinsics"], scene["extrinsics"])
    ref = scene["images"][:, 0]
    for j in (1, 2):
        warped, valid = warp_with_depth(scene["images"][:, j], proj[:, j], proj[:, 0], scene["depth"])
        wrong, wrong_valid = warp_with_depth(scene["images"][:, j], proj[:, j], proj[:, 0], scene["depth"] * 1.15)
        # The overlap is all but the ~4 columns the source does not see.
        assert 0.85 < valid.float().mean() < 0.97
        err = (warped - ref).abs().amax(1)[valid]
        assert err.max() < 3e-3  # bilinear interpolation of a smooth texture
        assert (wrong - ref).abs().amax(1)[wrong_valid].mean() > 8 * err.mean()  # measured 12x


def test_warp_of_many_planes_matches_one_at_a_time_and_points_behind_are_invalid(scene):
    proj = projection(scene["intrinsics"], scene["extrinsics"])
    planes = uniform_hypotheses(torch.tensor([2.0]), torch.tensor([8.0]), 4, 32, 64)
    volume, valid = homography_warp(scene["images"][:, 1], proj[:, 1], proj[:, 0], planes)
    assert volume.shape == (1, 3, 4, 32, 64) and valid.shape == (1, 4, 32, 64)
    single, _ = warp_with_depth(scene["images"][:, 1], proj[:, 1], proj[:, 0], planes[:, 2])
    torch.testing.assert_close(volume[:, :, 2], single)
    behind, behind_valid = warp_with_depth(scene["images"][:, 1], proj[:, 1], proj[:, 0], -scene["depth"])
    assert not behind_valid.any() and behind.abs().max() == 0


def test_soft_argmin_of_a_one_hot_volume_is_that_hypothesis():
    hyp = uniform_hypotheses(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 9.0]), 8, 4, 5)
    index = torch.randint(0, 8, (2, 4, 5), generator=torch.Generator().manual_seed(0))
    one_hot = torch.nn.functional.one_hot(index, 8).permute(0, 3, 1, 2).float()
    torch.testing.assert_close(soft_argmin(one_hot, hyp), hyp.gather(1, index.unsqueeze(1))[:, 0])
    assert hyp[0, 0, 0, 0] == 1.0 and hyp[1, -1, 0, 0] == 9.0


def test_probability_mass_sums_four_hypotheses_around_the_expected_index():
    uniform = torch.full((1, 8, 2, 2), 1 / 8)  # expected index 3.5 -> hypotheses 2..5
    torch.testing.assert_close(probability_mass(uniform), torch.full((1, 2, 2), 0.5))
    edge = torch.zeros(1, 8, 1, 1)
    edge[0, 0], edge[0, 7] = 0.9, 0.1  # expected 0.7 -> 0..2 (clipped below)
    torch.testing.assert_close(probability_mass(edge), torch.full((1, 1, 1), 0.9))
    both = combined_confidence([torch.full((1, 2, 2), 0.5), torch.full((1, 4, 4), 0.4)], 8, 8)
    torch.testing.assert_close(both, torch.full((1, 8, 8), 0.2))


def test_centred_hypotheses_are_symmetric_with_the_given_spacing():
    depth = torch.tensor([[[5.0, 6.0]]])
    hyp = centred_hypotheses(depth, 4, torch.tensor([0.5]))
    torch.testing.assert_close(hyp[0, :, 0, 0], torch.tensor([4.25, 4.75, 5.25, 5.75]))
    torch.testing.assert_close(hyp.mean(1), depth)


def test_stage_two_hypotheses_centre_on_the_stage_one_depth(scene):
    torch.manual_seed(0)
    net = CascadeMVSNet(**TINY, interval_ratios=[4.0, 1.0, 0.5])
    out = _run(net, scene)
    s1, s2, s3 = out.stages
    base = (8.0 - 2.0) / (8 * 4.0)  # (max - min) / (stage-1 count x its ratio)
    torch.testing.assert_close(s2["hypotheses"].mean(1), upsample_depth(s1["depth"].detach(), 16, 32))
    torch.testing.assert_close(s2["hypotheses"].diff(dim=1), torch.full((1, 3, 16, 32), 1.0 * base))
    torch.testing.assert_close(s3["hypotheses"].diff(dim=1), torch.full((1, 1, 32, 64), 0.5 * base))
    torch.testing.assert_close(s3["hypotheses"].mean(1), upsample_depth(s2["depth"].detach(), 32, 64))
    # stage 1 sweeps the whole range
    assert s1["hypotheses"][0, 0].min() == 2.0 and s1["hypotheses"][0, -1].max() == 8.0


def test_tiny_forward_and_backward_shapes_and_gradients(scene):
    torch.manual_seed(0)
    net = build_cascade_mvs({**TINY, "hypotheses": [8, 5, 3]})  # counts need not be multiples of 8
    out = _run(net, scene)
    sizes = [(8, 16), (16, 32), (32, 64)]
    for stage, count, (h, w), ch in zip(out.stages, [8, 5, 3], sizes, [16, 8, 4]):
        assert stage["prob_volume"].shape == stage["hypotheses"].shape == (1, count, h, w)
        assert stage["depth"].shape == stage["confidence"].shape == (1, h, w)
        assert stage["features"].shape == (1, ch, h, w) and stage["view_features"].shape == (1, 3, ch, h, w)
        torch.testing.assert_close(stage["prob_volume"].sum(1), torch.ones(1, h, w))
        assert "log_var" not in stage
    assert out.depth.shape == out.confidence.shape == (1, 32, 64)
    assert bool(((out.depth > 2.0) & (out.depth < 8.0)).all()) and bool(((out.confidence >= 0) & (out.confidence <= 1)).all())
    sum(s["depth"].mean() for s in out.stages).backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_uncertainty_head_on_and_off(scene):
    torch.manual_seed(0)
    teacher = build_cascade_mvs({**TINY, "uncertainty": True})
    student = build_cascade_mvs(TINY)
    out = _run(teacher, scene)
    for stage in out.stages:
        assert stage["log_var"].shape == stage["depth"].shape and torch.isfinite(stage["log_var"]).all()
    extra = set(teacher.state_dict()) - set(student.state_dict())
    assert extra and all(k.startswith("uncertainty.") for k in extra)
    assert set(student.state_dict()) < set(teacher.state_dict())
    # a teacher's weights start a student: only the head is left over
    result = student.load_state_dict(teacher.state_dict(), strict=False)
    assert not result.missing_keys and set(result.unexpected_keys) == extra


def test_state_dict_round_trips_through_a_checkpoint_into_a_fresh_net(scene):
    torch.manual_seed(0)
    teacher = build_cascade_mvs({**TINY, "uncertainty": True})
    _run(teacher, scene)  # moves the batch-norm statistics off their initial values
    buffer = io.BytesIO()
    torch.save({"config": teacher.config, "net": teacher.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    torch.manual_seed(1)
    fresh = build_cascade_mvs(saved["config"])
    fresh.load_state_dict(saved["net"], strict=True)
    assert fresh.config == teacher.config
    teacher.eval(), fresh.eval()
    with torch.no_grad():
        a, b = _run(teacher, scene), _run(fresh, scene)
    torch.testing.assert_close(a.depth, b.depth)
    torch.testing.assert_close(a.stages[0]["log_var"], b.stages[0]["log_var"])


def test_bad_sizes_and_configs_are_one_line_input_errors(scene):
    net = build_cascade_mvs(TINY)
    cropped = {**scene, "images": scene["images"][..., :48]}
    with pytest.raises(InputError, match="multiples of 32, got 32x48"):
        _run(net, cropped)
    for bad, key in [({"hypotheses": [8, 0, 2]}, "hypotheses"), ({"hypotheses": [8, 4]}, "hypotheses"),
                     ({"interval_ratios": [4, -1, 1]}, "interval_ratios"), ({"widht": 3}, "unknown keys")]:
        with pytest.raises(InputError, match=key) as err:
            build_cascade_mvs(bad)
        assert "\n" not in str(err.value)


def test_geometry_stays_float32_under_mixed_precision(scene):
    # The Trainer runs steps under autocast on a GPU; bf16 projections would misplace pixels.
    proj = projection(scene["intrinsics"], scene["extrinsics"])
    plain, _ = warp_with_depth(scene["images"][:, 1], proj[:, 1], proj[:, 0], scene["depth"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        proj16 = projection(scene["intrinsics"] * 40, scene["extrinsics"])  # a DTU-sized focal length
        assert proj16.dtype == torch.float32
        mixed, _ = warp_with_depth(scene["images"][:, 1], projection(scene["intrinsics"], scene["extrinsics"])[:, 1],
                                   proj[:, 0], scene["depth"])
    torch.testing.assert_close(mixed.float(), plain, atol=1e-5, rtol=0)
