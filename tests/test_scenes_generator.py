"""Procedural scenes: closed-form depth, normals, ray consistency, mesh, cameras, cache."""

import math

import numpy as np
import pytest
import torch

from fieldkd.platform.errors import InputError
from fieldkd.platform.scenes import cache, default_scene_dir, load_scene, write_scene
from fieldkd.platform.scenes import sdf
from fieldkd.platform.scenes.generator import MIN_CAMERA_RADIUS, extract_mesh, orbit_cameras, render_scene, scene_spec
from fieldkd.platform.scenes.orbits import object_cameras
from fieldkd.platform.scenes.ply import read_ply, write_ply
from fieldkd.platform.scenes.specs import BOUND, ORBITS, SCENES


def test_sphere_centre_depth_is_distance_minus_radius():
    # Odd size: the centre pixel's ray is the optical axis, which passes through the origin.
    scene = render_scene("sphere", width=17, height=17, n_train=4, n_val=0, n_test=0)
    split = scene.splits["train"]
    for i in range(len(split)):
        assert split.depths[i, 8, 8].item() == pytest.approx(4.0 - 0.8, abs=1e-3)
        assert split.alphas[i, 8, 8].item() == 1.0
        to_camera = split.cameras.centers[i] / split.cameras.centers[i].norm()
        assert torch.dot(split.normals[i, 8, 8], to_camera).item() > 0.999


def test_hit_pixels_back_project_onto_the_surface():
    scene = render_scene("default", width=24, height=20, n_train=3, n_val=0, n_test=0)
    split, spec = scene.splits["train"], scene_spec("default")
    for i in range(len(split)):
        rays = split.cameras.image_rays(i)
        depth = split.depths[i].reshape(-1)
        hit = depth > 0
        assert hit.sum() > 20 and (~hit).sum() > 20
        t = depth[hit] / rays.z_scale[hit]
        points = rays.origins[hit] + t[:, None] * rays.directions[hit]
        assert sdf.union_distance(spec, points).abs().max().item() < 1e-3
        normals = split.normals[i].reshape(-1, 3)
        assert torch.allclose(normals[hit].norm(dim=-1), torch.ones(int(hit.sum())), atol=1e-4)
        assert (normals[~hit] == 0).all()
    # 2x2 supersampling: coverage comes in quarters, with some partial edge pixels.
    alphas = split.alphas.unique()
    assert set(alphas.tolist()) <= {0.0, 0.25, 0.5, 0.75, 1.0} and len(alphas) > 2
    assert split.images.min() >= 0 and split.images.max() <= 1


