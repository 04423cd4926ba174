"""MonoSDF format: ``cameras.npz`` plus per-frame colour, depth, normal and mask files.

Layout::

    cameras.npz         world_mat_<i>: 4x4 = K (4x4) @ world-to-camera, OpenCV axes (x right, y down, z forward)
                        scale_mat_<i>: 4x4 similarity, normalised scene coordinates -> world coordinates
    000000_rgb.png      colour, 8-bit
    000000_depth.npy    (H, W) camera z-depth in world units (times ``scene.depth_scale`` when given)
    000000_normal.npy   (3, H, W) in [0, 1], n = 2 v - 1, in the OpenCV camera frame
    000000_mask.npy     optional (H, W) in [0, 1]
    splits.json         optional, ours: {"train": [ids], "val": [ids], "test": [ids]}, optional "aabb", "near",
                        "far" (normalised units)
    mesh.ply            optional ground-truth mesh in world units

Reading follows MonoSDF: ``P = world_mat_i @ scale_mat_i`` is decomposed into
K and the camera-to-world pose in the normalised space, which is the scene's
space here. So depths are divided by the scale of ``scale_mat``, normals are
rotated from the camera into the scene frame, and ``Scene.extras`` keeps
``world_from_scene`` (the scale_mat, which every frame must share) and
``frame_ids`` (the frame number of each view per split). Other choices:

- MonoSDF casts the ray of pixel (u, v) through K^-1 (u, v, 1), i.e. pixel
  centres at integers; ours sit at integer + 0.5, so cx, cy gain 0.5 on
  reading and lose it on writing.
- The mask is coverage, as an alpha channel: the image is
  ``rgb * mask + background * (1 - mask)``; without masks alphas are 1.
- MonoSDF has no splits. Without ``splits.json`` every frame is a training
  frame and the test split is the same frames (MonoSDF's protocol). Splits
  keep the frame order (ascending ids), which is the trajectory order.
- The box is MonoSDF's: [-1, 1]^3 around its unit bounding sphere, unless
  given; near / far follow :mod:`bounds` for that box.
- MonoSDF's own Replica / ScanNet depths are monocular estimates, known up to
  scale and shift; they are divided by the scale like metric ones, and
  ``Scene.extras['depth_kind']`` says "monocular" unless splits.json says
  ``"depth": "metric"`` (our generated rooms): depth metrics then align
  scale and shift first, as the loss does.
- ``scene.center_crop`` is MonoSDF's ``center_crop_type``. Its DTU, Tanks and
  Temples and Replica data keep the camera of the original image in
  cameras.npz while the images are already centre-cropped to a square and
  resized to 384x384; the crop moves cx by half the cut width and scales K to
  384 px (:func:`crop_intrinsics`), and leaves the images as they are.
  ``no_crop`` (ScanNet, ours) uses K as stored. A principal point outside
  the image is refused, naming the crop that may be missing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.linalg
import torch

from ..atomic import atomic_path, write_text
from ..errors import InputError
from . import arrays, images
from .assemble import make_scene
from .cameras import Cameras, opencv_to_opengl
from .export import require_pinhole, straight_colour
from .meta import aabb_of, check_principal_point, read_json
from .options import ReadOptions
from .paths import dataset_root, inside
from .scene import Scene, SceneSplit
from .similarity import pose_to_world, similarity_parts

CAMERAS = "cameras.npz"
SPLITS_FILE = "splits.json"
SPLITS = ("train", "val", "test")
BOUND_KEYS = ("aabb", "near", "far", "depth")
DEPTH_KINDS = ("metric", "monocular")
CROP_SIZE = 384  # the side of MonoSDF's cropped and resized images
# center_crop_type -> (width of the centred square crop, original image width), from MonoSDF's loaders
CROPS = {
    "no_crop": None,
    "center_crop_for_replica": (680, 1200),
    "center_crop_for_tnt": (540, 960),
    "center_crop_for_dtu": (1200, 1600),
}
UNIT_BOX = [[-1.0] * 3, [1.0] * 3]
FRAME_NAME = re.compile(r"^(\d+)_rgb\.png$")
SKEW_TOLERANCE = 1e-6  # relative to fx
PIXEL_CENTRE = 0.5  # ours minus MonoSDF's principal point (see module docstring)


# --- camera maths (pure) ------------------------------------------------------


def decompose_projection(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """K (3, 3) with K[2, 2] = 1 and a positive diagonal, and the OpenCV camera-to-world
    (4, 4) of a projection ``p`` (3, 4) = lambda K [R | t], for any nonzero lambda.

    RQ-factorises the left 3x3 block; column signs of K move into R's rows, and
    a negative lambda (det R = -1 after that) flips R, which leaves K alone.
    ValueError when the block is singular.
    """
    p = np.asarray(p, dtype=np.float64)[:3, :4]
    m = p[:, :3]
    size = np.abs(m).max()
    if size == 0 or abs(np.linalg.det(m)) <= 1e-12 * size**3:
        raise ValueError("the left 3x3 block of the projection is singular")
    k, r = scipy.linalg.rq(m)
    signs = np.sign(np.diag(k))
    k, r = k * signs[None, :], signs[:, None] * r
    if np.linalg.det(r) < 0:
        r = -r
    c2w = np.eye(4)
    c2w[:3, :3] = r.T
    c2w[:3, 3] = -np.linalg.solve(m, p[:, 3])  # camera centre: P (C, 1) = 0
    return k / k[2, 2], c2w


def compose_world_mat(k: np.ndarray, c2w_opencv: np.ndarray) -> np.ndarray:
    """MonoSDF's world_mat: K as 4x4 times the rigid world-to-camera of an OpenCV camera-to-world."""
    k4 = np.eye(4)
    k4[:3, :3] = k
    return k4 @ np.linalg.inv(np.asarray(c2w_opencv, dtype=np.float64))


