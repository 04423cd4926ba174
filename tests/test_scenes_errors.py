"""Bad input: every problem is an InputError naming the file and the problem; inputs untouched."""

import hashlib
import json
import shutil

import pytest
from PIL import Image

from fieldkd.platform.errors import InputError
from fieldkd.platform.scenes import load_scene
from fieldkd.platform.scenes.generator import render_scene
from fieldkd.platform.scenes.ply import read_ply
from fieldkd.platform.scenes.registry import write_format


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    scene = render_scene("sphere", width=8, height=8, n_train=3, n_val=1, n_test=1)
    base = tmp_path_factory.mktemp("templates")
    return {fmt: write_format(fmt, scene, base / fmt) for fmt in ("blender", "nerfstudio")}


@pytest.fixture
def scene_dir(templates, tmp_path):
    def make(fmt):
        return shutil.copytree(templates[fmt], tmp_path / fmt)
    return make


def _edit(path, change):
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def _fails(fmt, root, *fragments, **options):
    with pytest.raises(InputError) as info:
        load_scene(fmt, root, **options)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_missing_directory(tmp_path):
    _fails("blender", tmp_path / "nowhere", "nowhere", "directory not found")
    _fails("nerfstudio", tmp_path / "nowhere", "nowhere", "directory not found")


@pytest.mark.parametrize("fmt, name", [("blender", "transforms_train.json"),
                                       ("nerfstudio", "transforms.json")])
def test_missing_transforms_file(scene_dir, fmt, name):
    root = scene_dir(fmt)
    (root / name).unlink()
    _fails(fmt, root, name, "not found")


def test_blender_needs_val_or_test(scene_dir):
    root = scene_dir("blender")
    (root / "transforms_val.json").unlink()
    (root / "transforms_test.json").unlink()
    _fails("blender", root, "transforms_test.json", "not found")


@pytest.mark.parametrize("fmt, image", [("blender", "train/r_1.png"),
                                        ("nerfstudio", "images/train_0001.png")])
def test_missing_frame_image(scene_dir, fmt, image):
    root = scene_dir(fmt)
    (root / image).unlink()  # skipped with a warning by default (test_real_formats.py)
    _fails(fmt, root, image.split("/")[-1], "frame image not found", "frame 1 of", missing_frames="error")


def test_missing_depth_image(scene_dir):
    root = scene_dir("blender")
    (root / "train" / "r_2_depth.png").unlink()
    _fails("blender", root, "r_2_depth.png", "depth image not found")


def test_image_size_differs_from_others(scene_dir):
    root = scene_dir("blender")
    Image.new("RGBA", (6, 8)).save(root / "train" / "r_2.png")
    _fails("blender", root, "r_2.png", "image is 6x8", "8x8")


def test_image_size_differs_from_declared_w_h(scene_dir):
    root = scene_dir("nerfstudio")
    _edit(root / "transforms.json", lambda m: m.update(w=10))
    _fails("nerfstudio", root, "train_0000.png", "w=10, h=8")


def test_unreadable_image(scene_dir):
    root = scene_dir("blender")
    (root / "val" / "r_0.png").write_bytes(b"not a png")
    _fails("blender", root, "r_0.png", "unreadable frame image")


@pytest.mark.parametrize(
    "matrix, problem",
    [([[1, 0, 0], [0, 1, 0], [0, 0, 1]], "must be 4x4"),
     ([[1, 0, 0, 0], [0, 1, 0, float("nan")], [0, 0, 1, 4], [0, 0, 0, 1]], "non-finite"),
     ([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 4], [0, 0, 1, 1]], "last row"),
     ("identity", "not a numeric 4x4")],
)
@pytest.mark.parametrize("fmt", ["blender", "nerfstudio"])
def test_bad_transform_matrix(scene_dir, fmt, matrix, problem):
    root = scene_dir(fmt)
    name = "transforms.json" if fmt == "nerfstudio" else "transforms_train.json"
    _edit(root / name, lambda m: m["frames"][1].update(transform_matrix=matrix))
    _fails(fmt, root, name, "frame 1", problem)