@pytest.mark.parametrize("binary", [True, False])
def test_ply_round_trip(tmp_path, binary):
    verts, faces = extract_mesh(scene_spec("sphere"), resolution=24)
    write_ply(tmp_path / "m.ply", verts, faces, binary=binary)
    v2, f2 = read_ply(tmp_path / "m.ply")
    np.testing.assert_allclose(v2, verts, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(f2, faces)


def test_mesh_vertices_lie_on_the_zero_set():
    spec = scene_spec("sphere")
    verts, _ = extract_mesh(spec, resolution=48)
    assert np.abs(np.linalg.norm(verts, axis=1) - 0.8).max() < 2e-3
    spec = scene_spec("default")
    verts, faces = extract_mesh(spec, resolution=64)
    dist = sdf.union_distance(spec, torch.from_numpy(verts)).abs()
    # Linear interpolation is exact away from creases where primitives meet.
    assert torch.quantile(dist, 0.99).item() < 5e-3 and dist.max().item() < 0.05
    assert len(faces) > 1000


@pytest.mark.parametrize("name", sorted(SCENES))
def test_every_scene_fits_the_box(name):
    verts, _ = extract_mesh(scene_spec(name), resolution=40)
    assert np.all(np.abs(verts) <= BOUND) and np.abs(verts).max() > 0.5


def test_orbit_cameras_are_deterministic_and_distinct():
    counts = {"train": 12, "val": 5, "test": 6}
    a, b = object_cameras(counts, seed=3), object_cameras(counts, seed=3)
    for split in counts:
        assert torch.equal(a[split], b[split])
        centers = a[split][:, :3, 3]
        assert torch.allclose(centers.norm(dim=-1), torch.full((counts[split],), 4.0), atol=1e-5)
        elev = torch.rad2deg(torch.asin(centers[:, 2] / 4.0))
        assert elev.min() >= 10 - 1e-3 and elev.max() <= 60 + 1e-3
        forward = -a[split][:, :3, 2]  # OpenGL: looks down -z, at the origin
        assert torch.allclose(forward, -centers / 4.0, atol=1e-5)
    all_centers = torch.cat([a[s][:, :3, 3] for s in counts])
    gaps = torch.cdist(all_centers, all_centers) + torch.eye(len(all_centers)) * 10
    assert gaps.min() > 1e-3
    assert not torch.equal(object_cameras(counts, seed=4)["test"], a["test"])


def _radius_and_elevation(cams):
    centers = cams.c2w[:, :3, 3]
    radius = centers.norm(dim=-1)
    return radius, torch.rad2deg(torch.asin(centers[:, 2] / radius))


def test_orbit_options_set_radius_and_elevation_band():
    views = dict(n_train=12, n_val=3, n_test=8, width=8, height=8)
    for split, cams in orbit_cameras(**views).items():  # defaults: radius 4, 10 to 60 degrees
        radius, elev = _radius_and_elevation(cams)
        assert torch.allclose(radius, torch.full_like(radius, 4.0), atol=1e-5)
        assert elev.min() >= 10 - 1e-3 and elev.max() <= 60 + 1e-3
    for split, cams in orbit_cameras(**views, camera_radius=2.5, elevation_range=(-30.0, -5.0)).items():
        radius, elev = _radius_and_elevation(cams)
        assert torch.allclose(radius, torch.full_like(radius, 2.5), atol=1e-5)
        assert elev.min() >= -30 - 1e-3 and elev.max() <= -5 + 1e-3
        forward = -cams.c2w[:, :3, 2]  # still looking at the origin
        assert torch.allclose(forward, -cams.c2w[:, :3, 3] / 2.5, atol=1e-5)
        if split == "train":  # the spiral spans the band
            assert elev.min() < -25 and elev.max() > -10
    ring = orbit_cameras(**views, elevation_range=(35.0, 35.0))["test"]
    assert torch.allclose(_radius_and_elevation(ring)[1], torch.full((8,), 35.0), atol=1e-3)
    for bad in ({"camera_radius": MIN_CAMERA_RADIUS}, {"camera_radius": "far"},
                {"elevation_range": (60.0, 10.0)}, {"elevation_range": (0.0, 95.0)}, {"elevation_range": 30}):
        with pytest.raises(InputError, match=next(iter(bad))):
            orbit_cameras(**views, **bad)


def test_near_far_follow_the_camera_radius():
    half_diagonal = math.sqrt(3) * BOUND
    for radius in (2.5, 4.0, 7.0):
        scene = render_scene("sphere", width=6, height=6, n_train=2, n_val=0, n_test=1, camera_radius=radius)
        assert scene.near == pytest.approx(radius - half_diagonal, abs=1e-4)
        assert scene.far == pytest.approx(radius + half_diagonal, abs=1e-4)
        assert torch.allclose(scene.aabb, torch.tensor([[-BOUND] * 3, [BOUND] * 3]))


@pytest.mark.parametrize("name", sorted(ORBITS))
def test_scene_fits_the_image_from_its_orbit(name):
    scene = render_scene(name, width=24, height=24, n_train=8, n_val=2, n_test=4, **ORBITS[name])
    for split in scene.splits.values():
        alpha = split.alphas
        border = torch.cat([alpha[:, 0], alpha[:, -1], alpha[:, :, 0], alpha[:, :, -1]], dim=1)
        assert (alpha.flatten(1).sum(dim=1) > 10).all()  # every view sees the object
        assert border.max().item() == 0.0  # and all of it


def test_dots_texture_spots_cell_centres():
    size, phase = 0.1, 0.137
    centre = torch.tensor([[(3.5 - phase) * size] * 3, [(-1.5 - phase) * size] * 3])
    corner = torch.tensor([[(3.0 - phase) * size] * 3, [(-2.0 - phase) * size + 1e-4] * 3])
    a, b = (0.1, 0.2, 0.3), (0.9, 0.8, 0.7)
    colours = sdf.dots(torch.cat([centre, corner]), a, b, size=size, radius=0.3, phase=phase)
    assert colours.shape == (4, 3)
    assert torch.allclose(colours[:2], torch.tensor([b, b])) and torch.allclose(colours[2:], torch.tensor([a, a]))
    points = torch.rand(2000, 3) * 2 - 1
    share = (sdf.dots(points, a, b, size=size, radius=0.3) == torch.tensor(b)).all(dim=1).float().mean()
    assert abs(share.item() - 4 / 3 * math.pi * 0.3**3) < 0.04  # the balls' share of each cell


def test_write_scene_writes_dataset_and_mesh(tmp_path):
    out = write_scene("default", tmp_path / "s", fmt="nerfstudio", width=12, height=10, n_train=3,
                      n_val=1, n_test=2, mesh_resolution=24, progress=False)
    assert (out / "transforms.json").is_file() and (out / "mesh.ply").is_file()
    scene = load_scene("nerfstudio", out)
    assert scene.mesh_path == out / "mesh.ply"
    assert {k: len(v) for k, v in scene.splits.items()} == {"train": 3, "val": 1, "test": 2}
    assert scene.splits["train"].images.shape == (3, 10, 12, 3)
    with pytest.raises(InputError, match="not empty"):
        write_scene("default", out, width=4, height=4, n_train=1, n_val=0, n_test=1)
    with pytest.raises(InputError, match="unknown procedural scene"):
        write_scene("nope", tmp_path / "t")


def test_camera_angle_sets_focal_length():
    scene = render_scene("sphere", width=20, height=10, n_train=1, n_val=0, n_test=0, camera_angle_x=1.0)
    cams = scene.splits["train"].cameras
    assert cams.fx[0].item() == pytest.approx(10 / math.tan(0.5), rel=1e-6)
    assert cams.cx[0].item() == 10 and cams.cy[0].item() == 5


def test_default_scene_dir_generates_once_atomically(tmp_path, monkeypatch):
    monkeypatch.setenv("FIELDKD_CACHE", str(tmp_path))
    calls = []

    def tiny(name, out, fmt, progress):
        calls.append(out)
        if len(calls) == 1:
            (out / "partial").write_text("x")
            raise KeyboardInterrupt  # interrupted first generation
        return write_scene(name, out, fmt=fmt, width=8, height=8, n_train=2, n_val=1, n_test=1,
                           mesh_resolution=16, progress=progress)

    monkeypatch.setattr(cache, "write_scene", tiny)
    with pytest.raises(KeyboardInterrupt):
        default_scene_dir("sphere", "blender")
    scenes = tmp_path / "scenes"
    assert [p for p in scenes.iterdir() if not p.name.endswith(".lock")] == []
    path = default_scene_dir("sphere", "blender")
    assert path.parent == scenes and path.name.startswith("sphere-blender-v")
    assert (path / "transforms_train.json").is_file() and (path / "mesh.ply").is_file()
    assert default_scene_dir("sphere", "blender") == path and len(calls) == 2
    assert load_scene("blender", path).mesh_path == path / "mesh.ply"
