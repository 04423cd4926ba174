"""Readers and writers: round trips, compositing, downscale, splits, derived bounds."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from fieldkd.platform.scenes import FORMATS, load_scene
from fieldkd.platform.scenes.bounds import derive_bounds, focus_point
from fieldkd.platform.scenes.generator import render_scene
from fieldkd.platform.scenes.registry import write_format

BG = (0.2, 0.4, 0.6)
SPLIT_FORMATS = [f for f in FORMATS if f != "neus"]  # NeuS has no splits: see test_real_formats.py


@pytest.fixture(scope="module")
def generated():
    return render_scene("default", width=16, height=16, n_train=5, n_val=2, n_test=3)


@pytest.fixture(scope="module")
def written(generated, tmp_path_factory):
    return {fmt: write_format(fmt, generated, tmp_path_factory.mktemp(fmt) / "scene") for fmt in SPLIT_FORMATS}


@pytest.fixture
def copy_of(written, tmp_path):
    def make(fmt):
        return shutil.copytree(written[fmt], tmp_path / fmt)
    return make


def _json_file(root, fmt):
    return root / ("transforms.json" if fmt == "nerfstudio" else "transforms_train.json")


@pytest.mark.parametrize("fmt", SPLIT_FORMATS)
def test_round_trip(generated, written, fmt):
    scene = load_scene(fmt, written[fmt], background=BG)
    assert set(scene.splits) == {"train", "val", "test"}
    for name, gen in generated.splits.items():
        got = scene.splits[name]
        for key in ("c2w", "fx", "fy", "cx", "cy"):
            assert torch.allclose(getattr(got.cameras, key), getattr(gen.cameras, key), rtol=1e-5, atol=1e-5)
        assert (got.cameras.width, got.cameras.height) == (16, 16)
        # Generated images are on white; re-composite the same coverage on BG.
        a = gen.alphas[..., None]
        expected = gen.images - (1 - a) * (1 - torch.tensor(BG))
        assert (got.images - expected).abs().max().item() <= 1 / 255 + 1e-5
        assert (got.alphas - gen.alphas).abs().max().item() <= 0.5 / 255 + 1e-6
        assert (got.depths - gen.depths).abs().max().item() <= 1e-3
        hit = gen.depths > 0
        assert (got.normals[hit] * gen.normals[hit]).sum(-1).min().item() > 0.999
        assert (got.normals[~hit] == 0).all()
    assert torch.allclose(scene.aabb, generated.aabb)
    assert scene.near == pytest.approx(generated.near) and scene.far == pytest.approx(generated.far)
    assert scene.mesh_path is None


@pytest.mark.parametrize("fmt", SPLIT_FORMATS)
def test_downscale_is_area_average(written, fmt):
    full = load_scene(fmt, written[fmt], background=BG)
    half = load_scene(fmt, written[fmt], background=BG, downscale=2)
    f, h = full.splits["train"], half.splits["train"]
    assert h.images.shape == (5, 8, 8, 3) and (h.cameras.width, h.cameras.height) == (8, 8)
    assert torch.allclose(h.cameras.fx, f.cameras.fx / 2) and torch.allclose(h.cameras.cx, f.cameras.cx / 2)
    blocks = f.images.reshape(5, 8, 2, 8, 2, 3).mean(dim=(2, 4))
    assert torch.allclose(h.images, blocks, atol=1e-6)


def test_nerfstudio_interval_split_and_overrides(copy_of):
    root = copy_of("nerfstudio")
    path = root / "transforms.json"
    meta = json.loads(path.read_text())
    for key in ("train_filenames", "val_filenames", "test_filenames"):
        del meta[key]
    meta["frames"][1]["fl_x"] = 30.0  # per-frame intrinsics win
    meta["applied_transform"] = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]
    path.write_text(json.dumps(meta))
    scene = load_scene("nerfstudio", root)
    names = sorted(f["file_path"] for f in meta["frames"])
    test_names = [str(root / n) for n in names[::8]]
    assert scene.splits["test"].frame_paths == test_names and "val" not in scene.splits
    assert len(scene.splits["train"]) == len(names) - len(test_names)
    assert scene.split("val") is scene.splits["test"]
    by_path = {p: i for i, p in enumerate(scene.splits["train"].frame_paths)}
    i = by_path[str(root / meta["frames"][1]["file_path"])]
    assert scene.splits["train"].cameras.fx[i].item() == 30.0
    assert scene.extras["applied_transform"] == meta["applied_transform"]


def test_nerfstudio_aabb_scale_sets_half_size(copy_of):
    root = copy_of("nerfstudio")
    meta = json.loads((root / "transforms.json").read_text())
    del meta["aabb"]
    meta["aabb_scale"] = 2
    (root / "transforms.json").write_text(json.dumps(meta))
    scene = load_scene("nerfstudio", root)
    assert torch.allclose(scene.aabb[1], torch.full((3,), 1.0 / 0.33), atol=1e-4)  # instant-ngp meaning
    assert torch.allclose(scene.aabb.sum(0), torch.zeros(3), atol=1e-4)


def test_depth_unit_scale_factor(copy_of, written):
    root = copy_of("nerfstudio")
    meta = json.loads((root / "transforms.json").read_text())
    meta["depth_unit_scale_factor"] = 2e-3
    (root / "transforms.json").write_text(json.dumps(meta))
    doubled = load_scene("nerfstudio", root).splits["train"].depths
    original = load_scene("nerfstudio", written["nerfstudio"]).splits["train"].depths
    assert torch.allclose(doubled, 2 * original)


def test_rgb_only_images_and_extensionless_paths(copy_of):
    root = copy_of("blender")
    image = root / "train" / "r_0.png"
    Image.open(image).convert("RGB").save(image)
    meta = json.loads((root / "transforms_train.json").read_text())
    assert meta["frames"][0]["file_path"] == "./train/r_0"
    split = load_scene("blender", root, background=BG).splits["train"]
    assert (split.alphas[0] == 1).all()


# Formats whose box is derived from the cameras when the file has none (MonoSDF's is the unit cube
# of its normalised space, tested in test_monosdf.py).
@pytest.mark.parametrize("fmt", ("blender", "nerfstudio"))
def test_derived_bounds_contain_object_and_bracket_depths(generated, copy_of, fmt):
    root = copy_of(fmt)
    for path in root.glob("transforms*.json"):
        meta = json.loads(path.read_text())
        del meta["aabb"]
        path.write_text(json.dumps(meta))
    scene = load_scene(fmt, root)
    c2w = torch.cat([s.cameras.c2w for s in scene.splits.values()])
    assert np.allclose(focus_point(c2w.double().numpy()), 0, atol=1e-4)
    assert torch.allclose(scene.aabb, torch.tensor([[-1.6] * 3, [1.6] * 3]), atol=1e-4)  # 0.4 * 4
    assert (scene.aabb[0] <= -1.2).all() and (scene.aabb[1] >= 1.2).all()
    for split in scene.splits.values():
        for i in range(len(split)):
            rays = split.cameras.image_rays(i)
            depth = split.depths[i].reshape(-1)
            t = depth[depth > 0] / rays.z_scale[depth > 0]
            assert scene.near <= t.min().item() and t.max().item() <= scene.far
    assert scene.near >= 0.05


def test_explicit_bounds_win(written):
    box = [[-1, -1, -1], [1, 1, 1]]
    scene = load_scene("blender", written["blender"], aabb=box, near=0.5, far=9.0)
    assert torch.equal(scene.aabb, torch.tensor(box, dtype=torch.float32))
    assert (scene.near, scene.far) == (0.5, 9.0)
    derived, near, far = derive_bounds(scene.splits["train"].cameras.c2w, aabb=box)
    assert near == pytest.approx(4 - 3**0.5, abs=1e-5) and far == pytest.approx(4 + 3**0.5, abs=1e-5)


def test_forward_facing_cameras_fall_back_to_camera_box():
    c2w = torch.eye(4).repeat(4, 1, 1)
    c2w[:, 0, 3] = torch.arange(4.0)  # parallel optical axes: no focus point
    aabb, near, far = derive_bounds(c2w)
    assert (aabb[0] < c2w[:, :3, 3]).all() and (aabb[1] > c2w[:, :3, 3]).all()
    assert near == 0.05 and far > near
