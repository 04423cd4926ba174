"""DTU in MVSNet format: camera, pair, PFM and point-cloud files; the generator; the multi-view data module."""

import shutil

import numpy as np
import pytest

from fieldkd.platform.data.multiview import MultiViewData
from fieldkd.platform.errors import InputError
from fieldkd.platform.scenes import dtu
from fieldkd.platform.scenes import dtu_generator as gen
from fieldkd.platform.scenes.limits import ReadLimits, reading
from fieldkd.platform.scenes.mvs_cams import (
    MVSCamera,
    parse_cam,
    read_cam,
    read_pair,
    resized_intrinsics,
    scaled_intrinsics,
    write_cam,
    write_pair,
)
from fieldkd.platform.scenes.pfm import read_pfm, write_pfm
from fieldkd.platform.scenes.ply import read_points, write_points

TINY = {"train_scans": (1, 2), "test_scans": (3,), "width": 96, "height": 64, "test_width": 128,
        "test_height": 96, "n_views": 12, "n_lights": 2, "n_sources": 5}


@pytest.fixture(scope="module")
def tiny_dtu(tmp_path_factory, one_torch_thread):
    return gen.write_mvs_dataset(tmp_path_factory.mktemp("dtu") / "tiny", **TINY)


@pytest.fixture
def dtu_copy(tiny_dtu, tmp_path):
    return shutil.copytree(tiny_dtu, tmp_path / "copy")


def _fails(call, *fragments):
    with pytest.raises(InputError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


# --- files --------------------------------------------------------------------------------------------

def test_camera_file_round_trip_and_range_lines(tmp_path):
    rng = np.random.default_rng(0)
    ext = np.eye(4)
    ext[:3, :3] = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    ext[:3, 3] = [12.5, -3.25, 640.0]
    k = np.array([[361.5, 0.0, 82.9], [0.0, 360.25, 66.2], [0.0, 0.0, 1.0]])
    for cam in (MVSCamera(ext, k, 425.0, 2.5), MVSCamera(ext, k, 425.0, 510.0 / 192, 192)):
        write_cam(tmp_path / "00000007_cam.txt", cam)
        back = read_cam(tmp_path / "00000007_cam.txt")
        assert np.allclose(back.extrinsic, ext, atol=1e-9) and np.allclose(back.intrinsic, k)
        assert back.depth_min == 425.0 and back.depth_num == cam.depth_num
        assert abs(back.depth_interval - cam.depth_interval) < 1e-9
    # Two values: the range spans MVSNet's 192 planes (or the number given).
    two = parse_cam("extrinsic\n" + "1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n\nintrinsic\n"
                    "100 0 50\n0 100 40\n0 0 1\n\n425.0 2.5\n", "c.txt")
    assert two.depth_max() == 425.0 + 192 * 2.5 and two.depth_max(100) == 675.0
    # Four values: the interval is (max - min) / num, whatever the second value says.
    four = parse_cam("extrinsic 1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1 intrinsic 100 0 50 0 100 40 0 0 1 "
                     "425 9.0 128 937", "c.txt")
    assert four.depth_interval == (937 - 425) / 128 and four.depth_max() == 937 and four.depth_max(192) == 937


def test_pair_file_round_trip(tmp_path):
    pairs = {0: [(1, 310.5), (2, 12.25)], 1: [(0, 300.0)], 2: []}
    write_pair(tmp_path / "pair.txt", pairs)
    assert read_pair(tmp_path / "pair.txt") == pairs
    assert (tmp_path / "pair.txt").read_text().splitlines()[:3] == ["3", "0", "2 1 310.5 2 12.25"]


@pytest.mark.parametrize("little", [True, False])
@pytest.mark.parametrize("channels", [1, 3])
def test_pfm_round_trip_rows_bottom_up(tmp_path, little, channels):
    shape = (3, 4) if channels == 1 else (3, 4, 3)
    values = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) * 0.5 - 2
    path = tmp_path / "d.pfm"
    write_pfm(path, values, little_endian=little)
    raw = path.read_bytes()
    header = f"{'Pf' if channels == 1 else 'PF'}\n4 3\n{-1.0 if little else 1.0}\n".encode()
    assert raw.startswith(header)
    first_stored = np.frombuffer(raw[len(header):], dtype="<f4" if little else ">f4", count=4 * channels)
    assert np.array_equal(first_stored, values[-1].reshape(-1))  # the bottom row comes first
    assert np.array_equal(read_pfm(path), values)