@pytest.mark.parametrize(
    "fmt, name, change, key",
    [("blender", "transforms_train.json", lambda m: m.pop("camera_angle_x"), "camera_angle_x"),
     ("blender", "transforms_test.json", lambda m: m["frames"][0].pop("file_path"), "file_path"),
     ("blender", "transforms_val.json", lambda m: m["frames"][0].pop("transform_matrix"), "transform_matrix"),
     ("nerfstudio", "transforms.json", lambda m: m.pop("frames"), "frames"),
     ("nerfstudio", "transforms.json", lambda m: m.pop("fl_x"), "fl_x"),
     ("nerfstudio", "transforms.json", lambda m: m.pop("train_filenames"), "train_filenames")],
)
def test_missing_required_key(scene_dir, fmt, name, change, key):
    root = scene_dir(fmt)
    _edit(root / name, change)
    _fails(fmt, root, name, f"missing required key '{key}'")


@pytest.mark.parametrize("fmt, name", [("blender", "transforms_val.json"), ("nerfstudio", "transforms.json")])
def test_invalid_json_names_the_line(scene_dir, fmt, name):
    root = scene_dir(fmt)
    (root / name).write_text('{\n  "frames": [\n    {"file_path": oops}\n  ]\n}\n')
    _fails(fmt, root, name, "invalid JSON at line 3")


def test_nerfstudio_specific_problems(scene_dir):
    root = scene_dir("nerfstudio")
    path = root / "transforms.json"
    original = path.read_text()
    _edit(path, lambda m: m.update(camera_model="PINHOLE", k1=0.1))  # OPENCV reads k1 (test_real_formats.py)
    _fails("nerfstudio", root, "transforms.json", "k1=0.1", "not a parameter of the pinhole")
    path.write_text(original)
    _edit(path, lambda m: m.update(camera_model="EQUIRECTANGULAR"))
    _fails("nerfstudio", root, "transforms.json", "EQUIRECTANGULAR")
    path.write_text(original)
    _edit(path, lambda m: m["test_filenames"].append("images/ghost.png"))
    _fails("nerfstudio", root, "transforms.json", "ghost.png", "no frame's file_path")


def test_bad_arguments(templates):
    with pytest.raises(InputError, match="unknown scene format 'colmap'"):
        load_scene("colmap", templates["blender"])
    with pytest.raises(InputError, match="downscale"):
        load_scene("blender", templates["blender"], downscale=0)
    with pytest.raises(InputError, match="r_0.png.*leaves no pixels"):
        load_scene("blender", templates["blender"], downscale=16)
    with pytest.raises(InputError, match="near < far"):
        load_scene("blender", templates["blender"], near=5.0, far=2.0)


def test_bad_ply(tmp_path):
    (tmp_path / "mesh.ply").write_bytes(b"ply\nformat binary_big_endian 1.0\nend_header\n")
    with pytest.raises(InputError, match="mesh.ply.*binary_big_endian"):
        read_ply(tmp_path / "mesh.ply")
    (tmp_path / "cut.ply").write_bytes(b"ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\n"
                                       b"property float y\nproperty float z\nend_header\n0 0 0\n")
    with pytest.raises(InputError, match="cut.ply.*truncated"):
        read_ply(tmp_path / "cut.ply")


def _digest(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("fmt", ["blender", "nerfstudio"])
def test_inputs_are_never_modified(scene_dir, fmt):
    root = scene_dir(fmt)
    (root / ("images/train_0001.png" if fmt == "nerfstudio" else "train/r_1.png")).unlink()
    before = _digest(root)
    with pytest.raises(InputError):
        load_scene(fmt, root, missing_frames="error")
    load_scene(fmt, root)  # skips the frame
    assert _digest(root) == before
