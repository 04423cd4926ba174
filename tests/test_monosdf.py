"""MonoSDF format (cameras.npz, world_mat / scale_mat) and the procedural indoor rooms, on real files."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.spatial.transform import Rotation

from fieldkd.platform.errors import InputError
from fieldkd.platform.scenes import load_scene, write_scene
from fieldkd.platform.scenes import sdf
from fieldkd.platform.scenes.cameras import opencv_to_opengl, project
from fieldkd.platform.scenes.generator import render_scene, room_spec
from fieldkd.platform.scenes.monosdf import compose_world_mat, decompose_projection
from fieldkd.platform.scenes.ply import read_ply
from fieldkd.platform.scenes.registry import write_format
from fieldkd.platform.scenes.similarity import points_from_world, points_to_world

BG = (0.2, 0.4, 0.6)


def similarity(scale, translation, rotation=None):
    m = np.eye(4)
    m[:3, :3] = scale * (np.eye(3) if rotation is None else rotation)
    m[:3, 3] = translation
    return m


def opencv_pose(rotation, centre):
    c2w = np.eye(4)
    c2w[:3, :3], c2w[:3, 3] = rotation, centre
    return c2w


def opencv_look_at(eye, target, roll_deg=0.0):
    """OpenCV camera-to-world at ``eye`` looking at ``target`` (z-up world), rolled about its axis."""
    forward = np.subtract(target, eye) / np.linalg.norm(np.subtract(target, eye))
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    rotation = np.stack([right, np.cross(forward, right), forward], axis=1)
    roll = Rotation.from_euler("z", roll_deg, degrees=True).as_matrix()
    return opencv_pose(rotation @ roll, eye)


# --- write / read round trip --------------------------------------------------

@pytest.fixture(scope="module")
def object_scene():
    scene = render_scene("default", width=20, height=16, n_train=4, n_val=1, n_test=2)
    # A non-trivial normalisation: the writer must un-normalise cameras and depths, the reader undo it.
    scene.extras["world_from_scene"] = torch.from_numpy(
        similarity(2.5, [1.0, -2.0, 0.5], Rotation.from_euler("z", 30, degrees=True).as_matrix()))
    return scene


@pytest.fixture(scope="module")
def object_dir(object_scene, tmp_path_factory):
    return write_format("monosdf", object_scene, tmp_path_factory.mktemp("mono") / "scene")


def test_round_trip(object_scene, object_dir):
    got = load_scene("monosdf", object_dir, background=BG)
    assert set(got.splits) == {"train", "val", "test"}
    for name, gen in object_scene.splits.items():
        split = got.splits[name]
        for key in ("c2w", "fx", "fy", "cx", "cy"):
            assert torch.allclose(getattr(split.cameras, key), getattr(gen.cameras, key), atol=1e-5), key
        a = gen.alphas[..., None]
        expected = gen.images - (1 - a) * (1 - torch.tensor(BG))  # re-composited on BG
        assert (split.images - expected).abs().max().item() <= 1 / 255 + 1e-5
        assert torch.allclose(split.alphas, gen.alphas)
        assert torch.allclose(split.depths, gen.depths, rtol=1e-5, atol=1e-6)
        hit = gen.depths > 0
        assert (split.normals[hit] * gen.normals[hit]).sum(-1).min().item() > 0.9999
        assert (split.normals[~hit] == 0).all()
    assert torch.equal(got.extras["world_from_scene"], object_scene.extras["world_from_scene"])
    assert got.extras["frame_ids"] == {"train": [0, 1, 2, 3], "val": [4], "test": [5, 6]}
    assert torch.allclose(got.aabb, object_scene.aabb) and got.near == pytest.approx(object_scene.near)


def test_written_files_follow_monosdf(object_scene, object_dir):
    cams = np.load(object_dir / "cameras.npz")
    assert sorted(cams.files) == sorted([f"world_mat_{i}" for i in range(7)] + [f"scale_mat_{i}" for i in range(7)])
    scale = object_scene.extras["world_from_scene"].numpy()
    assert np.allclose(cams["scale_mat_3"], scale)
    # world_mat = K @ rigid world-to-camera in world units: its 3x3 part is K times a rotation.
    k, c2w = decompose_projection(cams["world_mat_0"])
    assert np.allclose(cams["world_mat_0"][:3, :3], k @ c2w[:3, :3].T, atol=1e-9)
    centre = points_to_world(object_scene.splits["train"].cameras.centers[0].numpy(), scale)
    assert np.allclose(c2w[:3, 3], centre, atol=1e-4)
    assert np.asarray(Image.open(object_dir / "000000_rgb.png")).shape == (16, 20, 3)
    depth = np.load(object_dir / "000002_depth.npy")
    assert depth.shape == (16, 20) and np.allclose(depth, 2.5 * object_scene.splits["train"].depths[2].numpy(),
                                                   rtol=1e-6)
    normal = np.load(object_dir / "000002_normal.npy")
    assert normal.shape == (3, 16, 20) and normal.min() >= 0 and normal.max() <= 1
    assert json.loads((object_dir / "splits.json").read_text())["test"] == [5, 6]


# --- cameras: decomposition, projection, normals ------------------------------

K = np.array([[52.0, 0.0, 30.3], [0.0, 49.5, 22.8], [0.0, 0.0, 1.0]])
SCALE_MAT = similarity(2.0, [1.5, -0.5, 1.2])


def write_frames(root, poses, k=K, scale_mat=SCALE_MAT, size=(64, 48), normals=None, depths=None):
    """A hand-made MonoSDF folder: grey images, world_mat = K @ world-to-camera (world units)."""
    root.mkdir(parents=True, exist_ok=True)
    mats = {}
    for i, c2w in enumerate(poses):
        mats[f"world_mat_{i}"] = compose_world_mat(k, c2w)
        mats[f"scale_mat_{i}"] = scale_mat
        Image.fromarray(np.full((size[1], size[0], 3), 100 + i, np.uint8)).save(root / f"{i:06d}_rgb.png")
        if normals is not None:
            np.save(root / f"{i:06d}_normal.npy", normals[i])
        if depths is not None:
            np.save(root / f"{i:06d}_depth.npy", depths[i])
    np.savez(root / "cameras.npz", **mats)
    return root


def test_known_camera_decomposes_exactly(tmp_path):
    rotation = Rotation.from_euler("xyz", [100, -20, 35], degrees=True).as_matrix()
    pose = opencv_pose(rotation, [2.0, -1.0, 1.6])
    p = compose_world_mat(K, pose) @ SCALE_MAT
    for factor in (1.0, -3.0):  # a projection is defined up to any nonzero factor
        k, c2w = decompose_projection(factor * p[:3])
        assert np.allclose(k, K, atol=1e-10)
        assert np.allclose(c2w[:3, :3], rotation, atol=1e-10)
        assert np.allclose(c2w[:3, 3], (pose[:3, 3] - SCALE_MAT[:3, 3]) / 2.0, atol=1e-10)
    cams = load_scene("monosdf", write_frames(tmp_path / "s", [pose])).splits["train"].cameras
    assert (cams.fx.item(), cams.fy.item()) == pytest.approx((52.0, 49.5))
    assert (cams.cx.item(), cams.cy.item()) == pytest.approx((30.8, 23.3))  # MonoSDF's integer pixel centres
    expected = opencv_to_opengl(torch.from_numpy(opencv_pose(rotation, (pose[:3, 3] - [1.5, -0.5, 1.2]) / 2)))
    assert torch.allclose(cams.c2w.double(), expected, atol=1e-6)


def test_projection_through_world_mat_matches_reader_cameras(tmp_path):
    poses = [opencv_look_at([0.5 * i, -3.0, 1.5 + 0.3 * i], [0.2 * i, 0.1, 1.3], roll_deg=15 * i) for i in range(3)]
    root = write_frames(tmp_path / "s", poses)
    cams = load_scene("monosdf", root).splits["train"].cameras
    data = np.load(root / "cameras.npz")
    world = np.array([[0.3, 0.2, 1.0], [-0.4, 0.6, 1.8], [1.0, -0.5, 1.2]])
    scene_points = torch.from_numpy(points_from_world(world, SCALE_MAT)).float()
    px, py, depth = project(scene_points, cams)
    for i in range(3):
        p = data[f"world_mat_{i}"] @ data[f"scale_mat_{i}"]
        h = (p[:3] @ np.c_[scene_points.double().numpy(), np.ones(3)].T).T
        u, v = h[:, 0] / h[:, 2], h[:, 1] / h[:, 2]
        assert np.allclose(px[i].numpy(), u + 0.5, atol=1e-3) and np.allclose(py[i].numpy(), v + 0.5, atol=1e-3)
        z_world = (np.linalg.inv(poses[i]) @ np.c_[world, np.ones(3)].T)[2]
        assert np.allclose(depth[i].numpy(), z_world / 2.0, rtol=1e-5)
        assert ((u > 0) & (u < 63) & (v > 0) & (v < 47) & (z_world > 0)).sum() >= 2  # points in the image


def floor_maps(pose, size=(64, 48)):
    """Camera-frame normal map ((3, H, W) in [0, 1]) and z-depth of the floor z = 0, by MonoSDF's pixel rays."""
    w, h = size
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K).T  # camera frame, z = 1
    world_dirs = rays @ pose[:3, :3].T
    depth = -pose[2, 3] / world_dirs[..., 2]  # z = 1 per ray, so the ray parameter is the z-depth
    up_camera = pose[:3, :3].T @ np.array([0.0, 0.0, 1.0])
    normal = np.broadcast_to(up_camera * 0.5 + 0.5, (h, w, 3)).transpose(2, 0, 1)
    return normal.astype(np.float32), depth.astype(np.float32)


