"""Files from a dataset stay in the dataset, and decoding stays within limits.

Paths that a dataset names may not leave its folder (absolute, '..', a symlink
out) unless scene.allow_outside_paths=true; image sizes are checked from their
headers (scene.max_pixels), all declared bytes of a scene against
scene.max_total_bytes, and .npz members from their zip directory entries.
Every refusal is one InputError line, also through the real CLI (exit 2), and
nothing is written into the input folder.
"""

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import warnings
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image, ImageMode

from fieldkd.platform.errors import InputError
from fieldkd.platform.scenes import load_scene
from fieldkd.platform.scenes.generator import render_scene
from fieldkd.platform.scenes.limits import ReadLimits
from fieldkd.platform.scenes.paths import inside
from fieldkd.platform.scenes.registry import write_format

TRANSFORMS = {"blender": "transforms_train.json", "nerfstudio": "transforms.json"}
FIRST_IMAGE = {"blender": "train/r_0.png", "nerfstudio": "images/train_0000.png", "monosdf": "000000_rgb.png"}


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    scene = render_scene("sphere", width=8, height=8, n_train=3, n_val=1, n_test=1)
    base = tmp_path_factory.mktemp("templates")
    return {fmt: write_format(fmt, scene, base / fmt) for fmt in ("blender", "nerfstudio", "monosdf")}


@pytest.fixture
def copy(templates, tmp_path):
    """A fresh copy of a template scene at tmp_path/<name>, and an image outside it at tmp_path/outside/."""
    def make(fmt, name=None):
        root = shutil.copytree(templates[fmt], tmp_path / (name or fmt))
        (tmp_path / "outside").mkdir(exist_ok=True)
        shutil.copy(root / FIRST_IMAGE[fmt], tmp_path / "outside" / "img.png")
        return root
    return make


def digest(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def set_first(root, fmt, key, value):
    path = root / TRANSFORMS[fmt]
    meta = json.loads(path.read_text())
    old, meta["frames"][0][key] = meta["frames"][0].get(key), value
    for names in (meta.get(k) for k in ("train_filenames", "val_filenames", "test_filenames")):
        if names and old in names:  # nerfstudio's split lists name frames by file_path
            names[names.index(old)] = value
    path.write_text(json.dumps(meta))


def escape(root, fmt, kind, key="file_path"):
    """Point frame 0's ``key`` out of ``root`` in the way ``kind`` says; returns the name it writes."""
    outside = root.parent / "outside" / "img.png"
    if kind == "absolute":
        name = str(outside)
    elif kind == "dotdot":
        name = "../outside/img.png"
    else:  # a symlink inside the folder whose target is outside
        (root / "link.png").symlink_to(outside)
        name = "link.png"
    set_first(root, fmt, key, name)
    return name


def refused(fmt, root, *fragments, limits=None):
    before = digest(root)
    with pytest.raises(InputError) as info:
        load_scene(fmt, root, limits=limits)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    assert digest(root) == before
    return message


# --- paths ------------------------------------------------------------------

PROBLEM = {"absolute": "absolute path", "dotdot": "leads out of the dataset folder", "symlink": "is a symlink"}


@pytest.mark.parametrize("fmt", ["blender", "nerfstudio"])
@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink"])
def test_transforms_paths_out_of_the_folder_are_refused(copy, fmt, kind):
    root = copy(fmt)
    name = escape(root, fmt, kind)
    message = refused(fmt, root, TRANSFORMS[fmt], "frame 0: file_path", name, PROBLEM[kind],
                      "scene.allow_outside_paths=true")
    if kind == "symlink":
        assert str(root.parent / "outside" / "img.png") in message


@pytest.mark.parametrize("fmt", ["blender", "nerfstudio"])
@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink"])
def test_the_flag_allows_paths_out_of_the_folder(copy, fmt, kind):
    root = copy(fmt)
    escape(root, fmt, kind)
    scene = load_scene(fmt, root, limits=ReadLimits(allow_outside_paths=True))
    first = [p for s in scene.splits.values() for p in s.frame_paths if "img.png" in p or "link.png" in p]
    assert len(first) == 1
    assert os.path.realpath(first[0]) == os.path.realpath(root.parent / "outside" / "img.png")


@pytest.mark.parametrize("fmt", ["blender", "nerfstudio"])
@pytest.mark.parametrize("key, kind", [("depth_file_path", "dotdot"), ("normal_file_path", "absolute")])
def test_depth_and_normal_paths_are_checked_too(copy, fmt, key, kind):
    root = copy(fmt)
    escape(root, fmt, kind, key=key)
    refused(fmt, root, f"frame 0: {key}", PROBLEM[kind])


def test_dotdot_that_stays_inside_and_symlinks_within_the_folder_are_fine(copy):
    root = copy("blender")
    set_first(root, "blender", "file_path", "./val/../train/r_0")
    (root / "alias").symlink_to(root / "train", target_is_directory=True)
    path = root / TRANSFORMS["blender"]
    meta = json.loads(path.read_text())
    meta["frames"][1]["file_path"] = "alias/r_1"
    path.write_text(json.dumps(meta))
    scene = load_scene("blender", root)
    assert scene.splits["train"].frame_paths[1] == str(root / "alias" / "r_1.png")


def test_a_symlinked_dataset_folder_is_its_target(copy, tmp_path):
    (tmp_path / "link").symlink_to(copy("nerfstudio"), target_is_directory=True)
    assert len(load_scene("nerfstudio", tmp_path / "link").splits["train"]) == 3


def test_inside_in_closed_form(tmp_path):
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "other").mkdir()
    (root / "up").symlink_to(tmp_path / "other", target_is_directory=True)
    assert inside(root, "sub/../a.png", "f.json") == root / "sub/../a.png"
    assert inside(root, "missing/a.png", "f.json") == root / "missing/a.png"  # existence is the reader's check
    for name, problem in [("sub/../../a.png", "leads out"), ("/a.png", "absolute"), ("up/a.png", "symlink"),
                          ("..", "leads out")]:
        with pytest.raises(InputError, match=f"^f.json: path '{name}' .*{problem}"):
            inside(root, name, "f.json")


