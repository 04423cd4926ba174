"""Real-capture formats as their tools write them: distorted and per-frame cameras (nerfstudio,
instant-ngp), missing frames, masks, depth files, Blender JPG frames, MonoSDF crops, NeuS/IDR."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from fieldkd.platform.errors import InputError
from fieldkd.platform.evaluate.depth import align_scale_shift, depth_metrics
from fieldkd.platform.scenes import exr, load_scene, png16, write_scene
from fieldkd.platform.scenes import sdf
from fieldkd.platform.scenes.generator import LENSES, render_scene, scene_spec
from fieldkd.platform.scenes.monosdf import CROPS, crop_intrinsics
from fieldkd.platform.scenes.options import ReadOptions
from fieldkd.platform.scenes.registry import write_format
from fieldkd.platform.scenes.scene import Scene, SceneSplit
from fieldkd.platform.scenes.cameras import Cameras
from fieldkd.platform.stages import load_scene_from_config
from fieldkd.platform.train.photometric import PixelSampler

SMALL = dict(width=20, height=16, n_train=4, n_val=1, n_test=2)


def _write(tmp, fmt="nerfstudio", **options):
    return write_scene("sphere", tmp, fmt, mesh_resolution=16, progress=False, **{**SMALL, **options})


@pytest.fixture(scope="module")
def lens_scenes(tmp_path_factory):
    base = tmp_path_factory.mktemp("lens")
    # A wide view (80 degrees), where the lens moves the corners by a pixel or more.
    return {lens: write_scene("default", base / lens, "nerfstudio", mesh_resolution=16, progress=False,
                              lens=lens, camera_angle_x=1.4, **SMALL) for lens in ("opencv", "fisheye")}


@pytest.fixture
def copy_of(lens_scenes, tmp_path):
    return lambda lens: Path(shutil.copytree(lens_scenes[lens], tmp_path / lens))


def _edit(path, change):
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def _surface_error(split) -> float:
    """Mean distance from the scene's surface (its SDF) of the points that depth puts along each pixel's ray."""
    spec, errors = scene_spec("default"), []
    for i in range(len(split)):
        rays = split.cameras.image_rays(i)
        depth = split.depths[i].reshape(-1)
        hit = depth > 0
        points = rays.origins[hit] + rays.directions[hit] * (depth[hit] / rays.z_scale[hit])[:, None]
        errors.append(sdf.union_distance(spec, points).abs())
    return torch.cat(errors).mean().item()


@pytest.mark.parametrize("lens, model_name", [("opencv", "OPENCV"), ("fisheye", "OPENCV_FISHEYE")])
def test_distorted_captures_load_and_their_rays_go_through_the_lens(lens_scenes, lens, model_name):
    meta = json.loads((lens_scenes[lens] / "transforms.json").read_text())
    assert meta["camera_model"] == model_name and meta["k1"] == pytest.approx(LENSES[lens][0])
    scene = load_scene("nerfstudio", lens_scenes[lens])
    split = scene.splits["train"]
    assert split.cameras.model == lens
    assert torch.allclose(split.cameras.distortion, torch.tensor(LENSES[lens]).expand(4, -1))
    # Depth along the lens rays lands on the sphere (to the 1 mm of the depth PNG); along pinhole rays it does not.
    assert _surface_error(split) < 2e-3
    c = split.cameras
    pinhole = SceneSplit(split.images, Cameras(c.c2w, c.fx, c.fy, c.cx, c.cy, c.width, c.height),
                         split.frame_paths, depths=split.depths)
    assert _surface_error(pinhole) > 4 * _surface_error(split)


def test_k1_0_0578_is_read_not_refused(copy_of):
    root = copy_of("opencv")
    _edit(root / "transforms.json", lambda m: [m.pop(k) for k in ("k2", "k3", "k4", "p1", "p2")])
    scene = load_scene("nerfstudio", root)
    assert scene.splits["train"].cameras.distortion[0].tolist() == pytest.approx([0.0578, 0, 0, 0, 0, 0])


def test_per_frame_intrinsics_round_trip(tmp_path):
    root = _write(tmp_path / "pf", per_frame_intrinsics=True)
    frames = json.loads((root / "transforms.json").read_text())["frames"]
    assert len({f.get("fl_x") for f in frames}) > 2
    scene = load_scene("nerfstudio", root)
    rendered = render_scene("sphere", per_frame_intrinsics=True, **SMALL)
    for name, split in rendered.splits.items():
        for key in ("fx", "fy", "cx", "cy"):
            assert torch.allclose(getattr(scene.splits[name].cameras, key), getattr(split.cameras, key), atol=1e-4)
        assert (scene.splits[name].images - split.images).abs().max().item() <= 1 / 255 + 1e-5


def test_per_frame_image_sizes_are_resampled_with_their_intrinsics(copy_of):
    root = copy_of("opencv")
    path = root / "transforms.json"
    meta = json.loads(path.read_text())
    first = meta["train_filenames"][1]
    frame = next(f for f in meta["frames"] if f["file_path"] == first)
    image = root / first
    Image.open(image).resize((40, 32), Image.BILINEAR).save(image)  # twice the size, K twice as large
    frame.update(w=40, h=32, fl_x=2 * meta["fl_x"], fl_y=2 * meta["fl_y"], cx=2 * meta["cx"], cy=2 * meta["cy"])
    for f in meta["frames"]:
        f.pop("depth_file_path"), f.pop("normal_file_path")
    path.write_text(json.dumps(meta))
    split = load_scene("nerfstudio", root).splits["train"]
    assert split.images.shape[1:3] == (16, 20)
    assert split.cameras.fx[1].item() == pytest.approx(meta["fl_x"], rel=1e-6)
    assert split.cameras.cx[1].item() == pytest.approx(meta["cx"], rel=1e-6)


def test_instant_ngp_file(copy_of):
    root = copy_of("opencv")
    meta = json.loads((root / "transforms.json").read_text())
    ngp = {"fl_x": meta["fl_x"], "fl_y": meta["fl_y"], "cx": meta["cx"], "cy": meta["cy"], "w": 20, "h": 16,
           "k1": meta["k1"], "k2": meta["k2"], "p1": meta["p1"], "p2": meta["p2"],
           "aabb_scale": 4, "scale": 0.5, "offset": [0.5, 0.6, 0.25],
           "frames": [{k: f[k] for k in ("file_path", "transform_matrix")} for f in meta["frames"]]}
    ngp["frames"][0]["fl_x"] = 33.0  # per-frame intrinsics
    (root / "transforms.json").write_text(json.dumps(ngp))
    scene = load_scene("nerfstudio", root)
    # instant-ngp's box 0.5 +- aabb_scale / 2 mapped back through p * scale + offset.
    centre = (0.5 - torch.tensor([0.5, 0.6, 0.25])) / 0.5
    assert torch.allclose(scene.aabb, torch.stack([centre - 4.0, centre + 4.0]), atol=1e-5)
    assert scene.splits["train"].cameras.model == "opencv"
    fxs = torch.cat([s.cameras.fx for s in scene.splits.values()])
    assert (fxs == 33.0).sum().item() == 1
    fisheye = dict(ngp, is_fisheye=True, k3=0.0, k4=0.0)
    del fisheye["p1"], fisheye["p2"]
    (root / "transforms.json").write_text(json.dumps(fisheye))
    assert load_scene("nerfstudio", root).splits["train"].cameras.model == "fisheye"


def test_missing_frames_are_skipped_with_a_warning_or_refused(copy_of, capsys):
    root = copy_of("opencv")
    meta = json.loads((root / "transforms.json").read_text())
    gone = [meta["train_filenames"][1], meta["test_filenames"][0]]
    for name in gone:
        (root / name).unlink()
    scene = load_scene("nerfstudio", root)
    assert len(scene.splits["train"]) == 3 and len(scene.splits["test"]) == 1
    err = capsys.readouterr().err
    assert "skipped 1 of 4 frames" in err and Path(gone[0]).name in err and Path(gone[1]).name in err
    with pytest.raises(InputError, match="frame image not found") as info:
        load_scene("nerfstudio", root, missing_frames="error")
    assert "\n" not in str(info.value) and Path(gone[0]).name in str(info.value)
    with pytest.raises(InputError, match="scene.missing_frames"):
        load_scene("nerfstudio", root, missing_frames="maybe")


def test_masks_weight_training_pixels(copy_of):
    root = copy_of("opencv")
    path = root / "transforms.json"
    meta = json.loads(path.read_text())
    (root / "masks").mkdir()
    keep = np.zeros((16, 20), dtype=np.uint8)
    keep[:, :5] = 255  # nerfstudio: 0 = ignore the pixel
    for f in meta["frames"]:
        f["mask_path"] = "masks/" + Path(f["file_path"]).name
        Image.fromarray(keep).save(root / f["mask_path"])
    path.write_text(json.dumps(meta))
    split = load_scene("nerfstudio", root).splits["train"]
    assert split.masks.shape == (4, 16, 20) and split.masks[:, :, :5].min() == 1 and split.masks[:, :, 5:].max() == 0
    sampler = PixelSampler(split, torch.device("cpu"), torch.Generator().manual_seed(0))
    flat, _, _ = sampler._pixels(500)
    assert ((flat % 20) < 5).all()
    # The nerfstudio writer writes them back (mask_path), and the reader reads the same.
    scene = load_scene("nerfstudio", root)
    again = load_scene("nerfstudio", write_format("nerfstudio", scene, root.parent / "again"))
    assert torch.equal(again.splits["train"].masks, split.masks)


def test_depth_files_npy_16bit_png_and_exr(copy_of):
    root = copy_of("opencv")
    path = root / "transforms.json"
    reference = load_scene("nerfstudio", root).splits["train"].depths
    meta = json.loads(path.read_text())
    # 16-bit PNG in millimetres: scene.depth_scale overrides the file's unit.
    doubled = load_scene("nerfstudio", root, depth_scale=2e-3).splits["train"].depths
    assert torch.allclose(doubled, 2 * reference)
    # .npy, stored value * unit as nerfstudio reads it.
    for f in meta["frames"]:
        png = root / f["depth_file_path"]
        np.save(png.with_suffix(".npy"), np.asarray(Image.open(png)).astype(np.float32))
        f["depth_file_path"] = str(Path(f["depth_file_path"]).with_suffix(".npy"))
    path.write_text(json.dumps(meta))
    assert torch.allclose(load_scene("nerfstudio", root).splits["train"].depths, reference)
    # EXR: float depth in the file's unit, as renderers write it.
    for f in meta["frames"]:
        npy = root / f["depth_file_path"]
        exr.write_depth(npy.with_suffix(".exr"), np.load(npy))
        f["depth_file_path"] = str(Path(f["depth_file_path"]).with_suffix(".exr"))
    path.write_text(json.dumps(meta))
    assert torch.allclose(load_scene("nerfstudio", root).splits["train"].depths, reference)
    (root / meta["frames"][0]["depth_file_path"]).write_bytes(b"v/1\x01")
    with pytest.raises(InputError, match="unreadable depth map") as info:
        load_scene("nerfstudio", root)
    assert "train_0000.exr" in str(info.value) and "\n" not in str(info.value)


def test_principal_point_outside_the_image_is_refused(copy_of):
    root = copy_of("opencv")
    _edit(root / "transforms.json", lambda m: m.update(cx=823.0))
    with pytest.raises(InputError, match=r"principal point \(cx=823") as info:
        load_scene("nerfstudio", root)
    assert "\n" not in str(info.value) and "20x16 image" in str(info.value)


def test_applied_transform_is_kept_and_checked(copy_of):
    root = copy_of("opencv")
    applied = [[0, 1, 0, 0.5], [1, 0, 0, 0], [0, 0, -1, 0]]  # ns-process-data writes 3x4
    _edit(root / "transforms.json", lambda m: m.update(applied_transform=applied))
    assert load_scene("nerfstudio", root).extras["applied_transform"] == applied
    _edit(root / "transforms.json", lambda m: m.update(applied_transform=[[1, 0], [0, 1]]))
    with pytest.raises(InputError, match="applied_transform"):
        load_scene("nerfstudio", root)


@pytest.fixture(scope="module")
def blender_scene(tmp_path_factory):
    return _write(tmp_path_factory.mktemp("bl") / "scene", "blender")


def test_blender_jpg_frames_without_and_with_extension(blender_scene, tmp_path):
    root = Path(shutil.copytree(blender_scene, tmp_path / "jpg"))
    original = load_scene("blender", blender_scene)
    for png in (root / "train").glob("r_?.png"):
        Image.open(png).convert("RGB").save(png.with_suffix(".jpg"), quality=95)
        png.unlink()
    scene = load_scene("blender", root)  # file_path "./train/r_0" finds r_0.jpg
    assert scene.splits["train"].frame_paths[0].endswith("r_0.jpg")
    # JPEG has no alpha: the frames are opaque, colour as composited on black by convert("RGB").
    assert scene.splits["train"].alphas.min() == 1
    _edit(root / "transforms_train.json", lambda m: [f.update(file_path=f["file_path"] + ".jpg") for f in m["frames"]])
    assert torch.equal(load_scene("blender", root).splits["train"].images, scene.splits["train"].images)
    assert torch.equal(scene.splits["test"].images, original.splits["test"].images)


def _filtered_png16(path, pixels):
    """A 16-bit RGB PNG whose rows use each of the five PNG filters in turn (a libpng-like file)."""
    import struct
    import zlib

    h, w, c = pixels.shape
    data = pixels.astype(">u2").reshape(h, -1).view(np.uint8).astype(np.int64)
    bpp, rows = c * 2, []
    for y in range(h):
        line, prior = data[y], data[y - 1] if y else np.zeros_like(data[0])
        left = np.concatenate([np.zeros(bpp, np.int64), line[:-bpp]])
        up_left = np.concatenate([np.zeros(bpp, np.int64), prior[:-bpp]])
        p = left + prior - up_left
        pa, pb, pc = abs(p - left), abs(p - prior), abs(p - up_left)
        paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prior, up_left))
        kind = y % 5
        guess = [0, left, prior, (left + prior) // 2, paeth][kind]
        rows.append(bytes([kind]) + ((line - guess) % 256).astype(np.uint8).tobytes())

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(png16.SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"".join(rows)))
                     + chunk(b"IEND", b""))


def test_16bit_png_frames_keep_their_precision(blender_scene, tmp_path):
    root = Path(shutil.copytree(blender_scene, tmp_path / "deep"))
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 65536, size=(16, 20, 3), dtype=np.uint16)
    _filtered_png16(root / "train" / "r_1.png", pixels)
    assert (png16.read(root / "train" / "r_1.png") == pixels).all()
    split = load_scene("blender", root).splits["train"]
    assert np.abs(split.images[1].numpy() * 65535 - pixels).max() < 0.05  # not 8-bit: 1/255 would be 257
    png16.write(root / "train" / "r_2.png", np.concatenate([pixels, np.full((16, 20, 1), 65535, np.uint16)], -1))
    assert np.abs(load_scene("blender", root).splits["train"].images[2].numpy() * 65535 - pixels).max() < 0.05


@pytest.mark.parametrize("crop", ["center_crop_for_dtu", "center_crop_for_replica", "center_crop_for_tnt"])
def test_monosdf_center_crops(crop, tmp_path):
    size, width = CROPS[crop]
    k = np.array([[1000.0, 0, 823.0], [0, 1000.0, 600.0], [0, 0, 1]])
    cropped = crop_intrinsics(k, crop)  # MonoSDF's: cx - (W - S) / 2, then K[:2] * 384 / S
    s = 384 / size
    assert np.allclose(cropped, [[1000 * s, 0, (823 - (width - size) / 2) * s], [0, 1000 * s, 600 * s], [0, 0, 1]])
    # Round trip through the writer: cameras.npz holds the uncropped K, as MonoSDF's data do.
    scene = _square_scene(384)
    root = write_format("monosdf", scene, tmp_path / "m", center_crop=crop)
    with pytest.raises(InputError, match="principal point") as info:
        load_scene("monosdf", root)
    assert "scene.center_crop=" in str(info.value) and "\n" not in str(info.value)
    got = load_scene("monosdf", root, center_crop=crop).splits["train"].cameras
    for key in ("fx", "fy", "cx", "cy"):
        assert torch.allclose(getattr(got, key), getattr(scene.splits["train"].cameras, key), rtol=1e-5)
    with pytest.raises(InputError, match="expects MonoSDF's 384x384"):
        load_scene("monosdf", write_format("monosdf", _square_scene(64), tmp_path / "small"), center_crop=crop)


def _square_scene(side: int) -> Scene:
    from fieldkd.platform.scenes.cameras import look_at

    c2w = torch.stack([look_at(torch.tensor([0.0, -2.5, 0.5]), torch.zeros(3)),
                       look_at(torch.tensor([2.5, 0.0, 0.5]), torch.zeros(3))])
    full = lambda v: torch.full((2,), float(v))  # noqa: E731
    cams = Cameras(c2w, full(1.1 * side), full(1.1 * side), full(side / 2 + 3), full(side / 2 - 2), side, side)
    split = SceneSplit(torch.rand(2, side, side, 3), cams, ["a", "b"], alphas=torch.ones(2, side, side))
    return Scene("square", Path("square"), {"train": split, "test": split}, torch.tensor([[-1.0] * 3, [1.0] * 3]),
                 0.5, 4.0, torch.ones(3))


@pytest.fixture(scope="module")
def neus_scene(tmp_path_factory):
    return _write(tmp_path_factory.mktemp("neus") / "scene", "neus")


def test_neus_layout_round_trip(neus_scene):
    assert sorted(p.name for p in neus_scene.iterdir()) == ["cameras_sphere.npz", "image", "mask", "mesh.ply"]
    scene = load_scene("neus", neus_scene, background=(0.0, 0.0, 0.0))
    rendered = render_scene("sphere", background=(0.0, 0.0, 0.0), **SMALL)
    frames = [s for s in rendered.splits.values()]
    split = scene.splits["train"]
    assert len(split) == 7 and scene.splits["test"] is split
    for key in ("c2w", "fx", "fy", "cx", "cy"):
        want = torch.cat([getattr(s.cameras, key) for s in frames])
        assert torch.allclose(getattr(split.cameras, key), want, atol=1e-4)
    assert (split.images - torch.cat([s.images for s in frames])).abs().max().item() <= 2 / 255
    assert (split.alphas - torch.cat([s.alphas for s in frames])).abs().max().item() <= 1 / 255
    assert scene.extras["format"] == "neus" and torch.equal(scene.aabb, torch.tensor([[-1.0] * 3, [1.0] * 3]))


def test_neus_idr_camera_name_and_bad_layouts(neus_scene, tmp_path):
    root = Path(shutil.copytree(neus_scene, tmp_path / "idr"))
    (root / "cameras_sphere.npz").rename(root / "cameras.npz")  # IDR's name
    assert len(load_scene("neus", root).splits["train"]) == 7
    next((root / "mask").iterdir()).unlink()
    with pytest.raises(InputError, match="6 masks for 7 images"):
        load_scene("neus", root)
    shutil.rmtree(root / "mask")
    data = dict(np.load(root / "cameras.npz"))
    data.pop("world_mat_6")
    np.savez(root / "cameras.npz", **data)
    with pytest.raises(InputError, match="missing world_mat_6"):
        load_scene("neus", root)


def test_lens_cameras_are_refused_by_formats_without_lens_model(tmp_path):
    with pytest.raises(InputError, match="format blender has no lens model"):
        _write(tmp_path / "b", "blender", lens="opencv")
    split = render_scene("sphere", lens="fisheye", **SMALL).splits["train"]
    scene = Scene("f", Path("f"), {"train": split}, torch.tensor([[-1.0] * 3, [1.0] * 3]), 1.0, 6.0, torch.ones(3))
    for fmt in ("blender", "monosdf", "neus"):  # the writers refuse too, rather than drop the lens
        with pytest.raises(ValueError, match=f"{fmt} format has no lens model"):
            write_format(fmt, scene, tmp_path / fmt)


def test_monocular_depth_metrics_align_scale_and_shift(tmp_path):
    gt = np.linspace(1.0, 3.0, 24).reshape(4, 6)
    gt[0, 0] = 0  # no surface
    pred = 0.001 * gt + 5.0  # right shape, wrong scale and shift: what a monocular cue gives
    assert depth_metrics(pred, gt)["abs_rel"] > 1.0
    assert depth_metrics(align_scale_shift(pred, gt), gt)["abs_rel"] < 1e-4
    # MonoSDF's own data (no splits.json) is monocular; our generated rooms say "metric".
    room = _square_scene(16)
    root = write_format("monosdf", room, tmp_path / "m")
    assert load_scene("monosdf", root).extras["depth_kind"] == "metric"
    (root / "splits.json").unlink()
    assert load_scene("monosdf", root).extras["depth_kind"] == "monocular"


@pytest.mark.parametrize("group, fmt", [("monosdf", "monosdf"), ("neus", "neus")])
def test_config_groups(group, fmt, neus_scene, tmp_path):
    conf = Path(__file__).parents[1] / "fieldkd" / "conf" / "scene" / f"{group}.yaml"
    cfg = yaml.safe_load(conf.read_text())
    assert cfg["format"] == fmt and cfg["path"] == "???"
    assert set(ReadOptions.__dataclass_fields__) <= set(cfg)
    root = neus_scene if fmt == "neus" else write_format("monosdf", _square_scene(16), tmp_path / "m")
    scene = load_scene_from_config({**cfg, "path": str(root)})
    assert scene.extras["format"] == fmt
    with pytest.raises(InputError, match="scene.center_crop"):
        load_scene_from_config({**cfg, "path": str(root), "center_crop": "center_crop_for_lego"})


def test_mei_cameras_from_a_transforms_file(copy_of):
    root = copy_of("opencv")  # KITTI-360's fisheye calibration: xi, k1, k2, p1, p2, gamma1/2, u0/v0
    _edit(root / "transforms.json", lambda m: m.update(camera_model="MEI", xi=1.2, k1=-0.1, k2=0.02, p1=0.001,
                                                       p2=0.0, k3=0.0, k4=0.0))
    cams = load_scene("nerfstudio", root).splits["train"].cameras
    assert cams.model == "mei" and cams.distortion[0].tolist() == pytest.approx([1.2, -0.1, 0.02, 0.001, 0.0])
    _edit(root / "transforms.json", lambda m: m.update(k3=0.5))
    with pytest.raises(InputError, match="k3=0.5 is not a parameter of the mei camera model"):
        load_scene("nerfstudio", root)


def test_distillation_poses_see_through_the_training_lens(lens_scenes):
    from fieldkd.platform.distill.inquirers import _pixel_rays

    cams = load_scene("nerfstudio", lens_scenes["fisheye"]).splits["train"].cameras
    cam = torch.tensor([0, 1])
    px, py = torch.tensor([0.0, 19.0]), torch.tensor([0.0, 15.0])
    rays = _pixel_rays(cams, cam, cams.c2w[cam], px, py)  # the training poses themselves
    assert torch.allclose(rays.directions, cams.rays_at(cam, px, py).directions, atol=1e-5)


def test_monosdf_depth_scale(tmp_path):
    room = _square_scene(16)
    room.splits["train"].depths = torch.full((2, 16, 16), 1.5)
    root = write_format("monosdf", Scene(**{**room.__dict__, "splits": {"train": room.splits["train"]}}),
                       tmp_path / "m")
    plain = load_scene("monosdf", root).splits["train"].depths
    assert torch.allclose(load_scene("monosdf", root, depth_scale=1e-3).splits["train"].depths, plain * 1e-3)


def test_evaluate_views_aligns_monocular_depth_before_scoring(tmp_path):
    from fieldkd.platform.evaluate.views import evaluate_views
    from fieldkd.platform.fields import build_field
    from fieldkd.platform.render.renderer import RenderConfig, Renderer

    scene = load_scene("monosdf", write_format("monosdf", _square_scene(12), tmp_path / "m"))
    torch.manual_seed(0)
    field = build_field("hash", scene.aabb, log2_hashmap_size=10, n_levels=2, max_resolution=16)
    renderer = Renderer(scene.aabb, scene.near, scene.far, scene.background,
                        RenderConfig(samples_per_ray=16, occupancy=False))
    split = scene.splits["train"]
    rendered = torch.stack([renderer.render_image(field, split.cameras, i)["depth"] for i in range(len(split))])
    split.depths = (rendered - rendered.min() + 0.1) * 1e4  # the rendered depth up to scale and shift
    metric = evaluate_views(renderer, field, split, views=[0, 1]).metrics["depth/abs_rel"]
    aligned = evaluate_views(renderer, field, split, views=[0, 1], depth_align=True).metrics["depth/abs_rel"]
    assert metric > 0.9 and aligned < 1e-3


def test_an_evaluation_split_without_images_is_left_out(blender_scene, tmp_path, capsys):
    root = Path(shutil.copytree(blender_scene, tmp_path / "noval"))
    shutil.rmtree(root / "val")
    scene = load_scene("blender", root)
    assert set(scene.splits) == {"train", "test"} and "left out the val split" in capsys.readouterr().err
    shutil.rmtree(root / "test")
    with pytest.raises(InputError, match="no frame image of transforms_val.json or transforms_test.json"):
        load_scene("blender", root)