def test_floor_normals_come_back_as_world_up_and_depths_land_on_the_floor(tmp_path):
    # Looking down at the floor z = 0 from 1.6 m, tilted and rolled.
    look_down = Rotation.from_euler("xyz", [-140, 8, 25], degrees=True).as_matrix()
    pose = opencv_pose(look_down, [1.0, 0.5, 1.6])
    normal, depth = floor_maps(pose)
    assert (depth > 0).all()
    root = write_frames(tmp_path / "s", [pose], normals=[normal], depths=[depth])
    split = load_scene("monosdf", root).splits["train"]
    up = torch.tensor([0.0, 0.0, 1.0])
    assert torch.allclose(split.normals.reshape(-1, 3), up.expand(64 * 48, 3), atol=1e-5)
    rays = split.cameras.image_rays(0)
    t = split.depths[0].reshape(-1) / rays.z_scale
    points = rays.origins + t[:, None] * rays.directions
    floor = points_to_world(points.double().numpy(), SCALE_MAT)
    assert np.abs(floor[:, 2]).max() < 1e-4
    assert split.depths[0, 10, 10].item() == pytest.approx(depth[10, 10] / 2.0, rel=1e-6)  # normalised units


def test_without_splits_file_every_frame_trains_and_tests(tmp_path):
    poses = [opencv_pose(np.eye(3), [0.1 * i, 0.0, 0.0]) for i in range(4)]
    scene = load_scene("monosdf", write_frames(tmp_path / "s", poses))
    assert scene.extras["frame_ids"] == {"train": [0, 1, 2, 3], "test": [0, 1, 2, 3]}
    assert scene.split("val") is scene.splits["test"]
    assert torch.allclose(scene.aabb, torch.tensor([[-1.0] * 3, [1.0] * 3]))
    assert scene.near == 0.05 and scene.mesh_path is None
    assert (scene.splits["train"].alphas == 1).all() and scene.splits["train"].depths is None
    assert (scene.splits["train"].images[2] * 255).round().eq(102).all()


