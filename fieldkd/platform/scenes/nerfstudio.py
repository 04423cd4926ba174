"""nerfstudio format: one ``transforms.json`` with intrinsics, frames and split lists.

Read:
- intrinsics ``fl_x, fl_y, cx, cy, w, h`` at the top level, overridden per frame;
  ``camera_model`` OPENCV (default), PINHOLE or SIMPLE_PINHOLE. Non-zero
  distortion (k1..k4, p1, p2) is refused: our cameras are pinholes.
- per frame ``file_path``, ``transform_matrix`` (OpenGL camera-to-world, as ours),
  optional ``depth_file_path`` (z-depth, stored integer * ``depth_unit_scale_factor``,
  default 1e-3 i.e. millimetres, as nerfstudio) and ``normal_file_path`` (ours).
- splits from ``train_filenames`` / ``val_filenames`` / ``test_filenames``. When
  none is present we use nerfstudio's "interval" eval mode (eval_interval 8):
  frames sorted by file_path, every 8th (index 0, 8, ...) is test, the rest
  train, no val (``Scene.split('val')`` falls back to test).
- ``applied_transform`` (a transform nerfstudio already applied to the poses in
  the file) is not applied again; it is kept in ``Scene.extras``.
- ``aabb_scale`` (instant-ngp key): when no ``aabb`` is given the box is centred
  on the cameras' focus point with half-size ``0.5 * aabb_scale / scale``
  (``scale`` defaults to instant-ngp's 0.33).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..atomic import write_text
from ..errors import InputError
from .assemble import make_scene
from .export import DEPTH_UNIT, shared_intrinsics, straight_colour, write_frame
from .frames import Frame, FrameList, load_split
from .meta import frames_of, matrix, media_path, number, pose_to_internal, read_json, require
from .scene import Scene

MODELS = ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE")
DISTORTION = ("k1", "k2", "k3", "k4", "p1", "p2")
SPLIT_KEYS = {"train": "train_filenames", "val": "val_filenames", "test": "test_filenames"}
EVAL_INTERVAL = 8
NGP_SCALE = 0.33


def _frame(root: Path, path: Path, meta: dict, item: dict, i: int) -> Frame:
    ctx = f"frame {i}: "
    for key in DISTORTION:
        value = number(item, key, path, ctx, default=meta.get(key))
        if value:
            raise InputError(path, f"{ctx}lens distortion {key}={value} is not supported; "
                                   "undistort the images first")
    image = media_path(root, require(item, "file_path", path, ctx), path, "file_path", ctx)
    pose = pose_to_internal(matrix(require(item, "transform_matrix", path, ctx), path, ctx), "opengl")
    extra = {
        kind: media_path(root, item[key], path, key, ctx) if key in item else None
        for kind, key in (("depth", "depth_file_path"), ("normal", "normal_file_path"))
    }
    return Frame(image, pose, item, ctx, **extra)


def _key(root: Path, name: str) -> str:
    return os.path.normpath(os.path.join(root, name))


def _assign(root: Path, path: Path, meta: dict, items: list[dict]) -> dict[str, list[int]]:
    """Frame indices per split (see module docstring)."""
    if not any(key in meta for key in SPLIT_KEYS.values()):
        order = sorted(range(len(items)), key=lambda i: str(items[i]["file_path"]))
        if len(order) < 2:
            raise InputError(path, "need at least 2 frames to split into train and test "
                                   "(or give train_filenames / test_filenames)")
        test = order[::EVAL_INTERVAL]
        return {"train": [i for i in order if i not in set(test)], "test": test}
    require(meta, "train_filenames", path)
    index = {_key(root, str(item["file_path"])): i for i, item in enumerate(items)}
    splits = {}
    for split, key in SPLIT_KEYS.items():
        names = meta.get(key) or []
        if not isinstance(names, list):
            raise InputError(path, f"'{key}' must be a list of file names")
        missing = [n for n in names if _key(root, str(n)) not in index]
        if missing:
            raise InputError(path, f"'{key}' names {missing[0]!r}, which is no frame's file_path")
        if names:
            splits[split] = [index[_key(root, str(n))] for n in names]
    if "train" not in splits:
        raise InputError(path, "'train_filenames' is empty")
    return splits


def read(path, background=(1.0, 1.0, 1.0), downscale: int = 1, aabb=None, near=None, far=None) -> Scene:
    path = Path(path)
    file = path if path.suffix == ".json" else path / "transforms.json"
    root = file.parent
    if not root.is_dir():
        raise InputError(root, "scene directory not found")
    meta = read_json(file)
    model = meta.get("camera_model", "OPENCV")
    if model not in MODELS:
        raise InputError(file, f"camera_model {model!r} is not supported (need one of {', '.join(MODELS)})")
    items = frames_of(meta, file)
    frames = [_frame(root, file, meta, item, i) for i, item in enumerate(items)]
    unit = number(meta, "depth_unit_scale_factor", file, default=DEPTH_UNIT)
    splits = {
        split: load_split(
            FrameList(file, [frames[i] for i in idx], top=meta, depth_unit=unit, focal_key="fl_x"),
            background, downscale)
        for split, idx in _assign(root, file, meta, items).items()
    }
    aabb_scale = number(meta, "aabb_scale", file)
    half = 0.5 * aabb_scale / number(meta, "scale", file, default=NGP_SCALE) if aabb_scale else None
    extras = {"format": "nerfstudio"}
    if "applied_transform" in meta:
        extras["applied_transform"] = meta["applied_transform"]
    return make_scene(root, splits, background, meta, file, aabb=aabb, near=near, far=far,
                      half_size=half, extras=extras)


def write(scene: Scene, out_dir, depth: bool = True, normals: bool = True) -> Path:
    """Write all splits into one transforms.json; differing intrinsics go per frame."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    first = next(iter(scene.splits.values()))
    fx, fy, cx, cy = shared_intrinsics(first)
    meta = {
        "camera_model": "OPENCV", "fl_x": fx, "fl_y": fy, "cx": cx, "cy": cy,
        "w": first.cameras.width, "h": first.cameras.height,
        "depth_unit_scale_factor": DEPTH_UNIT, "aabb": scene.aabb.tolist(), "frames": [],
    }
    for split_name, split in scene.splits.items():
        cams = split.cameras
        if (cams.width, cams.height) != (meta["w"], meta["h"]):
            raise ValueError("nerfstudio writer needs one image size across splits")
        straight = straight_colour(split, scene.background)
        names = []
        for i in range(len(split)):
            stem = f"{split_name}_{i:04d}.png"
            frame = {"file_path": f"images/{stem}", "transform_matrix": cams.c2w[i].tolist()}
            own = dict(fl_x=cams.fx[i].item(), fl_y=cams.fy[i].item(),
                       cx=cams.cx[i].item(), cy=cams.cy[i].item())
            if tuple(own.values()) != (fx, fy, cx, cy):
                frame.update(own)
            d = out / "depths" / stem if depth and split.depths is not None else None
            n = out / "normals" / stem if normals and split.normals is not None else None
            if d is not None:
                frame["depth_file_path"] = f"depths/{stem}"
            if n is not None:
                frame["normal_file_path"] = f"normals/{stem}"
            write_frame(split, straight, i, out / "images" / stem, d, n)
            meta["frames"].append(frame)
            names.append(frame["file_path"])
        meta[SPLIT_KEYS[split_name]] = names
    write_text(out / "transforms.json", json.dumps(meta, indent=2))
    return out
