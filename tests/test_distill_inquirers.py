"""Inquirers (where the teacher is asked) and filters (what the student learns from)."""

import math

import pytest
import torch

from fieldkd.platform.distill.filters import FilterResult, FrustumFilter, combine, in_frustum
from fieldkd.platform.distill.inquirers import (BoxPointInquirer, CameraBoxInquirer, SphereInquirer,
                                                TrainingRayInquirer, camera_up, elevations, look_at_many)
from fieldkd.platform.distill.samples import OnTheFlySource, SampleLayout
from fieldkd.platform.distill.teacher import Teacher
from fieldkd.platform.fields import build_field
from fieldkd.platform.render.composite import ray_aabb_intersect
from fieldkd.platform.scenes import Cameras, load_scene
from fieldkd.platform.scenes.cameras import look_at
from fieldkd.platform.train.photometric import PixelSampler


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def scene(tiny_blender):
    return load_scene("blender", tiny_blender)


def pixel_of(cameras: Cameras, cam: torch.Tensor, c2w: torch.Tensor, directions: torch.Tensor):
    """Where world directions land in the image of pose c2w with the intrinsics of training camera cam."""
    local = torch.einsum("nji,nj->ni", c2w[:, :3, :3], directions)
    depth = -local[:, 2]
    px = cameras.fx[cam] * local[:, 0] / depth + cameras.cx[cam] - 0.5
    py = -cameras.fy[cam] * local[:, 1] / depth + cameras.cy[cam] - 0.5
    return px, py


def test_look_at_many_matches_look_at_and_survives_looking_straight_up():
    eyes = torch.tensor([[4.0, 1.0, 2.0], [-3.0, 2.0, -1.0]])
    many = look_at_many(eyes, torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]))
    for i in range(2):
        assert torch.allclose(many[i], look_at(eyes[i], torch.zeros(3)), atol=1e-6)
    up = look_at_many(torch.tensor([[0.0, 0.0, 3.0]]), torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]))[0]
    rot = up[:3, :3]
    assert torch.isfinite(up).all() and torch.allclose(rot.T @ rot, torch.eye(3), atol=1e-6)
    assert torch.allclose(-rot[:, 2], torch.tensor([0.0, 0.0, -1.0]))  # still looks at the target


def test_sphere_poses_look_at_the_centre_within_the_camera_band(scene):
    cams = scene.split("train").cameras
    inq = SphereInquirer(cams, scene.aabb, rays_per_pose=4, seed=3)
    assert torch.dot(camera_up(cams), torch.tensor([0.0, 0.0, 1.0])) > 0.99  # the generator's world is z-up
    got = inq.sample(400)
    centre = scene.aabb.mean(0)
    eyes = got.poses[:, :3, 3]
    radius = (eyes - centre).norm(dim=-1)
    lo, hi = inq.radius
    assert (radius >= lo - 1e-4).all() and (radius <= hi + 1e-4).all()
    elev, cam_elev = elevations(eyes, centre, inq.up), elevations(cams.centers, centre, inq.up)
    assert (elev >= cam_elev.min() - 1e-4).all() and (elev <= cam_elev.max() + 1e-4).all()
    forward = -got.poses[:, :3, 2]
    assert torch.allclose((forward * (centre - eyes) / radius[:, None]).sum(-1), torch.ones(100), atol=1e-5)
    # Every ray starts at its pose and goes through an integer pixel of a training camera's image.
    pose = got.pose_index
    assert torch.allclose(got.rays.origins, eyes[pose])
    in_pose = (got.rays.directions * forward[pose]).sum(-1)
    assert (in_pose > math.cos(math.radians(60))).all()
    # Most rays of an object-centred orbit cross the scene box.
    t_near, t_far = ray_aabb_intersect(got.rays.origins, got.rays.directions, scene.aabb)
    assert (t_far > t_near).float().mean() > 0.5


def test_sphere_rays_use_the_training_intrinsics():
    cams = Cameras(torch.stack([look_at(torch.tensor([4.0, 0.0, 1.0]), torch.zeros(3))] * 2),
                   torch.tensor([30.0, 30.0]), torch.tensor([30.0, 30.0]), torch.tensor([8.0, 8.0]),
                   torch.tensor([6.0, 6.0]), 16, 12)
    inq = SphereInquirer(cams, torch.tensor([[-1.0] * 3, [1.0] * 3]), elevation="sphere", seed=0)
    got = inq.sample(200)
    px, py = pixel_of(cams, torch.zeros(200, dtype=torch.long), got.poses[got.pose_index], got.rays.directions)
    assert torch.allclose(px, px.round(), atol=1e-3) and torch.allclose(py, py.round(), atol=1e-3)
    assert px.min() >= -1e-3 and px.max() <= 15 + 1e-3 and py.min() >= -1e-3 and py.max() <= 11 + 1e-3
    # "sphere" covers both sides of the horizon.
    elev = elevations(got.poses[:, :3, 3], torch.zeros(3), inq.up)
    assert elev.min() < -0.3 and elev.max() > 0.3


def test_hemisphere_stays_above_the_horizon(scene):
    inq = SphereInquirer(scene.split("train").cameras, scene.aabb, elevation="hemisphere", seed=1)
    elev = elevations(inq.sample(300).poses[:, :3, 3], scene.aabb.mean(0), inq.up)
    assert elev.min() >= -1e-5 and elev.max() > 1.0