# --- the procedural indoor rooms ---------------------------------------------

@pytest.fixture(scope="module")
def indoor_dir(tmp_path_factory):
    return write_scene("indoor", tmp_path_factory.mktemp("rooms") / "indoor", "monosdf", width=32, height=24,
                       n_frames=48, mesh_resolution=64, progress=False)


@pytest.fixture(scope="module")
def indoor(indoor_dir):
    return load_scene("monosdf", indoor_dir)


def world_points(split, i, world_from_scene):
    """Back-projected pixels of view i, in world units."""
    rays = split.cameras.image_rays(i)
    t = split.depths[i].reshape(-1) / rays.z_scale
    points = rays.origins + t[:, None] * rays.directions
    return torch.from_numpy(points_to_world(points.double().numpy(), world_from_scene)).float()


def test_indoor_normalisation_is_real_and_cameras_are_inside_the_room(indoor):
    room = room_spec("indoor")
    m = indoor.extras["world_from_scene"].numpy()
    assert not np.allclose(m, np.eye(4)) and m[0, 0] == pytest.approx(2.2) and np.allclose(m[:3, 3], [2, 1.6, 1.3])
    corners = points_to_world(np.array([[-1.0] * 3, [1.0] * 3]), m)
    assert (corners[0] < room.low).all() and (corners[1] > room.high).all()  # the unit box holds the room
    for split in indoor.splits.values():
        centres = points_to_world(split.cameras.centers.double().numpy(), m)
        assert (centres > np.array(room.low) + 0.4).all() and (centres < np.array(room.high) - 0.4).all()
    assert torch.allclose(indoor.aabb, torch.tensor([[-1.0] * 3, [1.0] * 3])) and indoor.near == 0.05


