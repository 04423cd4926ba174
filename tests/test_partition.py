"""View partitioning for DaC's experts: azimuth sectors, Louvain communities, overlap, records."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from fieldkd.platform.scenes import load_scene
from fieldkd.platform.scenes.cameras import look_at, visible
from fieldkd.platform.scenes.partition import (azimuth_directions, partition_figure, similarity_graph, split_views,
                                               with_overlap)


@pytest.fixture(scope="module")
def scene(tiny_blender):
    return load_scene("blender", tiny_blender)


@pytest.fixture(scope="module")
def ring_split(scene):
    """24 cameras on a horizontal ring around the scene centre, one every 15 degrees from 7.5."""
    train = scene.split("train")
    angles = torch.deg2rad(7.5 + 15.0 * torch.arange(24))
    eyes = torch.stack([3 * torch.cos(angles), 3 * torch.sin(angles), torch.full_like(angles, 0.5)], 1)
    c2w = torch.stack([look_at(eye, torch.zeros(3)) for eye in eyes])
    n = len(angles)
    cams = dataclasses.replace(train.cameras, c2w=c2w, fx=train.cameras.fx[:1].expand(n),
                               fy=train.cameras.fy[:1].expand(n), cx=train.cameras.cx[:1].expand(n),
                               cy=train.cameras.cy[:1].expand(n))
    images = train.images[:1].expand(n, -1, -1, -1)
    return dataclasses.replace(train, images=images, cameras=cams, frame_paths=[f"ring_{i}" for i in range(n)],
                               alphas=None, depths=None, normals=None)


def test_azimuth_directions_are_the_official_ones_for_four_experts():
    angles = np.degrees(np.arctan2(*azimuth_directions(4)[:, ::-1].T)) % 360
    assert np.allclose(angles, [45, 135, 225, 315])
    assert np.allclose(np.degrees(np.arctan2(*azimuth_directions(2)[:, ::-1].T)) % 360, [90, 270])


def test_azimuth_split_puts_each_camera_in_its_sector(ring_split, scene):
    split = split_views(ring_split, scene.aabb, 4, method="azimuth")
    assert split.method == "azimuth"
    azimuths = 7.5 + 15.0 * np.arange(24)
    # Sector k spans [90k, 90(k+1)) degrees around 45 + 90k: six cameras each.
    assert split.owner.tolist() == (azimuths // 90).astype(int).tolist()
    assert [len(g) for g in split.groups] == [6, 6, 6, 6]
    # Cameras not seen in training are assigned the same way.
    assert split.assign(ring_split.cameras).tolist() == split.owner.tolist()


def test_overlap_adds_the_nearest_views_of_the_neighbours(ring_split, scene):
    split = split_views(ring_split, scene.aabb, 4, method="azimuth", overlap=1 / 3)
    # Two extra views per group (a third of 6): the two cameras closest to its direction
    # from outside, one on each side of the sector (azimuths 97.5 and 352.5 for sector 0).
    assert [len(g) for g in split.groups] == [8, 8, 8, 8]
    assert sorted(set(split.groups[0]) - set(range(6))) == [6, 23]
    assert all(int(split.owner[v]) == k for k, g in enumerate(split.groups) for v in g if v in range(6 * k, 6 * k + 6))


def test_with_overlap_takes_the_highest_affinity_outside():
    owner = np.array([0, 0, 1, 1, 1, 1])
    affinity = np.array([[1, 0.1], [1, 0.3], [0.9, 0.1], [0.2, 0.8], [0.5, 0.5], [0.0, 1]])
    # Half of group 0's two views: one extra, view 2 (affinity 0.9, the highest outside).
    # Half of group 1's four views: two extra, all there is outside.
    assert with_overlap(owner, affinity, 0.5) == [[0, 1, 2], [0, 1, 2, 3, 4, 5]]
    # A quarter of four: one extra, view 1 (0.3 beats view 0's 0.1); of two: none.
    assert with_overlap(owner, affinity, 0.25) == [[0, 1], [1, 2, 3, 4, 5]]
    assert with_overlap(owner, affinity, 0.0) == [[0, 1], [2, 3, 4, 5]]
    with pytest.raises(ValueError, match="overlap"):
        with_overlap(owner, affinity, -0.1)


def test_similarity_is_the_jaccard_index_of_seen_points():
    seen = np.array([[1, 1, 1, 0], [0, 1, 1, 1], [0, 0, 0, 0]], dtype=bool)
    similarity = similarity_graph(seen)
    assert similarity[0, 1] == pytest.approx(2 / 4) and similarity[1, 0] == pytest.approx(2 / 4)
    assert similarity[0, 2] == 0 and np.all(np.diag(similarity) == 0)


def test_visible_projects_into_the_image_in_front_of_the_camera(scene):
    cams = scene.split("train").cameras
    centre, forward = cams.c2w[0, :3, 3], -cams.c2w[0, :3, 2]
    points = torch.stack([centre + 2 * forward, centre - 2 * forward])
    assert visible(points, cams[[0]]).tolist() == [[True, False]]


def test_louvain_groups_views_that_see_the_same_points(scene):
    train = scene.split("train")
    for graph in ("covisibility", "frustum"):
        split = split_views(train, scene.aabb, 2, method="louvain", graph=graph, points=2048)
        assert split.graph == graph and split.method == "louvain"
        assert sorted(v for g in split.groups for v in g) == list(range(len(train)))
        assert all(len(g) > 0 for g in split.groups)
    # Without depth maps there is no covisibility, only frustum overlap.
    no_depth = dataclasses.replace(train, depths=None)
    assert split_views(no_depth, scene.aabb, 2, method="louvain").graph == "frustum"
    with pytest.raises(ValueError, match="depth"):
        split_views(no_depth, scene.aabb, 2, method="louvain", graph="covisibility")


def test_louvain_split_of_a_ring_is_contiguous(ring_split, scene):
    split = split_views(ring_split, scene.aabb, 3, method="louvain", graph="frustum", points=4096)
    # Neighbouring cameras on the ring see nearly the same part of the box: every group is
    # one arc, so the owner changes exactly three times going once round the ring.
    changes = int(np.sum(split.owner != np.roll(split.owner, 1)))
    assert changes == 3 and len(set(split.owner.tolist())) == 3
    # A camera at a training camera's pose is assigned that camera's expert.
    assert split.assign(ring_split.cameras).tolist() == split.owner.tolist()


def test_auto_chooses_azimuth_around_an_object_and_bad_requests_fail(scene):
    train = scene.split("train")
    assert split_views(train, scene.aabb, 2).method == "azimuth"
    with pytest.raises(ValueError, match="experts"):
        split_views(train, scene.aabb, len(train) + 1)
    with pytest.raises(ValueError, match="experts"):
        split_views(train, scene.aabb, 0)
    with pytest.raises(ValueError, match="partition method"):
        split_views(train, scene.aabb, 2, method="kmeans")


def test_the_split_is_recorded_as_a_table_and_a_figure(ring_split, scene, tmp_path):
    split = split_views(ring_split, scene.aabb, 4, method="azimuth", overlap=1 / 3)
    lines = split.table(ring_split.frame_paths).splitlines()
    assert lines[0] == "view\tframe\texpert\tgroups"
    assert len(lines) == 25
    assert lines[1].split("\t") == ["0", "ring_0", "0", "0,3"]  # view 0 (7.5 deg) is also sector 3's neighbour
    figure = partition_figure(split, {"test": (ring_split.cameras.centers.numpy()[:2], np.array([0, 1]))})
    path = tmp_path / "cameras.png"
    figure.savefig(path)
    assert path.stat().st_size > 10_000
    assert len(figure.axes[0].collections) == 2 * 4 + 1 + 1  # own + shared per expert, test, centre
