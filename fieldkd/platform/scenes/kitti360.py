"""KITTI-360's folder layout: calibration, rectified stereo and fisheye frames, vehicle poses, LiDAR.

Files (relative to the dataset root; ``<seq>`` e.g. ``2013_05_28_drive_0000_sync``):

- ``calibration/perspective.txt``: ``KEY: numbers`` lines; we use ``P_rect_00``/``P_rect_01``
  (3x4), ``R_rect_00``/``R_rect_01`` (3x3) and ``S_rect_00`` (width height), and ignore the rest
  (``calib_time``, ``K_00``, ``D_00``, ...).
- ``calibration/calib_cam_to_pose.txt``: ``image_0X: `` + 12 numbers, the unrectified camera
  X -> vehicle (pose) frame, a 3x4 row-major matrix.
- ``calibration/calib_cam_to_velo.txt``: 12 numbers, unrectified camera 00 -> velodyne frame.
- ``calibration/image_02.yaml``, ``image_03.yaml``: the side fisheyes, MEI model, in OpenCV's
  YAML dialect (a ``%YAML:1.0`` first line that plain YAML refuses).
- ``data_2d_raw/<seq>/image_00|01/data_rect/{frame:010d}.png``,
  ``data_2d_raw/<seq>/image_02|03/data_rgb/{frame:010d}.png``.
- ``data_poses/<seq>/poses.txt``: per line a frame id and 12 numbers (vehicle -> world, 3x4).
  Frames without a line have no pose and are skipped, as KITTI-360's own loaders do.
- ``data_3d_raw/<seq>/velodyne_points/data/{frame:010d}.bin``: float32 x 4 (x, y, z, reflectance)
  per point, in the velodyne frame.
- split files: ``sequence frame side`` lines (side ``l`` or ``r``: the input camera 00 or 01).

Cameras are in OpenCV axes (x right, y down, z forward). The chains:
camera-to-world = pose . cam_to_pose . R_rect^-1 for the rectified cameras 00/01 (the rectified
image is the unrectified camera turned by R_rect), pose . cam_to_pose for the fisheyes, and
velodyne-to-world = pose . cam_to_pose[image_00] . cam_to_velo^-1.
Intrinsics keep the files' convention: pixel (i, j)'s centre is at (i, j).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from ..atomic import write_bytes, write_text
from ..errors import InputError
from . import images, limits
from .paths import inside

PERSPECTIVE = ("image_00", "image_01")
FISHEYES = ("image_02", "image_03")
CAMERAS = PERSPECTIVE + FISHEYES
SIDES = {"l": "image_00", "r": "image_01"}
MEI_MODEL = "MEI"
_PERSPECTIVE_KEYS = {"P_rect_00": (3, 4), "P_rect_01": (3, 4), "R_rect_00": (3, 3), "R_rect_01": (3, 3),
                     "S_rect_00": (2,)}


@dataclass(frozen=True)
class MeiCamera:
    """One fisheye's calibration (Mei's unified model, see :mod:`lens`): mirror xi, radial-tangential
    k1 k2 p1 p2, and the generalised focal lengths gamma1 gamma2 and principal point u0 v0 in pixels."""

    name: str
    width: int
    height: int
    xi: float
    k1: float
    k2: float
    p1: float
    p2: float
    gamma1: float
    gamma2: float
    u0: float
    v0: float

    @property
    def distortion(self) -> tuple[float, ...]:
        """The parameters in :data:`lens.PARAMS` order for ``mei``: xi k1 k2 p1 p2."""
        return (self.xi, self.k1, self.k2, self.p1, self.p2)


@dataclass(frozen=True)
class Calibration:
    """A KITTI-360 calibration folder. Matrices are float64 numpy arrays."""

    p_rect: dict[str, np.ndarray]  # image_00/01 -> (3, 4)
    r_rect: dict[str, np.ndarray]  # image_00/01 -> (3, 3)
    size: tuple[int, int]  # (width, height) of the rectified perspective images (S_rect_00)
    cam_to_pose: dict[str, np.ndarray]  # image_0X -> (4, 4), unrectified camera -> vehicle
    cam_to_velo: np.ndarray  # (4, 4), unrectified camera 00 -> velodyne
    fisheyes: dict[str, MeiCamera]

    def intrinsics(self, camera: str) -> np.ndarray:
        """(3, 3) K of a rectified perspective camera (P_rect's left block)."""
        return self.p_rect[camera][:, :3].copy()

    def camera_to_pose(self, camera: str) -> np.ndarray:
        """(4, 4) the camera whose images the files hold -> vehicle: rectified for 00/01."""
        if camera in PERSPECTIVE:
            rect = np.eye(4)
            rect[:3, :3] = self.r_rect[camera]
            return self.cam_to_pose[camera] @ np.linalg.inv(rect)
        return self.cam_to_pose[camera].copy()

    def velo_to_pose(self) -> np.ndarray:
        return self.cam_to_pose["image_00"] @ np.linalg.inv(self.cam_to_velo)


# --- small text files ---------------------------------------------------------

def _numbers(path, line_no: int, key: str, fields: list[str], shape: tuple[int, ...]) -> np.ndarray:
    count = math.prod(shape)
    where = f"line {line_no}" + (f" ({key})" if key else "")
    if len(fields) != count:
        raise InputError(path, f"{where}: expected {count} numbers, got {len(fields)}")
    try:
        values = np.array([float(f) for f in fields], dtype=np.float64)
    except ValueError:
        raise InputError(path, f"{where}: not a number in {' '.join(fields)!r}") from None
    if not np.isfinite(values).all():
        raise InputError(path, f"{where}: non-finite value")
    return values.reshape(shape)


def _keyed_lines(path: Path, what: str) -> dict[str, tuple[int, list[str]]]:
    """``KEY: v1 v2 ...`` lines by key, with their line number; blank lines are skipped."""
    text = _read_text(path, what)
    out = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, sep, rest = line.partition(":")
        if not sep:
            raise InputError(path, f"line {n}: expected 'KEY: values', got {line.strip()[:60]!r}")
        out[key.strip()] = (n, rest.split())
    return out


def _read_text(path: Path, what: str) -> str:
    if not path.is_file():
        raise InputError(path, f"{what} not found")
    limits.charge(path, path.stat().st_size, what)
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(path, f"unreadable {what}: {e}") from None


def _fmt(values) -> str:
    return " ".join(f"{float(v):.12e}" for v in np.asarray(values, dtype=np.float64).reshape(-1))


def _homogeneous(m34: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3] = m34
    return out


def read_perspective(path: Path) -> tuple[dict, dict, tuple[int, int]]:
    """(P_rect by camera, R_rect by camera, (width, height)) of ``perspective.txt``."""
    path = Path(path)
    lines = _keyed_lines(path, "perspective calibration")
    values = {}
    for key, shape in _PERSPECTIVE_KEYS.items():
        if key not in lines:
            raise InputError(path, f"no {key} line")
        n, fields = lines[key]
        values[key] = _numbers(path, n, key, fields, shape)
    w, h = values["S_rect_00"]
    if w < 1 or h < 1 or w != int(w) or h != int(h):
        raise InputError(path, f"line {lines['S_rect_00'][0]} (S_rect_00): image size must be two positive "
                               f"integers, got {w:g} {h:g}")
    for cam in PERSPECTIVE:
        k = values[f"P_rect_{cam[-2:]}"][:, :3]
        if not (k[0, 0] > 0 and k[1, 1] > 0):
            raise InputError(path, f"P_rect_{cam[-2:]}: focal lengths must be positive")
    p_rect = {cam: values[f"P_rect_{cam[-2:]}"] for cam in PERSPECTIVE}
    r_rect = {cam: values[f"R_rect_{cam[-2:]}"] for cam in PERSPECTIVE}
    return p_rect, r_rect, (int(w), int(h))


def write_perspective(path: Path, p_rect: dict, r_rect: dict, size: tuple[int, int]) -> Path:
    lines = []
    for cam in PERSPECTIVE:
        tag = cam[-2:]
        lines += [f"S_rect_{tag}: {_fmt(size)}", f"R_rect_{tag}: {_fmt(r_rect[cam])}",
                  f"P_rect_{tag}: {_fmt(p_rect[cam])}"]
    return write_text(path, "\n".join(lines) + "\n")


def read_cam_to_pose(path: Path) -> dict[str, np.ndarray]:
    """(4, 4) unrectified camera -> vehicle of every ``image_0X`` line; cameras 00 and 01 required."""
    path = Path(path)
    lines = _keyed_lines(path, "camera-to-pose calibration")
    out = {key: _homogeneous(_numbers(path, n, key, fields, (3, 4))) for key, (n, fields) in lines.items()
           if key in CAMERAS}
    for cam in PERSPECTIVE:
        if cam not in out:
            raise InputError(path, f"no {cam} line")
    return out


def write_cam_to_pose(path: Path, cam_to_pose: dict[str, np.ndarray]) -> Path:
    lines = [f"{cam}: {_fmt(np.asarray(m)[:3])}" for cam, m in sorted(cam_to_pose.items())]
    return write_text(path, "\n".join(lines) + "\n")


def read_cam_to_velo(path: Path) -> np.ndarray:
    path = Path(path)
    fields = _read_text(path, "camera-to-velodyne calibration").split()
    return _homogeneous(_numbers(path, 1, "", fields, (3, 4)))


def write_cam_to_velo(path: Path, cam_to_velo: np.ndarray) -> Path:
    return write_text(path, _fmt(np.asarray(cam_to_velo)[:3]) + "\n")


_MEI_FIELDS = {"mirror_parameters": ("xi",), "distortion_parameters": ("k1", "k2", "p1", "p2"),
               "projection_parameters": ("gamma1", "gamma2", "u0", "v0")}


def read_mei(path: Path) -> MeiCamera:
    """A fisheye's ``image_0X.yaml``. OpenCV writes a ``%YAML:1.0`` directive that YAML 1.1
    parsers refuse: it is dropped, and the rest read with ``yaml.safe_load`` (plain data only)."""
    path = Path(path)
    text = _read_text(path, "fisheye calibration")
    lines = text.splitlines()
    if lines and lines[0].startswith("%YAML"):
        lines = lines[1:]
    try:
        data = yaml.safe_load("\n".join(lines))
    except yaml.YAMLError as e:
        problem = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(path, f"unreadable fisheye calibration: {problem}") from None
    if not isinstance(data, dict):
        raise InputError(path, "fisheye calibration must be a mapping of keys")
    if data.get("model_type") != MEI_MODEL:
        raise InputError(path, f"model_type must be {MEI_MODEL}, got {data.get('model_type')!r}")
    size = []
    for key in ("image_width", "image_height"):
        value = data.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(path, f"{key} must be a positive integer, got {value!r}")
        size.append(value)
    params = {}
    for group, names in _MEI_FIELDS.items():
        block = data.get(group)
        if not isinstance(block, dict):
            raise InputError(path, f"no {group} block")
        for name in names:
            value = block.get(name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InputError(path, f"{group}.{name} must be a finite number, got {value!r}")
            params[name] = float(value)
    if not (params["gamma1"] > 0 and params["gamma2"] > 0):
        raise InputError(path, "projection_parameters gamma1, gamma2 must be positive")
    return MeiCamera(str(data.get("camera_name", path.stem)), size[0], size[1], **params)


def write_mei(path: Path, cam: MeiCamera) -> Path:
    lines = ["%YAML:1.0", "---", f"model_type: {MEI_MODEL}", f"camera_name: {cam.name}",
             f"image_width: {cam.width}", f"image_height: {cam.height}"]
    for group, names in _MEI_FIELDS.items():
        lines.append(f"{group}:")
        lines += [f"   {name}: {getattr(cam, name):.16e}" for name in names]
    return write_text(path, "\n".join(lines) + "\n")


def read_calibration(root: Path, fisheyes: bool = True) -> Calibration:
    """The ``calibration/`` folder of a dataset root (the fisheye files only when ``fisheyes``)."""
    folder = Path(root) / "calibration"
    p_rect, r_rect, size = read_perspective(folder / "perspective.txt")
    cam_to_pose = read_cam_to_pose(folder / "calib_cam_to_pose.txt")
    cam_to_velo = read_cam_to_velo(folder / "calib_cam_to_velo.txt")
    fish = {}
    if fisheyes:
        for cam in FISHEYES:
            fish[cam] = read_mei(folder / f"{cam}.yaml")
            if cam not in cam_to_pose:
                raise InputError(folder / "calib_cam_to_pose.txt", f"no {cam} line")
    return Calibration(p_rect, r_rect, size, cam_to_pose, cam_to_velo, fish)


def write_calibration(root: Path, calib: Calibration) -> Path:
    folder = Path(root) / "calibration"
    folder.mkdir(parents=True, exist_ok=True)
    write_perspective(folder / "perspective.txt", calib.p_rect, calib.r_rect, calib.size)
    write_cam_to_pose(folder / "calib_cam_to_pose.txt", calib.cam_to_pose)
    write_cam_to_velo(folder / "calib_cam_to_velo.txt", calib.cam_to_velo)
    for cam, mei in calib.fisheyes.items():
        write_mei(folder / f"{cam}.yaml", mei)
    return folder


# --- poses, LiDAR, splits -----------------------------------------------------------

def read_poses(path: Path) -> dict[int, np.ndarray]:
    """Frame id -> (4, 4) vehicle -> world, in file order; a frame may appear once."""
    path = Path(path)
    text = _read_text(path, "pose file")
    poses = {}
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 13:
            raise InputError(path, f"line {n}: expected a frame id and 12 numbers, got {len(fields)} fields")
        try:
            frame = int(fields[0])
        except ValueError:
            raise InputError(path, f"line {n}: frame id {fields[0]!r} is not an integer") from None
        if frame < 0 or frame in poses:
            raise InputError(path, f"line {n}: frame {frame} is negative or listed twice")
        poses[frame] = _homogeneous(_numbers(path, n, "", fields[1:], (3, 4)))
    if not poses:
        raise InputError(path, "pose file lists no frame")
    return poses


def write_poses(path: Path, poses: dict[int, np.ndarray]) -> Path:
    lines = [f"{frame} {_fmt(np.asarray(m)[:3])}" for frame, m in sorted(poses.items())]
    return write_text(path, "\n".join(lines) + "\n")


def read_velodyne(path: Path) -> np.ndarray:
    """(N, 4) float32 points (x, y, z, reflectance) in the velodyne frame."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "LiDAR sweep not found")
    size = path.stat().st_size
    if size % 16:
        raise InputError(path, f"LiDAR sweep has {size} bytes, not a multiple of 16 (float32 x 4 per point)")
    limits.charge(path, size, "LiDAR sweep")
    points = np.fromfile(path, dtype="<f4").reshape(-1, 4)
    if not np.isfinite(points).all():
        raise InputError(path, "LiDAR sweep has non-finite values")
    return points


def write_velodyne(path: Path, points: np.ndarray) -> Path:
    points = np.asarray(points, dtype="<f4")
    if points.ndim != 2 or points.shape[1] != 4:
        raise ValueError(f"LiDAR points must be (N, 4), got {points.shape}")
    return write_bytes(path, points.tobytes())


def read_split(path: Path) -> list[tuple[str, int, str]]:
    """``(sequence, frame, side)`` of each ``sequence frame side`` line (side: l or r)."""
    path = Path(path)
    rows = []
    for n, line in enumerate(_read_text(path, "split file").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 3 or fields[2] not in SIDES:
            raise InputError(path, f"line {n}: expected 'sequence frame side' with side l or r, got {line.strip()!r}")
        if not is_folder_name(fields[0]):
            raise InputError(path, f"line {n}: sequence {fields[0]!r} must be one folder name (no '/' or '..')")
        try:
            frame = int(fields[1])
        except ValueError:
            raise InputError(path, f"line {n}: frame {fields[1]!r} is not an integer") from None
        if frame < 0:
            raise InputError(path, f"line {n}: frame {frame} is negative")
        rows.append((fields[0], frame, fields[2]))
    return rows


def is_folder_name(name: str) -> bool:
    return name not in ("", ".", "..") and "/" not in name and "\\" not in name


def write_split(path: Path, rows) -> Path:
    return write_text(path, "".join(f"{seq} {frame:010d} {side}\n" for seq, frame, side in rows))


# --- per-sequence files -------------------------------------------------------------

def image_name(sequence: str, camera: str, frame: int) -> str:
    folder = "data_rect" if camera in PERSPECTIVE else "data_rgb"
    return f"data_2d_raw/{sequence}/{camera}/{folder}/{frame:010d}.png"


def velodyne_name(sequence: str, frame: int) -> str:
    return f"data_3d_raw/{sequence}/velodyne_points/data/{frame:010d}.bin"


def poses_name(sequence: str) -> str:
    return f"data_poses/{sequence}/poses.txt"


def resolve(root: Path, name: str, source) -> Path:
    """``root / name``, kept inside the dataset folder (a sequence name comes from a split file)."""
    return inside(root, name, source, what="sequence path")


def read_image(root: Path, sequence: str, camera: str, frame: int, source="") -> np.ndarray:
    """(H, W, 3) float32 RGB in [0, 1] of one frame; InputError when the file is missing."""
    path = resolve(root, image_name(sequence, camera, frame), source or root)
    if not path.is_file():
        raise InputError(path, f"image of frame {frame} ({camera}) not found" +
                         (f" (listed in {source})" if source else ""))
    return images.read_rgba(path)[..., :3]


def write_image(root: Path, sequence: str, camera: str, frame: int, rgb: np.ndarray) -> Path:
    path = Path(root) / image_name(sequence, camera, frame)
    path.parent.mkdir(parents=True, exist_ok=True)
    images.write_rgb(path, rgb)
    return path


def sequences(root: Path) -> list[str]:
    """The sequences that have a pose file, sorted."""
    folder = Path(root) / "data_poses"
    if not folder.is_dir():
        raise InputError(root, "no data_poses folder: not a KITTI-360 dataset")
    return sorted(d.name for d in folder.iterdir() if (d / "poses.txt").is_file())


def read_sequence_poses(root: Path, sequence: str, source="") -> dict[int, np.ndarray]:
    path = resolve(root, poses_name(sequence), source or root)
    if not path.is_file():
        raise InputError(path, f"pose file of sequence {sequence!r} not found" +
                         (f" (listed in {source})" if source else ""))
    return read_poses(path)


def cam_to_world(calib: Calibration, pose: np.ndarray, camera: str) -> np.ndarray:
    """(4, 4) OpenCV camera -> world of ``camera`` at a frame whose vehicle pose is ``pose``."""
    return pose @ calib.camera_to_pose(camera)


def velo_to_world(calib: Calibration, pose: np.ndarray) -> np.ndarray:
    return pose @ calib.velo_to_pose()


def split_path(split_dir: Path, split: str) -> Path:
    """BTS's names: ``<split_dir>/<split>_files.txt``."""
    return Path(split_dir) / f"{split}_files.txt"