def test_indoor_depths_and_normals_agree_with_the_sdf(indoor):
    room, m = room_spec("indoor"), indoor.extras["world_from_scene"].numpy()
    split = indoor.splits["train"]
    assert (split.depths > 0).all() and (split.alphas == 1).all()  # a closed room: every pixel sees a surface
    for i in range(0, len(split), 7):
        points = world_points(split, i, m)
        assert sdf.union_distance(room.primitives, points).abs().max().item() < 2e-3
        rotation = torch.from_numpy(m[:3, :3] / 2.2).float()
        normals = split.normals[i].reshape(-1, 3) @ rotation.T  # scene -> world frame
        assert ((normals * sdf.normals(room.primitives, points)).sum(-1) > 0.99).float().mean() > 0.97
    assert split.images.std(dim=(1, 2)).min() > 0.05  # textured: the images carry detail


def frames_by_number(scene):
    """Frame number -> (split, index in it), over all splits."""
    ids = scene.extras["frame_ids"]
    return {i: (scene.splits[name], k) for name in scene.splits for k, i in enumerate(ids[name])}


def test_indoor_consecutive_frames_overlap(indoor):
    m, frames = indoor.extras["world_from_scene"].numpy(), frames_by_number(indoor)
    assert sorted(frames) == list(range(48))
    for i in range(47):
        (split_a, a), (split_b, b) = frames[i], frames[i + 1]
        points = torch.from_numpy(points_from_world(world_points(split_a, a, m).double().numpy(), m)).float()
        px, py, depth = project(points, split_b.cameras[b])
        inside = (px >= 0) & (px < 32) & (py >= 0) & (py < 24) & (depth > 0)
        assert inside.float().mean() > 0.7, i
        # Of those, the next frame's depth map sees the same surface (not something in front of it).
        seen = split_b.depths[b][py[inside].long(), px[inside].long()]
        assert ((seen - depth[inside]).abs() < 0.05 * depth[inside]).float().mean() > 0.8, i


def test_indoor_splits_follow_the_path(indoor, indoor_dir):
    ids = indoor.extras["frame_ids"]
    assert ids["test"] == list(range(0, 48, 8)) and ids["val"] == ids["test"][::2]
    assert ids["train"] == sorted(set(range(48)) - set(ids["test"]))
    names = [int(p.split("/")[-1][:6]) for p in indoor.splits["train"].frame_paths]
    assert names == ids["train"]
    assert sorted(p.name for p in indoor_dir.glob("*_rgb.png")) == [f"{i:06d}_rgb.png" for i in range(48)]
    assert not list(indoor_dir.glob("*_mask.npy"))
    # Path order: camera centres move little between consecutive frame numbers, and the walk does
    # not come back to where it began.
    frames = frames_by_number(indoor)
    by_frame = torch.stack([split.cameras.centers[k] for split, k in (frames[i] for i in range(48))])
    steps = (by_frame[1:] - by_frame[:-1]).norm(dim=-1)
    assert steps.max() < 0.15 and (by_frame[0] - by_frame[-1]).norm() > 5 * steps.max()
    assert torch.cdist(by_frame, by_frame).max() > 1.0


def test_indoor_mesh_is_in_world_units(indoor, indoor_dir):
    room = room_spec("indoor")
    assert indoor.mesh_path == indoor_dir / "mesh.ply"
    verts, faces = read_ply(indoor.mesh_path)
    assert len(faces) > 1000
    size = verts.max(0) - verts.min(0)
    assert np.allclose(size, [4.0, 3.2, 2.6], atol=0.03) and np.allclose(verts.min(0), room.low, atol=0.03)
    dist = sdf.union_distance(room.primitives, torch.from_numpy(verts)).abs()
    # Exact on the flat walls; off by a fraction of the 6.7 cm voxel only at creases where objects meet.
    assert torch.quantile(dist, 0.9).item() < 1e-3 and torch.quantile(dist, 0.99).item() < 0.02


