"""Parsing of transforms JSON files, shared by the Blender and nerfstudio readers.

Every problem becomes ``InputError(file, problem)`` naming the key or frame.
This is also the one place where file poses enter the internal convention:
both formats store camera-to-world matrices in the OpenGL convention (camera
looks down -z, +y up), which is ours, so :func:`pose_to_internal` only
converts poses declared as OpenCV.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from .cameras import opencv_to_opengl
from .lens import PARAMS
from .limits import current
from .paths import inside

ROTATION_TOL = 1e-3  # |R^T R - I|: files store rotations to float precision; tools write no scale
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def read_json(path: Path, what: str = "transforms file") -> dict:
    """A JSON object from ``path``; any problem is an InputError naming the file."""
    if not path.is_file():
        raise InputError(path, f"{what} not found")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(path, f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    except (UnicodeDecodeError, OSError) as e:
        raise InputError(path, f"cannot read {what}: {e}") from None
    if not isinstance(meta, dict):
        raise InputError(path, "top level must be a JSON object")
    return meta


def require(meta: dict, key: str, path: Path, context: str = ""):
    if key not in meta:
        raise InputError(path, f"{context}missing required key '{key}'")
    return meta[key]


def number(meta: dict, key: str, path: Path, context: str = "", default=None) -> float | None:
    value = meta.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(path, f"{context}'{key}' must be a finite number, got {value!r}")
    return float(value)


def frames_of(meta: dict, path: Path) -> list[dict]:
    frames = require(meta, "frames", path)
    if not isinstance(frames, list) or not all(isinstance(f, dict) for f in frames):
        raise InputError(path, "'frames' must be a list of objects")
    if not frames:
        raise InputError(path, "'frames' is empty")
    return frames


def matrix(value, path: Path, context: str) -> np.ndarray:
    """A finite 4x4 camera-to-world matrix with last row 0 0 0 1."""
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(path, f"{context}transform_matrix is not a numeric 4x4 matrix") from None
    if m.shape != (4, 4):
        raise InputError(path, f"{context}transform_matrix must be 4x4, got shape {m.shape}")
    if not np.isfinite(m).all():
        raise InputError(path, f"{context}transform_matrix has non-finite entries")
    if not np.allclose(m[3], [0, 0, 0, 1], atol=1e-6):
        raise InputError(path, f"{context}transform_matrix last row must be 0 0 0 1, got {m[3].tolist()}")
    check_rotation(m[:3, :3], path, context)
    return m


def check_rotation(r: np.ndarray, path: Path, context: str) -> None:
    """A camera's rotation is orthonormal with determinant +1 (nerfstudio's ns-process-data and
    Blender write exact rotations, without scale); anything else would bend every ray."""
    det = float(np.linalg.det(r))
    if abs(det) < 1e-6:
        raise InputError(path, f"{context}transform_matrix rotation is singular (determinant {det:.3g})")
    error = float(np.abs(r.T @ r - np.eye(3)).max())
    if error > ROTATION_TOL or det < 0:
        raise InputError(path, f"{context}transform_matrix rotation is not orthonormal with determinant +1 "
                               f"(|R^T R - I| = {error:.3g}, determinant {det:.3g})")


def pose_to_internal(c2w: np.ndarray, convention: str = "opengl") -> np.ndarray:
    """File pose -> internal OpenGL camera-to-world (identity for both our formats)."""
    if convention == "opengl":
        return c2w
    if convention == "opencv":
        return opencv_to_opengl(torch.from_numpy(c2w)).numpy()
    raise ValueError(f"unknown camera convention {convention!r}")


def aabb_of(meta: dict, path: Path) -> np.ndarray | None:
    """Optional explicit scene box: ``"aabb": [[xmin, ymin, zmin], [xmax, ymax, zmax]]``."""
    if "aabb" not in meta:
        return None
    try:
        box = np.asarray(meta["aabb"], dtype=np.float64)
    except (TypeError, ValueError):
        box = None
    if box is None or box.shape != (2, 3) or not np.isfinite(box).all() or (box[1] <= box[0]).any():
        raise InputError(path, "'aabb' must be [[xmin, ymin, zmin], [xmax, ymax, zmax]] with min < max")
    return box


def media_path(root: Path, value, path: Path, key: str, context: str) -> Path:
    """Resolve a frame's file reference; see :func:`with_extension` for paths without one."""
    if not isinstance(value, str) or not value:
        raise InputError(path, f"{context}'{key}' must be a non-empty string")
    checked = inside(root, Path(value), path, f"{context}{key}")
    found = with_extension(checked)
    if found == checked or current().allow_outside_paths:
        return found
    return inside(root, found.relative_to(root), path, f"{context}{key}")  # the suffixed name, checked too


