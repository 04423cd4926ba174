"""nerfstudio and instant-ngp format: one ``transforms.json`` with intrinsics, frames and split lists.

Read, as ``ns-process-data`` and instant-ngp write it:
- intrinsics ``fl_x, fl_y, cx, cy, w, h`` (or ``camera_angle_x``) at the top level,
  overridden per frame; frames may differ in size (see :mod:`frames`).
- ``camera_model``: OPENCV (default; k1 k2 k3 k4 p1 p2), OPENCV_FISHEYE (k1..k4),
  PINHOLE, SIMPLE_PINHOLE, or MEI (ours: xi k1 k2 p1 p2 with fl_x, fl_y, cx, cy
  = KITTI-360's gamma1, gamma2, u0 + 0.5, v0 + 0.5). instant-ngp's
  ``is_fisheye: true`` means OPENCV_FISHEYE. Rays go through the lens (see
  :mod:`lens`): distorted images train as they are.
- per frame ``file_path``, ``transform_matrix`` (OpenGL camera-to-world, as ours),
  optional ``depth_file_path`` (z-depth, 16-bit PNG or .npy, stored value *
  ``depth_unit_scale_factor``, default 1e-3 i.e. millimetres, as nerfstudio;
  ``scene.depth_scale`` overrides), ``mask_path`` (nerfstudio's: 0 = ignore the
  pixel; ``SceneSplit.masks``) and ``normal_file_path`` (ours). Frames whose
  image is missing are skipped with a warning (``scene.missing_frames=error``
  refuses them).
- splits from ``train_filenames`` / ``val_filenames`` / ``test_filenames``. When
  none is present we use nerfstudio's "interval" eval mode (eval_interval 8):
  frames sorted by file_path, every 8th (index 0, 8, ...) is test, the rest
  train, no val (``Scene.split('val')`` falls back to test).
- ``applied_transform`` (a transform nerfstudio already applied to the poses in
  the file) is not applied again; it is kept in ``Scene.extras``.
- instant-ngp's ``aabb_scale``, ``scale`` (default 0.33) and ``offset`` (default
  0.5 0.5 0.5): when no ``aabb`` is given the box is instant-ngp's, mapped back
  into the file's coordinates: centre ``(0.5 - offset) / scale``, half-size
  ``0.5 * aabb_scale / scale`` (instant-ngp applies ``p * scale + offset`` before
  it cycles the axes, so ``offset`` is in the file's axis order).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..atomic import write_text
from ..errors import InputError
from . import images
from .assemble import make_scene
from .export import DEPTH_UNIT, shared_intrinsics, straight_colour, write_frame
from .frames import Frame, FrameList, load_split, split_is_missing
from .meta import CAMERA_MODELS, frames_of, matrix, media_path, number, pose_to_internal, read_json, require
from .lens import PARAMS
from .options import ReadOptions
from .scene import Scene

MODELS = tuple(CAMERA_MODELS)
NGP_OFFSET = 0.5
SPLIT_KEYS = {"train": "train_filenames", "val": "val_filenames", "test": "test_filenames"}
EVAL_INTERVAL = 8
NGP_SCALE = 0.33


def _frame(root: Path, path: Path, meta: dict, item: dict, i: int) -> Frame:
    ctx = f"frame {i}: "
    image = media_path(root, require(item, "file_path", path, ctx), path, "file_path", ctx)
    pose = pose_to_internal(matrix(require(item, "transform_matrix", path, ctx), path, ctx), "opengl")
    extra = {
        kind: media_path(root, item[key], path, key, ctx) if key in item else None
        for kind, key in (("depth", "depth_file_path"), ("normal", "normal_file_path"), ("mask", "mask_path"))
    }
    return Frame(image, pose, item, ctx, **extra)


def _camera_model(meta: dict, file: Path) -> str:
    """Our lens model for the file's camera_model (instant-ngp: is_fisheye)."""
    model = meta.get("camera_model", "OPENCV_FISHEYE" if meta.get("is_fisheye") is True else "OPENCV")
    if model not in MODELS:
        raise InputError(file, f"camera_model {model!r} is not supported (need one of {', '.join(MODELS)})")
    return CAMERA_MODELS[model]


