"""KITTI-360 layout: file round trips, the camera chains, a generated street read back, the data module."""

import math
import re
import shutil

import numpy as np
import pytest
import torch

from fieldkd.platform.data.sequences import (
    SequenceData,
    lidar_points_world,
    resize_intrinsics,
)
from fieldkd.platform.errors import InputError
from fieldkd.platform.scenes import kitti360, lens
from fieldkd.platform.scenes import kitti_generator as gen
from fieldkd.platform.scenes.limits import ReadLimits
from fieldkd.platform.scenes.tracer import sphere_trace

W, H, FISH = 96, 32, 32
OPTIONS = gen.Options(width=W, height=H, fisheye_size=FISH, n_frames=8, train_sequences=1, test_sequences=1,
                      lidar_azimuth_steps=60, test_sweeps=4, test_stride=2, no_pose=(5,))
TRAIN, TEST = gen.sequence_name(0), gen.sequence_name(1)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, one_torch_thread):
    return gen.write_dataset(tmp_path_factory.mktemp("kitti") / "root", OPTIONS, progress=False)


@pytest.fixture
def copy(dataset, tmp_path):
    """A copy of the generated dataset to damage."""
    return shutil.copytree(dataset, tmp_path / "root")


def test_calibration_files_round_trip(tmp_path):
    calib = gen.calibration(gen.default_rig(), W, H, FISH)
    kitti360.write_calibration(tmp_path, calib)
    text = (tmp_path / "calibration" / "perspective.txt").read_text()
    assert {line.split(":")[0] for line in text.splitlines()} >= {"P_rect_00", "P_rect_01", "R_rect_00",
                                                                   "R_rect_01", "S_rect_00"}
    assert (tmp_path / "calibration" / "image_02.yaml").read_text().startswith("%YAML:1.0\n---\nmodel_type: MEI")
    back = kitti360.read_calibration(tmp_path)
    assert back.size == (W, H) and back.fisheyes == calib.fisheyes
    for cam in kitti360.PERSPECTIVE:
        np.testing.assert_allclose(back.p_rect[cam], calib.p_rect[cam], rtol=1e-11)
        np.testing.assert_allclose(back.r_rect[cam], calib.r_rect[cam], atol=1e-12)
    for cam in kitti360.CAMERAS:
        np.testing.assert_allclose(back.cam_to_pose[cam], calib.cam_to_pose[cam], atol=1e-11)
    np.testing.assert_allclose(back.cam_to_velo, calib.cam_to_velo, atol=1e-11)


def test_mei_yaml_as_kitti360_ships_it(tmp_path):
    path = tmp_path / "image_02.yaml"
    path.write_text("%YAML:1.0\n---\nmodel_type: MEI\ncamera_name: image_02\nimage_width: 1400\n"
                    "image_height: 1400\nmirror_parameters:\n   xi: 2.2134047507854890e+00\n"
                    "distortion_parameters:\n   k1: 1.6798235660113681e-02\n   k2: 1.6548773351806654e+00\n"
                    "   p1: 4.2223943394772046e-04\n   p2: 4.2462134260997584e-04\nprojection_parameters:\n"
                    "   gamma1: 1.3363220825849971e+03\n   gamma2: 1.3357883350012958e+03\n"
                    "   u0: 7.1694323510126321e+02\n   v0: 7.0576498308221585e+02\n")
    cam = kitti360.read_mei(path)
    assert (cam.name, cam.width, cam.height) == ("image_02", 1400, 1400)
    assert cam.distortion == (2.2134047507854890, 1.6798235660113681e-02, 1.6548773351806654,
                              4.2223943394772046e-04, 4.2462134260997584e-04)
    assert (cam.gamma1, cam.v0) == (1.3363220825849971e+03, 7.0576498308221585e+02)
    path.write_text("%YAML:1.0\n---\nmodel_type: !!python/object/apply:os.system [echo]\n")
    with pytest.raises(InputError, match=r"image_02\.yaml: unreadable fisheye calibration"):
        kitti360.read_mei(path)