def intrinsics_from_k(k: np.ndarray) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) in our pixel convention; ValueError for a skewed K."""
    if abs(k[0, 1]) > SKEW_TOLERANCE * abs(k[0, 0]):
        raise ValueError(f"skewed intrinsics (K[0, 1] = {k[0, 1]:.6g}) are not supported")
    return float(k[0, 0]), float(k[1, 1]), float(k[0, 2]) + PIXEL_CENTRE, float(k[1, 2]) + PIXEL_CENTRE


def crop_intrinsics(k: np.ndarray, crop: str) -> np.ndarray:
    """K (MonoSDF's pixel convention) after MonoSDF's ``center_crop_type``: cx loses half the
    cut width, then the first two rows scale to the 384-px image (fx, fy, cx, cy alike)."""
    if CROPS[crop] is None:
        return k
    size, width = CROPS[crop]
    out = np.array(k, dtype=np.float64)
    out[0, 2] -= (width - size) * 0.5
    out[:2, :] *= CROP_SIZE / size
    return out


def uncrop_intrinsics(k: np.ndarray, crop: str) -> np.ndarray:
    """The inverse of :func:`crop_intrinsics`: K of the original image (what MonoSDF's data store)."""
    if CROPS[crop] is None:
        return k
    size, width = CROPS[crop]
    out = np.array(k, dtype=np.float64)
    out[:2, :] *= size / CROP_SIZE
    out[0, 2] += (width - size) * 0.5
    return out


def k_from_intrinsics(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    return np.array([[fx, 0.0, cx - PIXEL_CENTRE], [0.0, fy, cy - PIXEL_CENTRE], [0.0, 0.0, 1.0]])


# --- reading ----------------------------------------------------------------

@dataclass
class _Camera:
    k: np.ndarray  # (3, 3), MonoSDF pixel convention
    c2w: np.ndarray  # (4, 4) OpenCV camera-to-world in scene (normalised) coordinates
    scale_mat: np.ndarray  # (4, 4)


@dataclass
class _Frame:
    rgb: np.ndarray  # (H, W, 3) on the background
    alpha: np.ndarray  # (H, W)
    depth: np.ndarray | None
    normal: np.ndarray | None
    camera: _Camera
    path: Path


def _load_cameras(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise InputError(path, "cameras file not found (MonoSDF scenes need cameras.npz)")
    return arrays.read_npz(path, "cameras file")


def _matrix(cameras: dict, key: str, path: Path, frame: str) -> np.ndarray:
    if key not in cameras:
        raise InputError(path, f"missing {key} for frame {frame}")
    try:
        m = np.asarray(cameras[key], dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(path, f"{key} is not numeric") from None
    if m.shape != (4, 4) or not np.isfinite(m).all():
        raise InputError(path, f"{key} must be a finite 4x4 matrix, got shape {m.shape}")
    return m


def _camera(cameras: dict, path: Path, i: int, frame: str, crop: str = "no_crop") -> _Camera:
    world_mat = _matrix(cameras, f"world_mat_{i}", path, frame)
    scale_mat = _matrix(cameras, f"scale_mat_{i}", path, frame)
    try:
        similarity_parts(scale_mat)
        k, c2w = decompose_projection(world_mat @ scale_mat)
        k = crop_intrinsics(k, crop)
        intrinsics_from_k(k)
    except ValueError as e:
        raise InputError(path, f"frame {frame} (world_mat_{i} @ scale_mat_{i}): {e}") from None
    return _Camera(k, c2w, scale_mat)


def _frame_files(root: Path) -> dict[int, Path]:
    """Frame number -> colour image, from the ``<number>_rgb.png`` names."""
    found: dict[int, Path] = {}
    for path in sorted(root.glob("*_rgb.png")):
        match = FRAME_NAME.match(path.name)
        if not match:
            continue
        i = int(match.group(1))
        if i in found:
            raise InputError(path, f"frame number {i} also names {found[i].name}")
        found[i] = inside(root, path.name, root, "frame image")
    if not found:
        raise InputError(root, "no frames found (need <number>_rgb.png files next to cameras.npz)")
    return dict(sorted(found.items()))


def _companion(image: Path, kind: str) -> Path:
    name = image.name.replace("_rgb.png", f"_{kind}.npy")
    return inside(image.parent, name, image.parent, f"{kind} file")


def _optional_kinds(files: dict[int, Path], ids: list[int]) -> set[str]:
    """Kinds (depth, normal, mask) that the frames have: every frame or none."""
    kinds = set()
    for kind in ("depth", "normal", "mask"):
        have = [_companion(files[i], kind).is_file() for i in ids]
        if any(have) and not all(have):
            missing = _companion(files[ids[have.index(False)]], kind)
            other = _companion(files[ids[have.index(True)]], kind).name
            raise InputError(missing, f"{kind} file not found (frame {other} has one: all frames or none)")
        if have and all(have):
            kinds.add(kind)
    return kinds


def _array(path: Path, what: str) -> np.ndarray:
    value = arrays.read_npy(path, what)
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf":
        raise InputError(path, f"{what} must be a numeric array")
    value = value.astype(np.float64)
    if not np.isfinite(value).all():
        raise InputError(path, f"{what} has non-finite values")
    return value


def _plane(path: Path, what: str, size: tuple[int, int]) -> np.ndarray:
    """An (H, W) map; (1, H, W) and (H, W, 1) are accepted too."""
    value = _array(path, what)
    w, h = size
    if value.shape not in ((h, w), (1, h, w), (h, w, 1)):
        raise InputError(path, f"{what} has shape {value.shape} but its frame image is {w}x{h} (need ({h}, {w}))")
    return value.reshape(h, w)


def _depth(path: Path, size, scale: float) -> np.ndarray:
    depth = _plane(path, "depth map", size)
    if (depth < 0).any():
        raise InputError(path, f"depth map has negative values (min {depth.min():.6g})")
    return (depth / scale).astype(np.float32)


def _normals(path: Path, size, c2w_rotation: np.ndarray) -> np.ndarray:
    """(H, W, 3) unit normals in the scene frame, 0 where the stored vector is 0 (0.5 in the file)."""
    value = _array(path, "normal map")
    w, h = size
    if value.shape != (3, h, w):
        raise InputError(path, f"normal map has shape {value.shape}, need (3, {h}, {w}) for a {w}x{h} image")
    camera = value.transpose(1, 2, 0) * 2.0 - 1.0
    world = camera @ c2w_rotation.T
    length = np.linalg.norm(world, axis=-1, keepdims=True)
    return np.where(length > 1e-6, world / np.maximum(length, 1e-12), 0.0).astype(np.float32)


def _mask(path: Path, size) -> np.ndarray:
    mask = _plane(path, "mask", size)
    if mask.min() < 0 or mask.max() > 1:
        raise InputError(path, f"mask values must lie in [0, 1], got [{mask.min():.6g}, {mask.max():.6g}]")
    return mask.astype(np.float32)


def _read_frame(image: Path, camera: _Camera, kinds: set[str], background: np.ndarray,
                first: tuple[int, int] | None, depth_scale: float = 1.0) -> _Frame:
    rgba = images.read_rgba(image)
    size = (rgba.shape[1], rgba.shape[0])
    if first is not None and size != first:
        raise InputError(image, f"image is {size[0]}x{size[1]} but earlier frames are {first[0]}x{first[1]}")
    scale, _, _ = similarity_parts(camera.scale_mat)
    alpha = rgba[..., 3] * (_mask(_companion(image, "mask"), size) if "mask" in kinds else 1.0)
    rgb = rgba[..., :3] * alpha[..., None] + background * (1 - alpha[..., None])
    depth = _depth(_companion(image, "depth"), size, scale / depth_scale) if "depth" in kinds else None
    normal = _normals(_companion(image, "normal"), size, camera.c2w[:3, :3]) if "normal" in kinds else None
    return _Frame(rgb.astype(np.float32), alpha.astype(np.float32), depth, normal, camera, image)


def _id_list(meta: dict, key: str, path: Path, known: dict[int, Path]) -> list[int]:
    ids = meta[key]
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise InputError(path, f"'{key}' must be a list of frame numbers")
    missing = [i for i in ids if i not in known]
    if missing:
        raise InputError(path, f"'{key}' names frame {missing[0]}, which has no {missing[0]:06d}_rgb.png")
    if len(set(ids)) != len(ids):
        raise InputError(path, f"'{key}' lists a frame twice")
    return sorted(ids)


def _read_splits(path: Path, known: dict[int, Path]) -> tuple[dict[str, list[int]], dict]:
    """Frame numbers per split and the file's bound keys (see module docstring)."""
    everything = list(known)
    if not path.is_file():
        return {"train": everything, "test": everything}, {}
    meta = read_json(path, "splits file")
    unknown = sorted(set(meta) - set(SPLITS) - set(BOUND_KEYS))
    if unknown:
        raise InputError(path, f"unknown key '{unknown[0]}' (known: {', '.join(SPLITS + BOUND_KEYS)})")
    if "train" not in meta:
        raise InputError(path, "missing required key 'train'")
    splits = {key: _id_list(meta, key, path, known) for key in SPLITS if key in meta and meta[key] != []}
    if "train" not in splits:
        raise InputError(path, "'train' is empty")
    if "val" not in splits and "test" not in splits:
        splits["test"] = everything
    if meta.get("depth", "metric") not in DEPTH_KINDS:
        raise InputError(path, f"'depth' must be one of {', '.join(DEPTH_KINDS)}, got {meta['depth']!r}")
    return splits, {key: meta[key] for key in BOUND_KEYS if key in meta}


def _shared_scale_mat(cams: dict[int, _Camera], path: Path) -> np.ndarray:
    ids = list(cams)
    first = cams[ids[0]].scale_mat
    tolerance = 1e-6 * max(np.abs(first).max(), 1.0)
    for i in ids[1:]:
        if not np.allclose(cams[i].scale_mat, first, rtol=0, atol=tolerance):
            raise InputError(path, f"scale_mat_{i} differs from scale_mat_{ids[0]}: the frames must share "
                                   "one normalisation")
    return first


def _split(frames: list[_Frame], downscale: int) -> SceneSplit:
    shrink = lambda x, w=None: images.area_downscale(x, downscale, weights=w)  # noqa: E731
    ks = np.array([intrinsics_from_k(f.camera.k) for f in frames]) / downscale
    c2w = np.stack([f.camera.c2w for f in frames])
    h, w = frames[0].rgb.shape[:2]
    cameras = Cameras(
        c2w=opencv_to_opengl(torch.from_numpy(c2w)).float(),
        fx=torch.from_numpy(ks[:, 0]).float(), fy=torch.from_numpy(ks[:, 1]).float(),
        cx=torch.from_numpy(ks[:, 2]).float(), cy=torch.from_numpy(ks[:, 3]).float(),
        width=w // downscale, height=h // downscale,
    )

    def stack(items):
        return None if items[0] is None else torch.from_numpy(np.stack(items)).float()

    normals = [None if f.normal is None else shrink(f.normal, np.abs(f.normal).sum(-1) > 0) for f in frames]
    normals = [n if n is None else n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-6) for n in normals]
    return SceneSplit(
        images=stack([shrink(f.rgb) for f in frames]),
        cameras=cameras,
        frame_paths=[str(f.path) for f in frames],
        alphas=stack([shrink(f.alpha) for f in frames]),
        depths=stack([None if f.depth is None else shrink(f.depth, f.depth > 0) for f in frames]),
        normals=stack(normals),
    )


def _check_frame(frame: _Frame, cam_path: Path, crop: str) -> None:
    h, w = frame.rgb.shape[:2]
    if crop != "no_crop" and (w, h) != (CROP_SIZE, CROP_SIZE):
        raise InputError(frame.path, f"scene.center_crop={crop} expects MonoSDF's {CROP_SIZE}x{CROP_SIZE} "
                                     f"images, got {w}x{h}")
    _, _, cx, cy = intrinsics_from_k(frame.camera.k)
    hint = "" if crop != "no_crop" else (" (MonoSDF's DTU, Tanks and Temples and Replica scans need "
                                         "scene.center_crop=center_crop_for_dtu, _tnt or _replica)")
    try:
        check_principal_point(cx, cy, w, h, cam_path, f"frame {frame.path.name}: ")
    except InputError as e:
        raise InputError(cam_path, f"{e.problem}{hint}") from None


def read(path, background=(1.0, 1.0, 1.0), downscale: int = 1, aabb=None, near=None, far=None,
         options: ReadOptions = ReadOptions()) -> Scene:
    root = dataset_root(path)
    cam_path = root / CAMERAS
    cam_data = _load_cameras(cam_path)
    files = _frame_files(root)
    splits_path = root / SPLITS_FILE
    ids, bounds = _read_splits(splits_path, files)
    depth_kind = bounds.pop("depth", "monocular")
    used = sorted(set().union(*ids.values()))
    cams = {i: _camera(cam_data, cam_path, i, files[i].name, options.center_crop) for i in used}
    world_from_scene = _shared_scale_mat(cams, cam_path)
    kinds = _optional_kinds(files, used)
    bg = np.asarray(background, dtype=np.float32)
    frames: dict[int, _Frame] = {}
    for i in used:
        first = next(iter(frames.values())).rgb.shape[1::-1] if frames else None
        frames[i] = _read_frame(files[i], cams[i], kinds, bg, first, options.depth_scale or 1.0)
        _check_frame(frames[i], cam_path, options.center_crop)
        if first is None and min(frames[i].rgb.shape[:2]) // downscale < 1:
            raise InputError(files[i], f"downscale {downscale} leaves no pixels of a "
                                       f"{frames[i].rgb.shape[1]}x{frames[i].rgb.shape[0]} image")
    splits = {name: _split([frames[i] for i in view_ids], downscale) for name, view_ids in ids.items()}
    meta_path = splits_path if splits_path.is_file() else cam_path
    box = aabb if aabb is not None else aabb_of(bounds, meta_path)
    return make_scene(root, splits, background, bounds, meta_path,
                      aabb=box if box is not None else UNIT_BOX, near=near, far=far,
                      extras={"format": "monosdf", "world_from_scene": torch.from_numpy(world_from_scene),
                              "depth_kind": depth_kind,
                              "frame_ids": ids})


# --- writing ----------------------------------------------------------------

def _written_ids(scene: Scene) -> dict[str, list[int]]:
    """Frame numbers per split: ``extras['frame_ids']`` when it fits the splits, else 0, 1, ... in split order."""
    given = scene.extras.get("frame_ids")
    if isinstance(given, dict) and set(given) == set(scene.splits) and all(
            len(given[name]) == len(split) for name, split in scene.splits.items()):
        return {name: [int(i) for i in given[name]] for name in scene.splits}
    ids, start = {}, 0
    for name, split in scene.splits.items():
        ids[name] = list(range(start, start + len(split)))
        start += len(split)
    return ids


def _world_from_scene(scene: Scene) -> np.ndarray:
    m = scene.extras.get("world_from_scene")
    m = np.eye(4) if m is None else np.asarray(torch.as_tensor(m).double().numpy())
    similarity_parts(m)  # ValueError when it is not a similarity
    return m


def _needs_mask(scene: Scene) -> bool:
    return any(s.alphas is not None and bool((s.alphas < 1).any()) for s in scene.splits.values())


def save_npy(path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        np.save(tmp, array)


def write(scene: Scene, out_dir, depth: bool = True, normals: bool = True, center_crop: str = "no_crop") -> Path:
    """Write every frame once (splits may share frames) plus ``splits.json``; depth and normals
    only when every split has them, masks only when some pixel is not fully covered.
    ``center_crop`` stores the K of the uncropped image, as MonoSDF's own data do."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ids = _written_ids(scene)
    world_from_scene = _world_from_scene(scene)
    scale, _, _ = similarity_parts(world_from_scene)
    with_depth = depth and all(s.depths is not None for s in scene.splits.values())
    with_normals = normals and all(s.normals is not None for s in scene.splits.values())
    with_mask = _needs_mask(scene)
    matrices, done = {}, set()
    for name, split in scene.splits.items():
        require_pinhole(split, "monosdf")
        straight = straight_colour(split, scene.background)
        c2w_cv = opencv_to_opengl(split.cameras.c2w.double()).numpy()  # the flip is its own inverse
        for index, i in enumerate(ids[name]):
            if i in done:
                continue
            done.add(i)
            c = split.cameras
            k = uncrop_intrinsics(k_from_intrinsics(*(float(t[index]) for t in (c.fx, c.fy, c.cx, c.cy))),
                                  center_crop)
            matrices[f"world_mat_{i}"] = compose_world_mat(k, pose_to_world(c2w_cv[index], world_from_scene))
            matrices[f"scale_mat_{i}"] = world_from_scene
            stem = out / f"{i:06d}"
            images.write_rgb(Path(f"{stem}_rgb.png"), straight[index])
            if with_mask:
                alpha = split.alphas[index] if split.alphas is not None else torch.ones(c.height, c.width)
                save_npy(f"{stem}_mask.npy", alpha.numpy().astype(np.float32))
            if with_depth:
                save_npy(f"{stem}_depth.npy", (split.depths[index].double().numpy() * scale).astype(np.float32))
            if with_normals:
                camera = split.normals[index].double().numpy() @ c2w_cv[index, :3, :3]  # rows: R^T n
                save_npy(f"{stem}_normal.npy", (camera * 0.5 + 0.5).transpose(2, 0, 1).astype(np.float32))
    with atomic_path(out / CAMERAS) as tmp:
        np.savez(tmp, **matrices)
    meta = {**ids, "aabb": scene.aabb.tolist(), "near": scene.near, "far": scene.far,
            "depth": scene.extras.get("depth_kind", "metric")}
    write_text(out / SPLITS_FILE, json.dumps(meta, indent=1))
    return out