@pytest.mark.parametrize("what", ["image", "depth"])
def test_monosdf_files_that_leave_the_folder_are_refused(copy, what):
    root = copy("monosdf")
    name = "000000_rgb.png" if what == "image" else "000000_depth.npy"
    target = root.parent / "outside" / name
    shutil.move(root / name, target)
    (root / name).symlink_to(target)
    refused("monosdf", root, name, "is a symlink", str(target), "scene.allow_outside_paths=true")
    scene = load_scene("monosdf", root, limits=ReadLimits(allow_outside_paths=True))
    assert scene.splits["train"].frame_paths[0] == str(root / "000000_rgb.png")


# --- decoding limits --------------------------------------------------------

def png_header(path, width, height):
    """A PNG that declares width x height RGBA but holds a few bytes: opening it must never decode it."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def test_png_bomb_beyond_pil_cap_is_refused(copy):
    root = copy("blender")
    png_header(root / FIRST_IMAGE["blender"], 30000, 30000)
    refused("blender", root, "r_0.png", "refused as a decompression bomb")


def test_image_over_max_pixels_is_refused_from_its_header(copy):
    root = copy("nerfstudio")
    # 90.25 MP: over our 64 MP and over PIL's warning threshold, under PIL's own error: our check decides
    png_header(root / FIRST_IMAGE["nerfstudio"], 9500, 9500)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        refused("nerfstudio", root, "train_0000.png", "9500x9500", "scene.max_pixels=64,000,000")
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    small = copy("nerfstudio", "small")  # 8x8 images: 64 pixels
    refused("nerfstudio", small, "train_0000.png", "8x8 = 64 pixels", "max_pixels=63", limits=ReadLimits(max_pixels=63))
    load_scene("nerfstudio", small, limits=ReadLimits(max_pixels=64))


def declared_bytes(root):
    """Bytes every PNG of a scene declares decoded: width x height x bytes per pixel of its mode."""
    total = 0
    for path in root.rglob("*.png"):
        with Image.open(path) as image:
            mode = ImageMode.getmode(image.mode)
            total += image.width * image.height * len(mode.bands) * np.dtype(mode.typestr).itemsize
    return total


def test_total_bytes_cap_is_exact(copy):
    root = copy("blender")
    (root.parent / "outside" / "img.png").unlink()
    total = declared_bytes(root)  # 5 frames of 8x8: RGBA 256 + 16-bit depth 128 + RGB normals 192 bytes each
    assert total == 5 * (256 + 128 + 192)
    load_scene("blender", root, limits=ReadLimits(max_total_bytes=total))
    refused("blender", root, "past scene.max_total_bytes=2,879", limits=ReadLimits(max_total_bytes=total - 1))


def rewrite_npz(path, **extra):
    with np.load(path) as data:
        arrays = {key: data[key] for key in data.files}
    np.savez_compressed(path, **arrays, **extra)


def test_npz_zip_bomb_is_refused_from_the_zip_directory(copy):
    root = copy("monosdf")
    cap = ReadLimits(max_total_bytes=10_000_000)
    load_scene("monosdf", root, limits=cap)  # the scene itself fits
    rewrite_npz(root / "cameras.npz", pad=np.zeros(2_500_000))  # 20 MB of zeros in about 20 kB
    assert (root / "cameras.npz").stat().st_size < 100_000
    refused("monosdf", root, "cameras.npz", "member 'pad.npy' declares 20,000,128 bytes",
            "scene.max_total_bytes=10,000,000", limits=cap)


def test_npy_header_that_overstates_its_data_is_refused(copy):
    root = copy("monosdf")
    header = {"descr": "<f8", "fortran_order": False, "shape": (50000, 50000)}
    fake = root.parent / "fake.npy"
    with open(fake, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(b"\0" * 128)
    with np.load(root / "cameras.npz") as data:
        arrays = {key: data[key] for key in data.files}
    with zipfile.ZipFile(root / "cameras.npz", "w") as archive:
        for key, value in arrays.items():
            if key != "world_mat_0":
                with archive.open(f"{key}.npy", "w") as member:
                    np.lib.format.write_array(member, value)
        archive.write(fake, "world_mat_0.npy")
    refused("monosdf", root, "cameras.npz", "world_mat_0.npy", "declares a (50000, 50000) float64 array")
    other = copy("monosdf", "depth")
    shutil.copy(fake, other / "000000_depth.npy")
    refused("monosdf", other, "000000_depth.npy", "declares a (50000, 50000) float64 array")


def test_limits_from_config_name_the_key():
    assert ReadLimits.from_config({}) == ReadLimits()
    assert ReadLimits.from_config({"max_pixels": 5, "allow_outside_paths": True}) == \
        ReadLimits(allow_outside_paths=True, max_pixels=5)
    for key, value in [("max_pixels", "abc"), ("max_total_bytes", 0), ("allow_outside_paths", "yes"),
                       ("max_pixels", True)]:
        with pytest.raises(InputError, match=f"^scene.{key}: "):
            ReadLimits.from_config({key: value})


# --- through the CLI ----------------------------------------------------------

def fieldkd(args, cwd):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}"}
    return subprocess.run([sys.executable, "-m", "fieldkd.platform.cli", "run", *args,
                           f"output_dir={cwd / 'out'}"], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def prepare(case, copy):
    """(scene config name, folder, extra overrides, fragments of the error line) for one CLI case."""
    if case == "absolute":
        root = copy("blender")
        return "blender", root, [], [TRANSFORMS["blender"], escape(root, "blender", "absolute"), "absolute"]
    if case == "dotdot":
        root = copy("nerfstudio")
        return "nerfstudio", root, [], [TRANSFORMS["nerfstudio"], escape(root, "nerfstudio", "dotdot"), "leads out"]
    if case == "symlink":
        root = copy("monosdf")
        target = root.parent / "outside" / "000001_rgb.png"
        shutil.move(root / "000001_rgb.png", target)
        (root / "000001_rgb.png").symlink_to(target)
        return "indoor", root, [], ["000001_rgb.png", "is a symlink"]
    if case == "allowed":  # the flag reaches the reader: the path passes and the byte cap is what stops it
        root = copy("blender")
        escape(root, "blender", "dotdot")
        return "blender", root, ["scene.allow_outside_paths=true", "scene.max_total_bytes=1000"], \
            ["max_total_bytes=1,000"]
    if case == "png_bomb":
        root = copy("blender")
        png_header(root / "train/r_1.png", 30000, 30000)
        return "blender", root, [], ["r_1.png", "decompression bomb"]
    if case == "npz_bomb":
        root = copy("monosdf")
        rewrite_npz(root / "cameras.npz", pad=np.zeros(2_500_000))
        return "indoor", root, ["scene.max_total_bytes=10000000"], ["cameras.npz", "pad.npy", "max_total_bytes"]
    root = copy("nerfstudio")  # total bytes
    return "nerfstudio", root, ["scene.max_total_bytes=2000"], ["max_total_bytes=2,000"]


@pytest.mark.parametrize("case", ["absolute", "dotdot", "symlink", "allowed", "png_bomb", "npz_bomb",
                                  "total_bytes"])
def test_cli_refuses_with_one_line_and_exit_2(copy, tmp_path, case):
    config, root, extra, fragments = prepare(case, copy)
    before, outside = digest(root), digest(root.parent / "outside")
    proc = fieldkd([f"scene={config}", f"scene.path={root}", *extra], tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("fieldkd: error:")]
    assert len(errors) == 1 and proc.stderr.strip().splitlines()[-1] == errors[0], proc.stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    assert digest(root) == before and digest(root.parent / "outside") == outside