def test_point_cloud_round_trip_binary_and_ascii(tmp_path):
    rng = np.random.default_rng(1)
    points = rng.normal(size=(50, 3)).astype(np.float32) * 100
    colours = rng.integers(0, 256, size=(50, 3)).astype(np.uint8)
    for binary in (True, False):
        write_points(tmp_path / "c.ply", points, colours, binary=binary)
        back, back_colours = read_points(tmp_path / "c.ply")
        assert np.allclose(back, points, rtol=1e-6) and np.array_equal(back_colours, colours)
    write_points(tmp_path / "p.ply", points)
    assert read_points(tmp_path / "p.ply")[1] is None


def test_intrinsics_follow_a_resize():
    k = np.array([[200.0, 0.0, 63.5], [0.0, 210.0, 47.5], [0.0, 0.0, 1.0]])
    half = resized_intrinsics(k, 0.5, 0.25)
    # A point on the optical axis of a centred camera stays on the centre of the resized image.
    assert np.allclose(half, [[100.0, 0.0, 31.5], [0.0, 52.5, 11.5], [0, 0, 1]])
    # Pixel edges map to pixel edges: the left edge of pixel 0 (u = -0.5) stays at -0.5.
    x = (-0.5 - k[0, 2]) / k[0, 0]
    assert np.isclose(half[0, 0] * x + half[0, 2], -0.5)
    # MVSNet's relation between camera files and images: plain multiplication.
    assert np.allclose(scaled_intrinsics(k, 4)[:2], k[:2] * 4)


# --- the generated dataset -------------------------------------------------------------------------------

def test_generated_dataset_reads_in_both_layouts(tiny_dtu):
    assert dtu.list_scans(tiny_dtu, "train") == ["scan1", "scan2"] and dtu.list_scans(tiny_dtu, "test") == ["scan3"]
    train = dtu.open_scan(tiny_dtu, "scan1")
    assert train.layout == "train" and train.views == list(range(12)) and train.lights() == [0, 1]
    view = dtu.read_view(train, 5, light=1)
    assert view.image.shape == (64, 96, 3) and view.depth.shape == (64, 96) and view.mask.any()
    # The file holds quarter-size intrinsics; the view's are for the image read.
    assert np.allclose(view.intrinsic, gen.intrinsic(96, 64))
    assert np.allclose(train.camera(5).intrinsic[:2], gen.intrinsic(96, 64)[:2] / 4)
    assert (view.depth_min, view.depth_max) == (425.0, 935.0)
    depth = view.depth[view.mask]
    assert depth.min() > 425 and depth.max() < 935 and np.all(view.depth[~view.mask] == 0)
    test = dtu.open_scan(tiny_dtu, "scan3")
    assert test.layout == "test" and test.image_path(0).suffix == ".jpg"
    tview = dtu.read_view(test, 0)
    assert tview.image.shape == (96, 128, 3) and tview.depth is None
    assert np.allclose(tview.intrinsic, gen.intrinsic(128, 96))
    points, colours = dtu.read_gt_points(tiny_dtu, "scan3")
    assert len(points) > 1000 and colours.shape == points.shape
    assert np.abs(points[:, :2]).max() <= gen.TABLE_RADIUS + 1 and points[:, 2].min() > -0.5


