"""Several experts as one teacher: every point is answered by the expert that owns its view."""

from __future__ import annotations

import pytest
import torch

from fieldkd.platform.distill.experts import ExpertTeachers
from fieldkd.platform.distill.inquirers import TrainingRayInquirer
from fieldkd.platform.distill.samples import OnTheFlySource, SampleLayout
from fieldkd.platform.distill.teacher import Teacher
from fieldkd.platform.fields import build_field
from fieldkd.platform.render.renderer import RenderConfig, Renderer
from fieldkd.platform.scenes import load_scene

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def expert(aabb, seed: int) -> Teacher:
    torch.manual_seed(seed)
    return Teacher(build_field("hash", aabb, backend="torch", n_levels=2, log2_hashmap_size=10))


@pytest.fixture(scope="module")
def scene(tiny_blender):
    return load_scene("blender", tiny_blender)


@pytest.fixture(scope="module")
def experts(scene):
    owner = torch.tensor([0, 1] * (len(scene.split("train")) // 2))
    return ExpertTeachers([expert(scene.aabb, 1), expert(scene.aabb, 2)], owner), owner


def test_each_point_is_answered_by_its_views_expert(scene, experts):
    team, owner = experts
    points = scene.aabb[0] + torch.rand(300, 3) * (scene.aabb[1] - scene.aabb[0])
    dirs = torch.nn.functional.normalize(torch.randn(300, 3), dim=-1)
    views = torch.randint(0, len(owner), (300,))
    got = team.query(points, dirs, views)
    for k, member in enumerate(team.experts):
        mine = owner[views] == k
        alone = member.query(points[mine], dirs[mine])
        for name in ("raw_density", "density", "rgb", "feature"):
            assert torch.equal(getattr(got, name)[mine], getattr(alone, name)), (k, name)
    # The experts differ, so routing matters.
    assert not torch.allclose(team.experts[0].query(points, dirs).rgb, team.experts[1].query(points, dirs).rgb)
    # Occupancy is the union: the larger density of the two.
    both = torch.stack([m.density(points) for m in team.experts])
    assert torch.equal(team.density(points), both.max(0).values)


def test_training_rays_carry_their_views_to_the_experts(scene, experts):
    team, owner = experts
    renderer = Renderer(scene.aabb, scene.near, scene.far, scene.background, RenderConfig(samples_per_ray=16,
                                                                                          occupancy=False))
    source = OnTheFlySource(TrainingRayInquirer(scene.split("train"), seed=3), team,
                            SampleLayout.from_renderer(renderer), seed=3)
    batch = source.next(64)
    # The same rays asked of expert 0 alone: equal exactly on rays of views it owns.
    again = OnTheFlySource(TrainingRayInquirer(scene.split("train"), seed=3), team.experts[0],
                           SampleLayout.from_renderer(renderer), seed=3).next(64)
    inquiry = TrainingRayInquirer(scene.split("train"), seed=3).sample(64)
    ours = owner[inquiry.views] == 0
    assert torch.equal(batch.teacher_rgb[ours], again.teacher_rgb[ours])
    assert not torch.allclose(batch.teacher_rgb[~ours], again.teacher_rgb[~ours])


def test_experts_need_views_and_a_valid_owner_table(scene):
    team = ExpertTeachers([expert(scene.aabb, 1)], torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="training_rays"):
        team.query(torch.zeros(2, 3), torch.ones(2, 3) / 3 ** 0.5)
    with pytest.raises(ValueError, match="owners"):
        ExpertTeachers([expert(scene.aabb, 1)], torch.tensor([0, 1]))
    assert team.fingerprint() != ExpertTeachers([expert(scene.aabb, 2)], torch.zeros(4, dtype=torch.long)).fingerprint()
