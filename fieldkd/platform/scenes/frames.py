"""Turn a parsed list of frames into a :class:`SceneSplit` (images, cameras, depth, normals)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from . import images
from .cameras import Cameras
from .meta import intrinsics, number
from .scene import SceneSplit


@dataclass
class Frame:
    image: Path
    c2w: np.ndarray  # (4, 4) internal OpenGL convention
    keys: dict  # the frame's JSON object (per-frame intrinsics override the top level)
    context: str  # "frame 3: " for error messages
    depth: Path | None = None
    normal: Path | None = None


@dataclass
class FrameList:
    """The frames of one split as a transforms file describes them."""

    source: Path  # the transforms file, named in errors
    frames: list[Frame]
    top: dict = field(default_factory=dict)  # top-level keys: shared intrinsics, w, h
    depth_unit: float = 1e-3  # scene units per stored depth integer
    focal_key: str = "camera_angle_x"  # the focal key the format requires (named in errors)


def _check_size(frame: Frame, got: tuple[int, int], first: tuple[int, int] | None, spec: FrameList):
    merged = {**spec.top, **frame.keys}
    w = number(merged, "w", spec.source, frame.context)
    h = number(merged, "h", spec.source, frame.context)
    if w is not None and h is not None and (int(w), int(h)) != got:
        raise InputError(frame.image, f"image is {got[0]}x{got[1]} but {spec.source.name} "
                                      f"says w={int(w)}, h={int(h)}")
    if first is not None and got != first:
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


def load_split(spec: FrameList, background, downscale: int = 1) -> SceneSplit:
    """Read every frame, composite RGBA on ``background`` and downscale by an integer factor."""
    bg = np.asarray(background, dtype=np.float32)
    rgbs, alphas, depths, normals, poses, intr = [], [], [], [], [], []
    first = None
    for frame in spec.frames:
        rgba = images.read_rgba(frame.image, _referrer(frame, spec))
        size = (rgba.shape[1], rgba.shape[0])
        _check_size(frame, size, first, spec)
        if first is None and min(size) // downscale < 1:
            raise InputError(frame.image, f"downscale {downscale} leaves no pixels "
                                          f"of a {size[0]}x{size[1]} image")
        first = first or size
        alpha = rgba[..., 3]
        # Composite before resampling: averaging composited colour is the right area filter.
        rgb = rgba[..., :3] * alpha[..., None] + bg * (1 - alpha[..., None])
        depth, normal = _geometry(frame, size, spec)
        rgbs.append(images.area_downscale(rgb, downscale))
        alphas.append(images.area_downscale(alpha, downscale))
        if depth is not None:
            depths.append(images.area_downscale(depth, downscale, weights=depth > 0))
        if normal is not None:
            n = images.area_downscale(normal, downscale, weights=np.abs(normal).sum(-1) > 0)
            normals.append(n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-6))
        poses.append(frame.c2w)
        intr.append(intrinsics(frame.keys, size[0], size[1], spec.source, frame.context,
                               fallback=spec.top, focal_key=spec.focal_key))
    k = np.asarray(intr, dtype=np.float64) / downscale
    cameras = Cameras(
        c2w=torch.from_numpy(np.stack(poses)).float(),
        fx=torch.from_numpy(k[:, 0]).float(), fy=torch.from_numpy(k[:, 1]).float(),
        cx=torch.from_numpy(k[:, 2]).float(), cy=torch.from_numpy(k[:, 3]).float(),
        width=first[0] // downscale, height=first[1] // downscale,
    )

    def stack(items):
        # Geometry only when every frame has it: a partial stack would misalign indices.
        return torch.from_numpy(np.stack(items)) if items and len(items) == len(spec.frames) else None

    return SceneSplit(
        images=torch.from_numpy(np.stack(rgbs)).float(),
        cameras=cameras,
        frame_paths=[str(f.image) for f in spec.frames],
        alphas=torch.from_numpy(np.stack(alphas)).float(),
        depths=stack(depths),
        normals=stack(normals),
    )