def _reprojection(depth_a, k_a, e_a, depth_b, k_b, e_b):
    """Share of a's pixels that b sees at the same depth (1 %, b's depth interpolated bilinearly where
    its four neighbours have depth), and the median relative error there."""
    points, _, _ = gen.backproject(depth_a, k_a, e_a)
    u, v, z = gen.project(points, k_b, e_b)
    h, w = depth_b.shape
    inside = (z > 0) & (u >= 0) & (u < w - 1) & (v >= 0) & (v < h - 1)
    u, v, z = u[inside], v[inside], z[inside]
    c, r = np.floor(u).astype(int), np.floor(v).astype(int)
    fu, fv = u - c, v - r
    corners = np.stack([depth_b[r, c], depth_b[r, c + 1], depth_b[r + 1, c], depth_b[r + 1, c + 1]])
    d = ((1 - fv) * ((1 - fu) * corners[0] + fu * corners[1]) + fv * ((1 - fu) * corners[2] + fu * corners[3]))
    rel = np.abs(d - z) / z
    ok = (corners > 0).all(0) & (rel < 0.01)
    return ok.sum() / max(len(z), 1), float(np.median(rel[ok])) if ok.any() else 1.0


def test_ground_truth_depths_agree_across_views(tiny_dtu):
    scan = dtu.open_scan(tiny_dtu, "scan2")
    ref, src = 4, scan.pairs[4][0][0]
    a, b = dtu.read_view(scan, ref, 0), dtu.read_view(scan, src, 0)
    share, error = _reprojection(a.depth, a.intrinsic, a.extrinsic, b.depth, b.intrinsic, b.extrinsic)
    assert share > 0.8 and error < 1e-3, (share, error)  # half a pixel off gives about 6e-3
    # The check can fail: the cameras of another view do not explain these depths.
    other = dtu.read_view(scan, scan.pairs[4][-1][0], 0)
    wrong, _ = _reprojection(a.depth, a.intrinsic, a.extrinsic, b.depth, b.intrinsic, other.extrinsic)
    assert wrong < 0.5 * share
    # Through the data module at half size (resized intrinsics, nearest depth): still consistent.
    data = MultiViewData(tiny_dtu, ["scan2"], n_src=1, height=32, width=48, light=0)
    one = next(data[i] for i in range(len(data)) if data.descriptors[i]["view"] == ref)
    two = next(data[i] for i in range(len(data)) if data.descriptors[i]["view"] == src)
    share, error = _reprojection(one["depth"], one["intrinsics"][0].astype(np.float64),
                                 one["extrinsics"][0].astype(np.float64), two["depth"],
                                 two["intrinsics"][0].astype(np.float64), two["extrinsics"][0].astype(np.float64))
    assert share > 0.7 and error < 2e-3, (share, error)  # plain scaling of K gives about 6e-3


def test_pair_scores_rank_overlapping_views_first(tiny_dtu):
    scan = dtu.open_scan(tiny_dtu, "scan1")
    views = {v: dtu.read_view(scan, v, 0) for v in scan.views}
    for ref in (0, 6, 11):
        a = views[ref]
        points, _, _ = gen.backproject(a.depth, a.intrinsic, a.extrinsic, stride=2)
        overlap = {v: gen.seen_by(points, b.depth, b.intrinsic, b.extrinsic).mean()
                   for v, b in views.items() if v != ref}
        listed = [v for v, _ in scan.pairs[ref]]
        ranked = sorted(overlap, key=lambda v: -overlap[v])
        assert listed[0] in ranked[:3], (ref, listed, ranked)
        unlisted = [v for v in overlap if v not in listed]
        assert min(overlap[v] for v in listed[:3]) > np.median([overlap[v] for v in unlisted])
        scores = [s for _, s in scan.pairs[ref]]
        assert scores == sorted(scores, reverse=True) and scores[0] > 0


def test_generator_refuses_a_used_folder(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "f").write_text("")
    _fails(lambda: gen.write_mvs_dataset(tmp_path / "x"), "not empty")


# --- bad input ------------------------------------------------------------------------------------------

def test_missing_camera_file(dtu_copy):
    (dtu_copy / "Cameras/train/00000003_cam.txt").unlink()
    _fails(lambda: MultiViewData(dtu_copy, ["scan1"]), "pair.txt", "view 3", "00000003_cam.txt", "missing")
    _fails(lambda: read_cam(dtu_copy / "Cameras/train/00000003_cam.txt"), "00000003_cam.txt", "not found")