def test_second_room_differs_and_other_formats_get_scene_units(tmp_path):
    out = write_scene("indoor_b", tmp_path / "b", "blender", width=16, height=12, n_frames=16, mesh_resolution=32,
                      progress=False)
    scene = load_scene("blender", out)
    assert {k: len(v) for k, v in scene.splits.items()} == {"train": 14, "val": 1, "test": 2}
    verts, _ = read_ply(out / "mesh.ply")  # no world_from_scene in this format: the mesh is in scene units
    assert np.abs(verts).max() < 1.0 and verts.max(0)[0] - verts.min(0)[0] == pytest.approx(4.6 / 2.53, abs=0.05)
    room_a, room_b = room_spec("indoor"), room_spec("indoor_b")
    assert room_a.low != room_b.low and len(room_b.primitives) >= 5
    with pytest.raises(InputError, match="unknown option 'n_train'"):
        write_scene("indoor", tmp_path / "c", "monosdf", n_train=3)


# --- malformed input ------------------------------------------------------------

@pytest.fixture
def broken(object_dir, tmp_path):
    return shutil.copytree(object_dir, tmp_path / "scene")


def fails(root, *fragments):
    with pytest.raises(InputError) as info:
        load_scene("monosdf", root)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def edit_cameras(root, change):
    data = dict(np.load(root / "cameras.npz"))
    change(data)
    np.savez(root / "cameras.npz", **data)


def test_missing_cameras_file(broken):
    (broken / "cameras.npz").unlink()
    fails(broken, "cameras.npz", "not found")


def test_missing_world_mat(broken):
    edit_cameras(broken, lambda d: d.pop("world_mat_3"))
    fails(broken, "cameras.npz", "missing world_mat_3", "000003_rgb.png")


def test_singular_and_skewed_cameras(broken):
    edit_cameras(broken, lambda d: d.__setitem__("world_mat_1", np.zeros((4, 4))))
    fails(broken, "cameras.npz", "world_mat_1", "singular")
    edit_cameras(broken, lambda d: d.__setitem__("world_mat_1", np.diag([10.0, 10.0, 1.0, 1.0]) + np.eye(4, k=1)))
    fails(broken, "cameras.npz", "skewed")


def test_scale_mats_must_agree_and_be_similarities(broken):
    edit_cameras(broken, lambda d: d.__setitem__("scale_mat_2", d["scale_mat_2"] * np.diag([1, 1, 1.01, 1])))
    fails(broken, "cameras.npz", "scale_mat_2", "uniform scale")
    edit_cameras(broken, lambda d: d.__setitem__("scale_mat_2", np.eye(4)))
    fails(broken, "cameras.npz", "scale_mat_2 differs")


def test_image_size_mismatch(broken):
    Image.new("RGB", (8, 8)).save(broken / "000004_rgb.png")
    fails(broken, "000004_rgb.png", "8x8", "20x16")


def test_bad_normal_depth_and_mask(broken):
    np.save(broken / "000001_normal.npy", np.zeros((16, 20, 3), np.float32))
    fails(broken, "000001_normal.npy", "shape (16, 20, 3)", "(3, 16, 20)")
    np.save(broken / "000001_normal.npy", np.zeros((3, 16, 20), np.float32))
    np.save(broken / "000002_depth.npy", np.zeros((10, 20), np.float32))
    fails(broken, "000002_depth.npy", "depth map", "(16, 20)")
    (broken / "000002_depth.npy").unlink()
    fails(broken, "000002_depth.npy", "not found", "all frames or none")
    np.save(broken / "000002_depth.npy", np.full((16, 20), np.nan, np.float32))
    fails(broken, "000002_depth.npy", "non-finite")
    np.save(broken / "000002_depth.npy", np.ones((16, 20), np.float32))
    np.save(broken / "000000_mask.npy", np.full((16, 20), 2.0))
    fails(broken, "000000_mask.npy", "[0, 1]")


def test_bad_splits_file(broken):
    path = broken / "splits.json"
    meta = json.loads(path.read_text())
    path.write_text(json.dumps({**meta, "test": [5, 99]}))
    fails(broken, "splits.json", "frame 99", "000099_rgb.png")
    path.write_text(json.dumps({**meta, "tset": [5]}))
    fails(broken, "splits.json", "unknown key 'tset'")
    path.write_text("{")
    fails(broken, "splits.json", "invalid JSON")


def test_no_frames(tmp_path):
    np.savez(tmp_path / "cameras.npz", world_mat_0=np.eye(4), scale_mat_0=np.eye(4))
    fails(tmp_path, str(tmp_path), "no frames found")
