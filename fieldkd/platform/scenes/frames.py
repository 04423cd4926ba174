"""Turn a parsed list of frames into a :class:`SceneSplit` (images, cameras, depth, normals, masks).

Frames whose image file is missing are skipped with one warning that names
them and their count (``missing="error"`` refuses them instead). Where the
format allows it (``mixed_sizes``), frames of other sizes than the first are
resampled to its size and their intrinsics scaled per axis, which keeps every
ray where it was; lens coefficients live in normalised coordinates and stay.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import InputError
from . import images
from .cameras import Cameras
from .meta import check_principal_point, intrinsics, lens_parameters, number
from .options import warn
from .scene import SceneSplit


@dataclass
class Frame:
    image: Path
    c2w: np.ndarray  # (4, 4) internal OpenGL convention
    keys: dict  # the frame's JSON object (per-frame intrinsics override the top level)
    context: str  # "frame 3: " for error messages
    depth: Path | None = None
    normal: Path | None = None
    mask: Path | None = None


@dataclass
class FrameList:
    """The frames of one split as a transforms file describes them."""

    source: Path  # the transforms file, named in errors
    frames: list[Frame]
    top: dict = field(default_factory=dict)  # top-level keys: shared intrinsics, w, h
    depth_unit: float = 1e-3  # scene units per stored depth integer
    focal_key: str = "camera_angle_x"  # the focal key the format requires (named in errors)
    lens: str = "pinhole"  # the lens model of every frame (see lens.MODELS)
    mixed_sizes: bool = False  # frames may differ in size (nerfstudio, instant-ngp)
    missing: str = "skip"  # frames without an image file: skip (warn) | error


def _check_size(frame: Frame, got: tuple[int, int], first: tuple[int, int] | None, spec: FrameList):
    merged = {**spec.top, **frame.keys}
    w = number(merged, "w", spec.source, frame.context)
    h = number(merged, "h", spec.source, frame.context)
    if w is not None and h is not None and (int(w), int(h)) != got:
        raise InputError(frame.image, f"image is {got[0]}x{got[1]} but {spec.source.name} "
                                      f"says w={int(w)}, h={int(h)}")
    if first is not None and got != first and not spec.mixed_sizes:
        raise InputError(frame.image, f"image is {got[0]}x{got[1]} but earlier frames "
                                      f"of {spec.source.name} are {first[0]}x{first[1]}")


def _referrer(frame: Frame, spec: "FrameList") -> str:
    return f"{frame.context.rstrip(': ')} of {spec.source.name}"


def _geometry(frame: Frame, size: tuple[int, int], spec: "FrameList"):
    """(depth, normals) of a frame, each None when the frame has none."""
    ref = _referrer(frame, spec)
    depth = None if frame.depth is None else images.read_depth(frame.depth, spec.depth_unit, ref)
    normal = None if frame.normal is None else images.read_normals(frame.normal, ref)
    for kind, path, data in (("depth", frame.depth, depth), ("normal", frame.normal, normal)):
        if data is not None and data.shape[1::-1] != size:
            raise InputError(path, f"{kind} image is {data.shape[1]}x{data.shape[0]} "
                                   f"but its frame image is {size[0]}x{size[1]}")
    return depth, normal


def _resize(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resample (H, W[, C]) float values to ``size`` (w, h): box filter when shrinking, bilinear otherwise."""
    planes = values[..., None] if values.ndim == 2 else values
    shrink = size[0] < planes.shape[1]
    out = [np.asarray(Image.fromarray(np.ascontiguousarray(planes[..., c], dtype=np.float32), mode="F")
                      .resize(size, Image.BOX if shrink else Image.BILINEAR))
           for c in range(planes.shape[2])]
    stacked = np.stack(out, -1)
    return stacked[..., 0] if values.ndim == 2 else stacked


def present_frames(spec: FrameList) -> list[Frame]:
    """The frames whose image exists; the others are skipped with a warning or refused."""
    missing = [f for f in spec.frames if not f.image.is_file()]
    if missing and spec.missing == "error":
        f = missing[0]
        raise InputError(f.image, f"frame image not found (referenced by {_referrer(f, spec)}; "
                                  f"{len(missing)} of {len(spec.frames)} frames are missing)")
    if missing:
        names = ", ".join(f.image.name for f in missing[:5]) + (", ..." if len(missing) > 5 else "")
        warn(f"{spec.source}: skipped {len(missing)} of {len(spec.frames)} frames whose image is missing "
             f"({names}); scene.missing_frames=error refuses them")
    kept = [f for f in spec.frames if f.image.is_file()]
    if not kept:
        raise InputError(spec.source, f"none of the {len(spec.frames)} frame images exists "
                                      f"(first: {spec.frames[0].image})")
    return kept