def test_pair_file_naming_a_missing_view(dtu_copy):
    pair = dtu_copy / "scan3/pair.txt"
    lines = pair.read_text().splitlines()
    lines[2] = "1 40 12.0"
    pair.write_text("\n".join(lines) + "\n")
    _fails(lambda: MultiViewData(dtu_copy, ["scan3"], split="test"), "scan3/pair.txt", "view 40")
    (dtu_copy / "scan3/images/00000007.jpg").unlink()
    write_pair(pair, {0: [(7, 1.0)], 7: [(0, 1.0)]})
    _fails(lambda: MultiViewData(dtu_copy, ["scan3"], split="test", n_src=1), "scan3/pair.txt", "view 7",
           "00000007.jpg", "missing")


def test_bad_camera_matrix_and_depth_range(dtu_copy):
    path = dtu_copy / "scan3/cams/00000002_cam.txt"
    text = path.read_text()
    lines = text.splitlines()
    lines[1] = "nan " + " ".join(lines[1].split()[1:])
    path.write_text("\n".join(lines) + "\n")
    data = MultiViewData(dtu_copy, ["scan3"], split="test", n_src=2)  # cameras are read with their sample
    index = next(i for i, d in enumerate(data.descriptors) if d["view"] == 2)
    _fails(lambda: data[index], "00000002_cam.txt", "non-finite")
    lines = text.splitlines()
    lines[-1] = "600 2.5 192 500"
    path.write_text("\n".join(lines) + "\n")
    _fails(lambda: data[index], "00000002_cam.txt", "DEPTH_MIN 600", "below DEPTH_MAX 500")


def test_unreadable_pfm_and_missing_scan_folder(dtu_copy):
    (dtu_copy / "Depths/scan1_train/depth_map_0002.pfm").write_bytes(b"Pf\n96 64\n-1.0\n" + b"\0" * 100)
    data = MultiViewData(dtu_copy, ["scan1"], n_src=2, light=0)
    index = next(i for i, d in enumerate(data.descriptors) if d["view"] == 2)
    _fails(lambda: data[index], "depth_map_0002.pfm", "truncated")
    (dtu_copy / "Depths/scan1_train/depth_map_0002.pfm").write_bytes(b"P6\n1 1\n255\n\0\0\0")
    _fails(lambda: data[index], "depth_map_0002.pfm", "unreadable")
    _fails(lambda: MultiViewData(dtu_copy, ["scan9"]), "scan9", "scan folder not found")
    _fails(lambda: MultiViewData(dtu_copy, ["nine"]), "scanN")


def test_paths_stay_inside_and_limits_apply(dtu_copy, tmp_path):
    outside = tmp_path / "outside"
    shutil.move(dtu_copy / "scan3", outside)
    (dtu_copy / "scan3").symlink_to(outside)
    _fails(lambda: MultiViewData(dtu_copy, ["scan3"], split="test"), "symlink", "outside the dataset folder")
    assert len(MultiViewData(dtu_copy, ["scan3"], split="test",
                             limits=ReadLimits(allow_outside_paths=True))) == 12
    data = MultiViewData(dtu_copy, ["scan1"], light=0, limits=ReadLimits(max_pixels=1000))
    _fails(lambda: data[0], "rect_", "scene.max_pixels")
    with reading(ReadLimits(max_pixels=1000)):
        _fails(lambda: read_pfm(dtu_copy / "Depths/scan1_train/depth_map_0000.pfm"), "depth_map_0000.pfm",
               "max_pixels")


# --- the data module ----------------------------------------------------------------------------------

