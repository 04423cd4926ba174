"""Blender / NeRF-synthetic format: ``transforms_{train,val,test}.json`` + RGBA PNGs.

Layout::

    transforms_train.json   {"camera_angle_x": ..., "frames": [{"file_path": "./train/r_0",
                                                                "transform_matrix": 4x4}, ...]}
    train/r_0.png           RGBA, 8-bit

``file_path`` has no extension in the original dataset: the file as named
when it exists, else the first image file with that name and an image
extension (.png first, then .jpg, ...). Frames whose image is missing are
skipped with a warning (``scene.missing_frames=error`` refuses them).
Our optional extensions, read when present: per frame
``depth_file_path`` (16-bit PNG z-depth, millimetres unless the top-level
``depth_unit_scale_factor`` says otherwise) and ``normal_file_path`` (world
normals, see :mod:`images`) and ``mask_path`` (a training mask as nerfstudio's:
0 = ignore the pixel; ``SceneSplit.masks``); top-level ``camera_angle_y`` or ``fl_x, fl_y,
cx, cy``; top-level ``aabb``, ``near``, ``far``. Poses are OpenGL
camera-to-world, as ours. ``transforms_train.json`` is required, plus one of
val / test.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..atomic import write_text
from ..errors import InputError
from .assemble import make_scene
from .export import DEPTH_UNIT, require_pinhole, same_intrinsics, shared_intrinsics, straight_colour, write_frame
from .frames import Frame, FrameList, load_split, split_is_missing
from .meta import frames_of, matrix, media_path, number, pose_to_internal, read_json, require
from .options import ReadOptions
from .paths import dataset_root
from .scene import Scene

SPLITS = ("train", "val", "test")


def _frame_list(root: Path, path: Path, meta: dict, options: ReadOptions) -> FrameList:
    frames = []
    for i, item in enumerate(frames_of(meta, path)):
        ctx = f"frame {i}: "
        image = media_path(root, require(item, "file_path", path, ctx), path, "file_path", ctx)
        pose = pose_to_internal(matrix(require(item, "transform_matrix", path, ctx), path, ctx), "opengl")
        extra = {
            kind: media_path(root, item[key], path, key, ctx) if key in item else None
            for kind, key in (("depth", "depth_file_path"), ("normal", "normal_file_path"), ("mask", "mask_path"))
        }
        frames.append(Frame(image, pose, item, ctx, **extra))
    unit = options.depth_scale or number(meta, "depth_unit_scale_factor", path, default=DEPTH_UNIT)
    return FrameList(path, frames, top=meta, depth_unit=unit, missing=options.missing_frames)


def read(path, background=(1.0, 1.0, 1.0), downscale: int = 1, aabb=None, near=None, far=None,
         options: ReadOptions = ReadOptions()) -> Scene:
    root = dataset_root(path)
    files = {split: root / f"transforms_{split}.json" for split in SPLITS}
    if files["train"].is_file() and not (files["val"].is_file() or files["test"].is_file()):
        raise InputError(files["test"], "transforms file not found (need transforms_val.json "
                                        "or transforms_test.json next to transforms_train.json)")
    metas, splits = {}, {}
    for split, file in files.items():
        if split != "train" and not file.is_file():
            continue
        metas[split] = read_json(file)
        frames = _frame_list(root, file, metas[split], options)
        if not split_is_missing(frames, split):
            splits[split] = load_split(frames, background, downscale)
    if len(splits) == 1:
        raise InputError(root, "no frame image of transforms_val.json or transforms_test.json exists")
    return make_scene(root, splits, background, metas["train"], files["train"],
                      aabb=aabb, near=near, far=far, extras={"format": "blender"})


def write(scene: Scene, out_dir, depth: bool = True, normals: bool = True) -> Path:
    """Write every split of ``scene``; cameras of a split must share centred intrinsics."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for split_name, split in scene.splits.items():
        cams = split.cameras
        require_pinhole(split, "blender")
        fx, fy, cx, cy = shared_intrinsics(split)
        if not all(same_intrinsics(split, i) for i in range(len(split))):
            raise ValueError(f"blender format needs one set of intrinsics per split ({split_name})")
        if abs(cx - cams.width / 2) > 1e-4 or abs(cy - cams.height / 2) > 1e-4:
            raise ValueError("blender format needs the principal point at the image centre")
        meta = {"camera_angle_x": 2 * math.atan(0.5 * cams.width / fx)}
        if fy != fx:
            meta["camera_angle_y"] = 2 * math.atan(0.5 * cams.height / fy)
        meta["aabb"] = scene.aabb.tolist()
        with_depth = depth and split.depths is not None
        with_normals = normals and split.normals is not None
        if with_depth:
            meta["depth_unit_scale_factor"] = DEPTH_UNIT
        straight = straight_colour(split, scene.background)
        frames = []
        for i in range(len(split)):
            stem = f"{split_name}/r_{i}"
            frame = {"file_path": f"./{stem}", "transform_matrix": cams.c2w[i].tolist()}
            if with_depth:
                frame["depth_file_path"] = f"./{stem}_depth.png"
            if with_normals:
                frame["normal_file_path"] = f"./{stem}_normal.png"
            write_frame(split, straight, i, out / f"{stem}.png",
                        out / f"{stem}_depth.png" if with_depth else None,
                        out / f"{stem}_normal.png" if with_normals else None)
            frames.append(frame)
        meta["frames"] = frames
        write_text(out / f"transforms_{split_name}.json", json.dumps(meta, indent=2))
    return out