def test_poses_lidar_split_and_images_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    poses = {3: np.eye(4), 7: gen.transform(gen.rotation("z", 30.0), [1.5, -2.0, 0.25])}
    kitti360.write_poses(tmp_path / "poses.txt", poses)
    back = kitti360.read_poses(tmp_path / "poses.txt")
    assert list(back) == [3, 7] and np.allclose(back[7], poses[7], atol=1e-12)
    points = rng.normal(size=(50, 4)).astype(np.float32)
    kitti360.write_velodyne(tmp_path / "0000000003.bin", points)
    assert (tmp_path / "0000000003.bin").stat().st_size == 50 * 16
    np.testing.assert_array_equal(kitti360.read_velodyne(tmp_path / "0000000003.bin"), points)
    rows = [("seq_a", 3, "l"), ("seq_b", 12, "r")]
    kitti360.write_split(tmp_path / "train_files.txt", rows)
    assert (tmp_path / "train_files.txt").read_text().splitlines()[0] == "seq_a 0000000003 l"
    assert kitti360.read_split(tmp_path / "train_files.txt") == rows
    rgb = rng.random((4, 6, 3))
    path = kitti360.write_image(tmp_path, "seq_a", "image_02", 3, rgb)
    assert path.relative_to(tmp_path).as_posix() == "data_2d_raw/seq_a/image_02/data_rgb/0000000003.png"
    np.testing.assert_allclose(kitti360.read_image(tmp_path, "seq_a", "image_02", 3), rgb, atol=0.5 / 255 + 1e-6)