def test_inquirers_are_seeded_and_resume_from_their_state(scene):
    cams = scene.split("train").cameras
    makers = [lambda: SphereInquirer(cams, scene.aabb, seed=5), lambda: CameraBoxInquirer(cams, seed=5),
              lambda: TrainingRayInquirer(scene.split("train"), seed=5)]
    for make in makers:
        a, b = make(), make()
        assert torch.equal(a.sample(32).rays.directions, b.sample(32).rays.directions)
        state = a.state_dict()
        ahead = a.sample(32).rays.origins
        c = make()
        c.load_state_dict(state)
        assert torch.equal(c.sample(32).rays.origins, ahead)
        assert not torch.equal(c.sample(32).rays.origins, ahead)  # and moves on
    points = BoxPointInquirer(scene.aabb, seed=2)
    state = points.state_dict()
    first = points.sample(10).points
    points.load_state_dict(state)
    assert torch.equal(points.sample(10).points, first)


def test_camera_box_poses_stay_in_the_camera_box_facing_like_their_nearest_camera(scene):
    cams = scene.split("train").cameras
    inq = CameraBoxInquirer(cams, jitter_deg=4.0, seed=0)
    poses, cam = inq.poses(300)
    lo, hi = cams.centers.min(0).values, cams.centers.max(0).values
    eyes = poses[:, :3, 3]
    assert ((eyes >= lo - 1e-5) & (eyes <= hi + 1e-5)).all()
    assert torch.equal(cam, torch.cdist(eyes, cams.centers).argmin(dim=1))
    cos = (poses[:, :3, 2] * cams.c2w[cam, :3, 2]).sum(-1)
    assert (cos >= math.cos(math.radians(4.0)) - 1e-5).all() and (cos < 1 - 1e-7).any()
    rot = poses[:, :3, :3]
    assert torch.allclose(rot.transpose(1, 2) @ rot, torch.eye(3).expand(300, 3, 3), atol=1e-5)


def test_training_rays_are_the_pixel_sampler_with_or_without_colours(scene):
    split = scene.split("train")
    g = torch.Generator()
    g.manual_seed(7)
    rays, colours = PixelSampler(split, torch.device("cpu"), g).sample(50)
    got = TrainingRayInquirer(split, seed=7).sample(50)
    assert torch.equal(got.rays.directions, rays.directions) and torch.equal(got.colours, colours)
    assert TrainingRayInquirer(split, with_colours=False, seed=7).sample(5).colours is None


def test_box_points_fill_the_box_with_unit_directions(scene):
    got = BoxPointInquirer(scene.aabb, seed=0).sample(2000)
    lo, hi = scene.aabb
    assert ((got.points >= lo) & (got.points <= hi)).all()
    assert torch.allclose(got.directions.norm(dim=-1), torch.ones(2000), atol=1e-5)
    span = got.points.max(0).values - got.points.min(0).values
    assert (span > 0.9 * (hi - lo)).all()


def test_frustum_membership_closed_form():
    cams = Cameras(look_at(torch.tensor([5.0, 0.0, 0.0]), torch.zeros(3))[None], torch.tensor([10.0]),
                   torch.tensor([10.0]), torch.tensor([5.0]), torch.tensor([5.0]), 10, 10)
    points = torch.tensor([[0.0, 0.0, 0.0],  # straight ahead
                           [10.0, 0.0, 0.0],  # behind the camera
                           [0.0, 10.0, 0.0],  # 10 to the side at depth 5: pixel 5 +- 20, outside
                           [0.0, 2.0, 0.0],  # pixel 5 +- 4: inside
                           [0.0, 0.0, 3.0]])  # 6 pixels up from the centre: outside
    assert in_frustum(points, cams).tolist() == [True, False, False, True, False]
    assert in_frustum(points, cams, near=5.5).tolist() == [False] * 5


def test_frustum_filter_masks_samples_and_rays(scene):
    train = scene.split("train")
    torch.manual_seed(0)
    teacher = Teacher(build_field("hash", scene.aabb, backend="torch", n_levels=2, log2_hashmap_size=10))
    # Samples in a box three times the scene's, seen from all round: much of it no training camera saw.
    centre, half = scene.aabb.mean(0), 0.5 * (scene.aabb[1] - scene.aabb[0])
    big = torch.stack([centre - 3 * half, centre + 3 * half])
    layout = SampleLayout(big, 0.0, math.inf, 16, scene.background)
    inq = SphereInquirer(train.cameras, scene.aabb, elevation="sphere", seed=0)
    batch = OnTheFlySource(inq, teacher, layout, seed=0).next(128)
    result = FrustumFilter(train.cameras, min_fraction=0.5)(batch)
    assert torch.equal(result.sample_keep, in_frustum(batch.positions[batch.live], train.cameras))
    assert 0.0 < result.stats["sample_acceptance"] < 1.0
    seen = torch.zeros_like(batch.live).masked_scatter(batch.live, result.sample_keep).sum(-1)
    assert torch.equal(result.ray_keep, (batch.live.sum(-1) == 0) | (seen >= 0.5 * batch.live.sum(-1)))

    class DropFirstRay:
        name = "first"

        def __call__(self, batch):
            keep = torch.ones(len(batch), dtype=torch.bool)
            keep[0] = False
            return FilterResult(ray_keep=keep, stats={"dropped": 1.0})

    rays, samples, stats = combine(batch, [FrustumFilter(train.cameras), DropFirstRay()])
    assert not rays[0] and torch.equal(rays[1:], result.ray_keep[1:])
    n_first = int(batch.live[0].sum())
    assert not samples[:n_first].any()
    assert torch.equal(samples[n_first:], result.sample_keep[n_first:] & rays.repeat_interleave(
        batch.live.sum(-1))[n_first:])
    assert stats["distill/filter/first/dropped"] == 1.0 and "distill/filter/frustum/ray_acceptance" in stats