def test_samples_have_the_contract_shapes(tiny_dtu):
    data = MultiViewData(tiny_dtu, None, "train", n_src=3, height=32, width=64)
    assert len(data) == 2 * 12 * 2  # scans x views x lights
    item = data[5]
    assert item["images"].shape == (4, 3, 32, 64) and item["images"].dtype == np.float32
    assert 0 <= item["images"].min() and item["images"].max() <= 1
    assert item["intrinsics"].shape == (4, 3, 3) and item["extrinsics"].shape == (4, 4, 4)
    assert item["depth"].shape == (32, 64) and item["mask"].dtype == bool
    assert (item["depth_min"], item["depth_max"]) == (425.0, 935.0)
    desc = data.descriptors[5]
    assert item["view"] == desc["view"] and item["source_views"].tolist() == desc["sources"]
    assert desc["sources"] == [v for v, _ in data.scans[desc["scan"]].pairs[desc["view"]][:3]]
    # Non-uniform resize: fx and fy follow their own axes.
    k = gen.intrinsic(96, 64)
    assert np.allclose(item["intrinsics"][0, 0, 0], k[0, 0] * 64 / 96, rtol=1e-6)
    assert np.allclose(item["intrinsics"][0, 1, 1], k[1, 1] * 32 / 64, rtol=1e-6)
    test = MultiViewData(tiny_dtu, None, "test", n_src=2)
    assert len(test) == 12 and test[0]["images"].shape == (3, 3, 96, 128) and "depth" not in test[0]
    evals = data.eval_items()
    assert len(evals) == 24 and {d["light"] for d in evals.descriptors} == {0}


def test_samples_are_read_lazily(dtu_copy):
    data = MultiViewData(dtu_copy, ["scan1"], n_src=2, light=1)
    first = data.descriptors[0]
    (dtu_copy / f"Rectified/scan1_train/rect_{first['view'] + 1:03d}_1_r5000.png").write_bytes(b"not a png")
    # Only the sample that reads the damaged image fails, and only when asked for.
    clean = next(i for i, d in enumerate(data.descriptors) if first["view"] not in (d["view"], *d["sources"]))
    assert data[clean]["images"].shape[0] == 3
    _fails(lambda: data[0], f"rect_{first['view'] + 1:03d}_1_r5000.png", "unreadable")


def test_train_batches_are_endless_and_rank_disjoint(tiny_dtu):
    data = MultiViewData(tiny_dtu, ["scan1"], n_src=2, height=32, width=32, light=0)
    shards = [data.shard(rank, 3, seed=7) for rank in range(3)]
    assert sorted(i for shard in shards for i in shard) == list(range(len(data)))
    assert data.shard(1, 3, seed=7) == shards[1] and data.shard(1, 3, seed=8) != shards[1]
    batches = data.train_batches(rank=1, world=3, batch_size=3, seed=7)
    seen = []
    for _ in range(3):  # 9 samples from a shard of 4: the iterator goes round
        batch = next(batches)
        assert tuple(batch["images"].shape) == (3, 3, 3, 32, 32) and tuple(batch["depth"].shape) == (3, 32, 32)
        assert len(batch["scan"]) == 3 and tuple(batch["source_views"].shape) == (3, 2)
        seen += batch["view"].tolist()
    shard_views = {data.descriptors[i]["view"] for i in shards[1]}
    assert set(seen) == shard_views
    _fails(lambda: data.train_batches(rank=3, world=3, batch_size=1, seed=0), "rank")


def test_ray_dataset_reads_lazily(tiny_dtu, local_ray):
    data = MultiViewData(tiny_dtu, ["scan1"], n_src=2, height=32, width=64, light=0)
    ds = data.ray_dataset("train")
    rows = ds.take(2)
    assert len(rows) == 2
    for row in rows:
        assert row["images"].shape == (3, 3, 32, 64) and row["depth"].shape == (32, 64)
        assert row["scan"] == "scan1" and len(row["source_views"]) == 2
    assert isinstance(data.ray_dataset("test"), type(ds))  # another split: built, nothing read yet


def test_config_builds_the_module(tiny_dtu):
    from fieldkd.platform.config import compose_config

    cfg = compose_config(["scene=dtu", f"scene.path={tiny_dtu}", "scene.train_scans=[2]", "scene.n_src=2",
                          "scene.height=32", "scene.width=32", "scene.light=1"])
    data = MultiViewData.from_config(cfg["scene"], "train")
    assert list(data.scans) == ["scan2"] and len(data) == 12 and data[0]["light"] == 1
    assert len(MultiViewData.from_config(cfg["scene"], "test")) == 12