def test_rectified_camera_chain_closed_form():
    """pose . cam_to_pose . R_rect^-1: with R_rect a quarter turn about y, the rectified optical axis
    is the unrectified -x axis."""
    turn = gen.rotation("y", 90.0)
    calib = kitti360.Calibration({c: np.hstack([np.eye(3), np.zeros((3, 1))]) for c in kitti360.PERSPECTIVE},
                                 {c: turn for c in kitti360.PERSPECTIVE}, (4, 4),
                                 {c: np.eye(4) for c in kitti360.PERSPECTIVE}, np.eye(4), {})
    pose = gen.transform(np.eye(3), [10.0, 0.0, 0.0])
    c2w = kitti360.cam_to_world(calib, pose, "image_00")
    np.testing.assert_allclose(c2w[:3, 2], [-1.0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(c2w[:3, 3], [10.0, 0.0, 0.0])
    # camera 00 -> velodyne puts the camera at velodyne (0, 0, 1): the velodyne sits 1 m below it (camera z)
    calib = kitti360.Calibration(calib.p_rect, calib.r_rect, calib.size, calib.cam_to_pose,
                                 gen.transform(gen.rotation("z", 90.0), [0.0, 0.0, 1.0]), {})
    np.testing.assert_allclose(kitti360.velo_to_world(calib, pose)[:3, 3], [10.0, 0.0, -1.0], atol=1e-12)


def _reader_cameras(root, sequence):
    calib = kitti360.read_calibration(root)
    return calib, kitti360.read_sequence_poses(root, sequence)


def test_generated_pixels_land_where_the_generator_rendered_them(dataset):
    """Trace the street's SDF through pixel centres of the reader's cameras; each surface point must
    project to the same pixel, at the traced depth, in the camera the generator rendered with."""
    calib, poses = _reader_cameras(dataset, TRAIN)
    rig = gen.default_rig()
    truth = gen.vehicle_poses(OPTIONS.n_frames, 20.0, OPTIONS.speed, phase=0.0)  # the generator's own poses
    geometry = gen.Geometry(gen.load_street(dataset, TRAIN))
    j, i = np.meshgrid(np.arange(0, H, 3), np.arange(0, W, 5), indexing="ij")
    for frame, cam in ((2, "image_00"), (6, "image_01")):
        k = calib.intrinsics(cam)
        c2w = kitti360.cam_to_world(calib, poses[frame], cam)
        local = np.stack([(i - k[0, 2]) / k[0, 0], (j - k[1, 2]) / k[1, 1], np.ones_like(i, dtype=float)], -1)
        local = local.reshape(-1, 3) / np.linalg.norm(local.reshape(-1, 3), axis=-1, keepdims=True)
        dirs = torch.from_numpy(local @ c2w[:3, :3].T).float()
        origins = torch.from_numpy(c2w[:3, 3]).float().expand_as(dirs).contiguous()
        t, hit = sphere_trace(geometry.distance, origins, dirs, torch.zeros(len(dirs)), torch.full((len(dirs),), 60.0),
                              eps=1e-4, max_steps=2000)
        assert hit.float().mean() > 0.6  # most of the view is street, not sky
        points = (origins + t[:, None] * dirs)[hit].double().numpy()
        rendered = truth[frame] @ rig.rect_to_pose[cam]  # not from the files
        cam_points = (points - rendered[:3, 3]) @ rendered[:3, :3]
        px = cam_points[:, 0] / cam_points[:, 2] * k[0, 0] + k[0, 2]
        py = cam_points[:, 1] / cam_points[:, 2] * k[1, 1] + k[1, 2]
        np.testing.assert_allclose(px, i.reshape(-1)[hit.numpy()], atol=2e-2)
        np.testing.assert_allclose(py, j.reshape(-1)[hit.numpy()], atol=2e-2)
        depth = (t * torch.from_numpy(local[:, 2]).float())[hit].numpy()
        np.testing.assert_allclose(cam_points[:, 2], depth, rtol=1e-3, atol=1e-3)
        # and the generator's picture there: its depth rendering agrees with the traced depth
        _, gen_depth = gen.render(geometry, rendered, gen.pinhole_dirs(k, W, H))
        np.testing.assert_allclose(gen_depth.numpy()[j, i].reshape(-1)[hit.numpy()], depth, rtol=2e-3, atol=2e-3)
    for cam in kitti360.FISHEYES:
        np.testing.assert_allclose(kitti360.cam_to_world(calib, poses[3], cam),
                                   truth[3] @ rig.fisheye_to_pose[cam], atol=1e-9)
        assert calib.fisheyes[cam].distortion == tuple(gen.MEI[n] for n in lens.PARAMS["mei"])


def test_stereo_images_agree_through_the_reader_chain(dataset):
    """A street point seen in image_00 has the same colour in image_01 where the reader's cameras
    put it (Lambertian surfaces): the pair's calibration is consistent with its pictures."""
    calib, poses = _reader_cameras(dataset, TRAIN)
    geometry = gen.Geometry(gen.load_street(dataset, TRAIN))
    frame = 1
    left = kitti360.read_image(dataset, TRAIN, "image_00", frame)
    right = kitti360.read_image(dataset, TRAIN, "image_01", frame)
    c00, c01 = (kitti360.cam_to_world(calib, poses[frame], c) for c in kitti360.PERSPECTIVE)
    k = calib.intrinsics("image_00")
    local = np.moveaxis(np.stack(np.meshgrid(np.arange(W), np.arange(H), indexing="xy")), 0, -1).reshape(-1, 2)
    rays = np.concatenate([(local - k[:2, 2]) / np.diag(k)[:2], np.ones((len(local), 1))], 1)
    rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
    dirs = torch.from_numpy(rays @ c00[:3, :3].T).float()
    t, hit, _, _ = geometry.intersect(torch.from_numpy(c00[:3, 3]).float().expand_as(dirs).contiguous(), dirs, 60.0)
    points = c00[:3, 3] + t.double().numpy()[:, None] * dirs.double().numpy()

    def agreement(c2w):
        cam = (points - c2w[:3, 3]) @ c2w[:3, :3]
        u = np.round(cam[:, 0] / cam[:, 2] * k[0, 0] + k[0, 2]).astype(int)
        v = np.round(cam[:, 1] / cam[:, 2] * k[1, 1] + k[1, 2]).astype(int)
        ok = hit.numpy() & (cam[:, 2] > 1) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
        diff = np.abs(right[v[ok], u[ok]] - left.reshape(-1, 3)[ok]).max(-1)
        return (diff < 0.05).mean()

    assert agreement(c01) > 0.85
    wrong = c01.copy()
    wrong[:3, :3] = c01[:3, :3] @ (calib.r_rect["image_01"] @ calib.r_rect["image_01"])  # R_rect applied twice
    assert agreement(wrong) < agreement(c01) - 0.15


def test_lidar_points_lie_on_the_street_surface(dataset):
    data = SequenceData(dataset, split_file=dataset / "splits" / "test_files.txt", lidar_sweeps=4)
    item = data.eval_items()[0]
    assert item["sequence"] == TEST and len(item["lidar"]) == 4 and item["velo_to_world"].shape == (4, 4, 4)
    geometry = gen.Geometry(gen.load_street(dataset, TEST))
    sweeps = lidar_points_world(item)
    assert all(len(s) > 1000 for s in sweeps)
    for points in sweeps:
        d = geometry.distance(torch.from_numpy(points).float())
        assert d.abs().max() < 5e-3
    # Just behind a return is solid, just before it free: the exact occupancy agrees.
    velo = item["velo_to_world"][0].double().numpy()
    ray = sweeps[0] - velo[:3, 3]
    ray /= np.linalg.norm(ray, axis=-1, keepdims=True)
    street = gen.load_street(dataset, TEST)
    assert gen.exact_occupancy(street, sweeps[0] + 0.05 * ray).mean() > 0.97
    assert not gen.exact_occupancy(street, sweeps[0] - 0.05 * ray).any()


def test_frames_without_a_pose_are_skipped(dataset, tmp_path):
    assert 5 not in kitti360.read_sequence_poses(dataset, TRAIN)
    assert (dataset / kitti360.image_name(TRAIN, "image_00", 5)).is_file()  # the image exists, the pose not
    split = tmp_path / "train_files.txt"
    kitti360.write_split(split, [(TRAIN, 3, "l"), (TRAIN, 4, "l"), (TRAIN, 5, "r"), (TRAIN, 6, "l")])
    data = SequenceData(dataset, split_file=split, offsets=(0, 1))
    assert [(i.frame, i.side) for i in data.train] == [(3, "l"), (6, "l")] and data.skipped == 2
    generated = kitti360.read_split(dataset / "splits" / "train_files.txt")
    assert all(f not in (4, 5) for _, f, _ in generated) and len(generated) == 2 * 5  # frames 0-3, 6 have f+1
    # the test split: every 2nd frame with a posed successor and 4 sweeps from it on (0-3; 4's successor has no
    # pose), so the evaluation skips none of them
    test_split = dataset / "splits" / "test_files.txt"
    assert [(s, f) for s, f, _ in kitti360.read_split(test_split)] == [(TEST, 0), (TEST, 2)]
    test_data = SequenceData(dataset, split_file=test_split, offsets=(0, 1), lidar_sweeps=4)
    assert len(test_data.eval_items()) == 2 and test_data.skipped == 0


@pytest.mark.parametrize("damage, where, message", [
    (lambda r: (r / "calibration" / "perspective.txt").unlink(), "perspective.txt", "not found"),
    (lambda r: _edit(r / "calibration" / "perspective.txt", "P_rect_00", lambda v: v[:-1]),
     "perspective.txt", r"line \d+ \(P_rect_00\): expected 12 numbers, got 11"),
    (lambda r: (r / "calibration" / "calib_cam_to_velo.txt").write_text("1 0 0 0 0 1 0 0 0 0 nan 0\n"),
     "calib_cam_to_velo.txt", "non-finite"),
    (lambda r: _edit(r / "calibration" / "calib_cam_to_pose.txt", "image_01", lambda v: v[:5] + ["x"] + v[6:]),
     "calib_cam_to_pose.txt", "not a number"),
    (lambda r: _append(r / kitti360.poses_name(TRAIN), "9 1 0 0 0 0 1 0 0 0 0 1\n"),
     "poses.txt", r"line 8: expected a frame id and 12 numbers, got 12 fields"),
    (lambda r: (r / kitti360.velodyne_name(TEST, 0)).write_bytes(b"\0" * 20), "0000000000.bin",
     "20 bytes, not a multiple of 16"),
    (lambda r: (r / kitti360.image_name(TRAIN, "image_01", 1)).unlink(), "0000000001.png",
     r"image of frame 1 \(image_01\) not found \(listed in .*train_files.txt\)"),
    (lambda r: _append(r / "splits" / "train_files.txt", "../outside 0000000001 l\n"), "train_files.txt",
     "sequence '../outside' must be one folder name"),
])
def test_bad_input_is_one_line_naming_the_file(copy, damage, where, message):
    damage(copy)
    with pytest.raises(InputError) as err:
        data = SequenceData(copy, split_file=copy / "splits" / "train_files.txt",
                            eval_split_file=copy / "splits" / "test_files.txt", lidar_sweeps=4)
        data.sample(data.train[1])
        lidar_points_world(data.eval_items()[0])
    assert where in err.value.where and "\n" not in str(err.value)
    assert re.search(message, err.value.problem), err.value.problem


def test_folders_linked_from_another_disk_need_allow_outside_paths(copy, tmp_path):
    """KITTI-360 is often unpacked over several disks and linked together: a link out of the dataset
    folder is refused by default, naming it; with scene.allow_outside_paths=true everything reads,
    the LiDAR sweeps of the evaluation included."""
    elsewhere = tmp_path / "other_disk"
    shutil.move(copy / "data_3d_raw", elsewhere)
    (copy / "data_3d_raw").symlink_to(elsewhere, target_is_directory=True)
    split = copy / "splits" / "test_files.txt"
    with pytest.raises(InputError) as err:
        SequenceData(copy, split_file=split, lidar_sweeps=4).eval_items()[0]
    assert "symlink" in err.value.problem and "allow_outside_paths" in err.value.problem
    data = SequenceData(copy, split_file=split, lidar_sweeps=4,
                        limits=ReadLimits.from_config({"allow_outside_paths": True}))
    assert [len(points) > 1000 for points in lidar_points_world(data.eval_items()[0])] == [True] * 4


def _edit(path, key, change):
    lines = []
    for line in path.read_text().splitlines():
        name, _, rest = line.partition(":")
        lines.append(f"{name}: {' '.join(change(rest.split()))}" if name == key else line)
    path.write_text("\n".join(lines) + "\n")


def _append(path, text):
    path.write_text(path.read_text() + text)


def test_samples_shapes_intrinsics_and_sides(dataset):
    data = SequenceData(dataset, split_file=dataset / "splits" / "train_files.txt", height=H // 2, width=W // 2)
    calib, poses = _reader_cameras(dataset, TRAIN)
    left = next(i for i in data.train if i.side == "l")
    right = next(i for i in data.train if i.side == "r" and i.frame == left.frame)
    a, b = data.sample(left), data.sample(right)
    assert a["images"].shape == (4, 3, H // 2, W // 2) and a["images"].dtype == torch.float32
    assert a["intrinsics"].shape == (4, 3, 3) and a["cam_to_world"].shape == (4, 4, 4)
    assert 0 <= a["images"].min() and a["images"].max() <= 1
    k = calib.intrinsics("image_00")
    assert a["intrinsics"][0, 0, 0] == pytest.approx(k[0, 0] / 2, rel=1e-6)
    assert a["intrinsics"][0, 0, 2] == pytest.approx((k[0, 2] + 0.5) / 2 - 0.5, rel=1e-6)
    np.testing.assert_allclose(a["cam_to_world"][0], kitti360.cam_to_world(calib, poses[left.frame], "image_00"),
                               atol=1e-5)
    np.testing.assert_allclose(a["cam_to_world"][2], kitti360.cam_to_world(calib, poses[left.frame + 1], "image_00"),
                               atol=1e-5)
    # side r: camera 01 is the input view, camera 00 the second
    assert torch.equal(b["images"][0], a["images"][1]) and torch.equal(b["images"][1], a["images"][0])
    np.testing.assert_allclose(resize_intrinsics(k, (W, H), (W, H)), k)
    baseline = (a["cam_to_world"][1, :3, 3] - a["cam_to_world"][0, :3, 3]).norm()  # the stereo pair's 0.6 m
    assert math.isclose(float(baseline), gen.BASELINE, rel_tol=1e-5)


def test_rank_shards_are_disjoint_and_batches_endless(dataset):
    data = SequenceData(dataset, split_file=dataset / "splits" / "train_files.txt", height=8, width=24)
    shards = [data.shard(r, 3) for r in range(3)]
    keys = [{(i.sequence, i.frame, i.side) for i in s} for s in shards]
    assert sum(len(k) for k in keys) == len(data.train) == len(set().union(*keys))
    batches = data.train_batches(1, 3, batch_size=2, seed=5)
    seen = [next(batches) for _ in range(4)]  # more than one pass over a shard of 3
    assert all(b["images"].shape == (2, 4, 3, 8, 24) for b in seen)
    assert {(s, f) for b in seen for s, f in zip(b["sequence"], b["frame"])} <= {(i.sequence, i.frame) for i in shards[1]}
    again = data.train_batches(1, 3, batch_size=2, seed=5)
    assert [next(again)["frame"] for _ in range(4)] == [b["frame"] for b in seen]


def test_ray_dataset_reads_lazily_on_a_local_ray(dataset, local_ray):
    data = SequenceData(dataset, split_file=dataset / "splits" / "train_files.txt", height=8, width=24)
    ds = data.ray_dataset("train")
    batch = ds.take_batch(3)
    assert batch["images"].shape == (3, 4, 3, 8, 24) and batch["cam_to_world"].shape == (3, 4, 4, 4)
    first = data.sample(data.train[0])
    np.testing.assert_allclose(batch["images"][0], first["images"].numpy(), atol=1e-6)
    assert list(batch["sequence"]) == [TRAIN] * 3


def test_fisheye_views_resampled_ahead_and_skipped_without_pose(dataset):
    """With fisheyes the two side fisheyes follow the stereo views, ``fisheye_offset`` frames ahead,
    resampled to the perspective K; a line whose fisheye frame has no pose is skipped."""
    from fieldkd.platform.scenes import fisheye_resample as fr

    split = dataset / "splits" / "train_files.txt"
    data = SequenceData(dataset, split_file=split, height=H, width=W, fisheyes=True, fisheye_offset=2)
    # frames 0-3 and 6 have a posed successor; with frames +2 and +3 needed too (5 has no pose, 8 is past the end)
    assert sorted({i.frame for i in data.train}) == [0, 1] and data.skipped == 2 * 3
    assert data.frames_per_sample == 8
    calib, poses = _reader_cameras(dataset, TRAIN)
    geometry = gen.Geometry(gen.load_street(dataset, TRAIN))
    for side, first in (("l", "image_02"), ("r", "image_03")):
        item = next(i for i in data.train if i.side == side and i.frame == 1)
        s = data.sample(item)
        assert s["images"].shape == (8, 3, H, W)
        assert [c for c, _ in data.views(item)][4:] == [first, {"image_02": "image_03", "image_03": "image_02"}[first]] * 2
        assert [f for _, f in data.views(item)] == [1, 1, 2, 2, 3, 3, 4, 4]
        np.testing.assert_allclose(s["intrinsics"][4], calib.intrinsics("image_00"), rtol=1e-6)
        rot = fr.virtual_rotation(first)
        c2w = kitti360.cam_to_world(calib, poses[3], first) @ gen.transform(rot, [0, 0, 0])
        np.testing.assert_allclose(s["cam_to_world"][4], c2w, atol=1e-5)
        # the served view is the street as that virtual pinhole sees it (the 32-pixel fisheye blurs it)
        direct, _ = gen.render(geometry, s["cam_to_world"][4].double().numpy(),
                               gen.pinhole_dirs(s["intrinsics"][4].double().numpy(), W, H))
        served = s["images"][4].permute(1, 2, 0)
        seen = served.amax(-1) > 0
        assert seen.float().mean() > 0.9
        err = (served - direct).abs().max(-1).values[seen].mean()
        other, _ = gen.render(geometry, s["cam_to_world"][5].double().numpy(),
                              gen.pinhole_dirs(s["intrinsics"][5].double().numpy(), W, H))
        # measured 0.046 (l) and 0.057 (r); against the other fisheye's virtual camera 0.14
        assert err < 0.07 and (served - other).abs().max(-1).values[seen].mean() > 2 * err
    assert SequenceData(**data.config()).views(item) == data.views(item)  # what Ray workers rebuild
    plain = SequenceData(dataset, split_file=split, height=H, width=W)
    assert plain.frames_per_sample == 4 and plain.sample(plain.train[0])["images"].shape == (4, 3, H, W)


def test_culled_intersection_is_the_full_one_bit_for_bit(one_torch_thread):
    """Bundles that test only the shapes in their cone give exactly the rays' hits against every shape
    (the unculled path, the generator's original arithmetic)."""
    geometry = gen.Geometry(gen.make_street(4, 110.0))
    rig = gen.default_rig()
    calib = gen.calibration(rig, W, H, FISH)
    pose = gen.vehicle_poses(30, 20.0, 1.0, 0.5)[23]
    cases = [(pose @ rig.rect_to_pose["image_00"], gen.pinhole_dirs(calib.intrinsics("image_00"), W, H)),
             (pose @ rig.fisheye_to_pose["image_03"], gen.mei_dirs(calib.fisheyes["image_03"])[0]),
             (pose @ rig.velo_to_pose, gen.lidar_dirs(90)[:, None])]
    for c2w, local in cases:
        dirs = local.reshape(-1, 3) @ torch.as_tensor(c2w[:3, :3], dtype=torch.float32).T
        origins = torch.as_tensor(c2w[:3, 3], dtype=torch.float32).expand_as(dirs).contiguous()
        fast = geometry.intersect(origins, dirs, 80.0)
        slow = geometry.intersect(origins, dirs, 80.0, cull=False)
        hit = slow[1]
        assert 0.3 < hit.float().mean() and torch.equal(fast[1], hit) and torch.equal(fast[0], slow[0])
        assert torch.equal(fast[2][hit], slow[2][hit]) and torch.equal(fast[3][hit], slow[3][hit])
    order = gen.direction_order(dirs)
    assert torch.equal(order.sort().values, torch.arange(len(dirs)))