def with_extension(p: Path) -> Path:
    """Blender-style references omit the extension: the file as named when it exists, else the
    first existing one with an image suffix (.png first), else the name with '.png'."""
    if p.suffix.lower() in IMAGE_SUFFIXES or p.is_file():
        return p
    for suffix in sorted(IMAGE_SUFFIXES, key=lambda s: s != ".png"):
        for candidate in (p.with_name(p.name + suffix), p.with_name(p.name + suffix.upper())):
            if candidate.is_file():
                return candidate
    return p.with_name(p.name + ".png")


def check_principal_point(cx: float, cy: float, width: int, height: int, where, context: str = "") -> None:
    """Refuse a principal point outside the image (a K meant for another image size or crop)."""
    if not (0 <= cx <= width and 0 <= cy <= height):
        raise InputError(where, f"{context}principal point (cx={cx:.6g}, cy={cy:.6g}) lies outside its "
                                f"{width}x{height} image: intrinsics of another image size or crop?")


# camera_model names of nerfstudio / COLMAP files (and our MEI) -> our lens model (see lens.PARAMS)
CAMERA_MODELS = {
    "PINHOLE": "pinhole", "SIMPLE_PINHOLE": "pinhole", "OPENCV": "opencv",
    "OPENCV_FISHEYE": "fisheye", "MEI": "mei",
}


def lens_parameters(meta: dict, model: str, path: Path, context: str = "", fallback: dict | None = None):
    """The lens parameters (see :data:`lens.PARAMS`) of a frame; absent keys are 0.

    Distortion keys that the model does not use must be absent or 0: a
    pinhole file with k1 != 0 is ambiguous, not a pinhole.
    """
    merged = {**(fallback or {}), **meta}
    used = PARAMS[model]
    for key in ("k1", "k2", "k3", "k4", "p1", "p2", "xi"):
        if key not in used and number(merged, key, path, context):
            raise InputError(path, f"{context}{key}={merged[key]} is not a parameter of the {model} camera "
                                   "model (set camera_model to OPENCV, OPENCV_FISHEYE or MEI)")
    return [number(merged, key, path, context, default=0.0) for key in used]


def field_of_view(angle: float, key: str, path: Path, context: str) -> float:
    """A pinhole's field of view in radians lies strictly between 0 and pi."""
    if not 0.0 < angle < math.pi:
        raise InputError(path, f"{context}'{key}' must be an angle in radians between 0 and pi, got {angle}")
    return angle


def intrinsics(meta: dict, width: int, height: int, path: Path, context: str = "",
               fallback: dict | None = None, focal_key: str = "camera_angle_x"):
    """(fx, fy, cx, cy) floats from fl_x/fl_y/cx/cy or camera_angle_x/camera_angle_y.

    Keys in ``meta`` win over ``fallback`` (top level when meta is a frame).
    ``focal_key`` is the key an error names when neither focal form is given.
    Missing fl_y / camera_angle_y means square pixels; missing cx, cy means
    the image centre.
    """
    merged = {**(fallback or {}), **meta}
    fx = number(merged, "fl_x", path, context)
    if fx is None:
        angle = number(merged, "camera_angle_x", path, context)
        if angle is None:
            other = "fl_x" if focal_key == "camera_angle_x" else "camera_angle_x"
            raise InputError(path, f"{context}missing required key '{focal_key}' (or '{other}')")
        fx = 0.5 * width / math.tan(0.5 * field_of_view(angle, "camera_angle_x", path, context))
    fy = number(merged, "fl_y", path, context)
    if fy is None:
        angle_y = number(merged, "camera_angle_y", path, context)
        angle_y = None if angle_y is None else field_of_view(angle_y, "camera_angle_y", path, context)
        fy = fx if angle_y is None else 0.5 * height / math.tan(0.5 * angle_y)
    cx = number(merged, "cx", path, context, default=width / 2.0)
    cy = number(merged, "cy", path, context, default=height / 2.0)
    if fx <= 0 or fy <= 0:
        raise InputError(path, f"{context}focal lengths must be positive, got fx={fx}, fy={fy}")
    return fx, fy, cx, cy