def split_is_missing(spec: FrameList, name: str) -> bool:
    """True (with a warning) when no image of an evaluation split exists and missing frames are
    skipped: the reader leaves the split out rather than fail the load."""
    if name == "train" or spec.missing != "skip" or any(f.image.is_file() for f in spec.frames):
        return False
    warn(f"{spec.source}: left out the {name} split, none of its {len(spec.frames)} frame images exists")
    return True


def load_split(spec: FrameList, background, downscale: int = 1) -> SceneSplit:
    """Read every frame, composite RGBA on ``background`` and downscale by an integer factor."""
    bg = np.asarray(background, dtype=np.float32)
    frames = present_frames(spec)
    rgbs, alphas, depths, normals, masks, poses, intr, params = [], [], [], [], [], [], [], []
    first = None
    for frame in frames:
        rgba = images.read_rgba(frame.image, _referrer(frame, spec))
        size = (rgba.shape[1], rgba.shape[0])
        _check_size(frame, size, first, spec)
        if first is None and min(size) // downscale < 1:
            raise InputError(frame.image, f"downscale {downscale} leaves no pixels "
                                          f"of a {size[0]}x{size[1]} image")
        first = first or size
        fx, fy, cx, cy = intrinsics(frame.keys, size[0], size[1], spec.source, frame.context,
                                    fallback=spec.top, focal_key=spec.focal_key)
        check_principal_point(cx, cy, size[0], size[1], spec.source, frame.context)
        params.append(lens_parameters(frame.keys, spec.lens, spec.source, frame.context, fallback=spec.top))
        depth, normal = _geometry(frame, size, spec)
        mask = None if frame.mask is None else images.read_mask(frame.mask, _referrer(frame, spec))
        if mask is not None and mask.shape[1::-1] != size:
            raise InputError(frame.mask, f"mask is {mask.shape[1]}x{mask.shape[0]} "
                                         f"but its frame image is {size[0]}x{size[1]}")
        if size != first:  # mixed sizes: resample to the first frame's size, scale K per axis
            sx, sy = first[0] / size[0], first[1] / size[1]
            fx, cx, fy, cy = fx * sx, cx * sx, fy * sy, cy * sy
            rgba = _resize(rgba, first)
            if depth is not None or normal is not None:
                raise InputError(frame.image, f"image is {size[0]}x{size[1]} but the first frame is "
                                              f"{first[0]}x{first[1]}: depth and normals need one size")
            mask = None if mask is None else _resize(mask, first)
        alpha = rgba[..., 3]
        # Composite before resampling: averaging composited colour is the right area filter.
        rgb = rgba[..., :3] * alpha[..., None] + bg * (1 - alpha[..., None])
        rgbs.append(images.area_downscale(rgb, downscale))
        alphas.append(images.area_downscale(alpha, downscale))
        if mask is not None:
            masks.append(images.area_downscale(mask, downscale))
        if depth is not None:
            depths.append(images.area_downscale(depth, downscale, weights=depth > 0))
        if normal is not None:
            n = images.area_downscale(normal, downscale, weights=np.abs(normal).sum(-1) > 0)
            normals.append(n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-6))
        poses.append(frame.c2w)
        intr.append((fx, fy, cx, cy))
    k = np.asarray(intr, dtype=np.float64) / downscale
    lens = np.asarray(params, dtype=np.float64).reshape(len(frames), -1)
    cameras = Cameras(
        c2w=torch.from_numpy(np.stack(poses)).float(),
        fx=torch.from_numpy(k[:, 0]).float(), fy=torch.from_numpy(k[:, 1]).float(),
        cx=torch.from_numpy(k[:, 2]).float(), cy=torch.from_numpy(k[:, 3]).float(),
        width=first[0] // downscale, height=first[1] // downscale,
        model=spec.lens, distortion=torch.from_numpy(lens).float() if lens.shape[1] else None,
    )

    def stack(items):
        # Geometry only when every frame has it: a partial stack would misalign indices.
        return torch.from_numpy(np.stack(items)).float() if items and len(items) == len(frames) else None

    return SceneSplit(
        images=torch.from_numpy(np.stack(rgbs)).float(),
        cameras=cameras,
        frame_paths=[str(f.image) for f in frames],
        alphas=torch.from_numpy(np.stack(alphas)).float(),
        depths=stack(depths),
        normals=stack(normals),
        masks=stack(masks),
    )