def _ngp_box(meta: dict, file: Path):
    """instant-ngp's scene box in the file's coordinates, or None without aabb_scale."""
    aabb_scale = number(meta, "aabb_scale", file)
    if not aabb_scale:
        return None
    scale = number(meta, "scale", file, default=NGP_SCALE)
    if aabb_scale <= 0 or scale <= 0:
        raise InputError(file, f"aabb_scale and scale must be positive, got {aabb_scale}, {scale}")
    offset = meta.get("offset", [NGP_OFFSET] * 3)
    try:
        offset = np.asarray(offset, dtype=np.float64)
    except (TypeError, ValueError):
        offset = None
    if offset is None or offset.shape != (3,) or not np.isfinite(offset).all():
        raise InputError(file, f"'offset' must be 3 numbers, got {meta.get('offset')!r}")
    centre, half = (NGP_OFFSET - offset) / scale, 0.5 * aabb_scale / scale
    return np.stack([centre - half, centre + half])


def _applied_transform(meta: dict, file: Path):
    value = meta["applied_transform"]
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        m = None
    if m is None or m.shape not in ((3, 4), (4, 4)) or not np.isfinite(m).all():
        raise InputError(file, "'applied_transform' must be a 3x4 or 4x4 matrix of finite numbers")
    return value


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


def read(path, background=(1.0, 1.0, 1.0), downscale: int = 1, aabb=None, near=None, far=None,
         options: ReadOptions = ReadOptions()) -> Scene:
    path = Path(path)
    file = path if path.suffix == ".json" else path / "transforms.json"
    root = file.parent
    if not root.is_dir():
        raise InputError(root, "scene directory not found")
    meta = read_json(file)
    lens = _camera_model(meta, file)
    items = frames_of(meta, file)
    frames = [_frame(root, file, meta, item, i) for i, item in enumerate(items)]
    unit = options.depth_scale or number(meta, "depth_unit_scale_factor", file, default=DEPTH_UNIT)
    lists = {
        split: FrameList(file, [frames[i] for i in idx], top=meta, depth_unit=unit, focal_key="fl_x",
                         lens=lens, mixed_sizes=True, missing=options.missing_frames)
        for split, idx in _assign(root, file, meta, items).items()
    }
    splits = {split: load_split(spec, background, downscale)
              for split, spec in lists.items() if not split_is_missing(spec, split)}
    if len(splits) == 1 < len(lists):
        raise InputError(file, "no frame image of the val or test frames exists")
    extras = {"format": "nerfstudio"}
    if "applied_transform" in meta:
        extras["applied_transform"] = _applied_transform(meta, file)
    if aabb is None and "aabb" not in meta:
        aabb = _ngp_box(meta, file)
    return make_scene(root, splits, background, meta, file, aabb=aabb, near=near, far=far, extras=extras)


def _lens_keys(cameras, i: int) -> dict:
    names = PARAMS[cameras.model]
    return {} if not names else dict(zip(names, cameras.distortion[i].tolist()))


def write(scene: Scene, out_dir, depth: bool = True, normals: bool = True) -> Path:
    """Write all splits into one transforms.json; differing intrinsics and lens parameters go
    per frame; training masks as 8-bit ``masks/`` PNGs (mask_path)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    first = next(iter(scene.splits.values()))
    fx, fy, cx, cy = shared_intrinsics(first)
    model = first.cameras.model
    names_of = PARAMS[model]
    shared_lens = _lens_keys(first.cameras, 0)
    meta = {
        "camera_model": next(k for k, v in CAMERA_MODELS.items() if v == model),
        "fl_x": fx, "fl_y": fy, "cx": cx, "cy": cy, **shared_lens,
        "w": first.cameras.width, "h": first.cameras.height,
        "depth_unit_scale_factor": DEPTH_UNIT, "aabb": scene.aabb.tolist(), "frames": [],
    }
    for split_name, split in scene.splits.items():
        cams = split.cameras
        if (cams.width, cams.height) != (meta["w"], meta["h"]):
            raise ValueError("nerfstudio writer needs one image size across splits")
        if cams.model != model:
            raise ValueError(f"nerfstudio writer needs one camera model, got {model} and {cams.model}")
        straight = straight_colour(split, scene.background)
        names = []
        for i in range(len(split)):
            stem = f"{split_name}_{i:04d}.png"
            frame = {"file_path": f"images/{stem}", "transform_matrix": cams.c2w[i].tolist()}
            own = dict(fl_x=cams.fx[i].item(), fl_y=cams.fy[i].item(),
                       cx=cams.cx[i].item(), cy=cams.cy[i].item())
            if tuple(own.values()) != (fx, fy, cx, cy):
                frame.update(own)
            if names_of and _lens_keys(cams, i) != shared_lens:
                frame.update(_lens_keys(cams, i))
            if split.masks is not None:
                frame["mask_path"] = f"masks/{stem}"
                (out / "masks").mkdir(exist_ok=True)
                images.write_grey(out / "masks" / stem, split.masks[i].numpy())
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
