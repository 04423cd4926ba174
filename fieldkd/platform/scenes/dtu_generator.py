"""Procedural DTU: MVSNet-format datasets of textured objects on a table, in millimetres.

Each scan is a seeded composition of a few textured primitives (:mod:`sdf`) resting on a round
table, seen by the same cameras in every scan, as DTU's robot arm places them: ``n_views`` (49)
positions on arcs at DTU's distance (about 650 mm, so depths fall in 425-935 mm) facing the
object, and lit by ``n_lights`` (7) point lights that change the shading. Everything is traced
once per view (:mod:`tracer`); the images of the lights only reshade the hits.

Written (see :mod:`dtu` for the layouts): training scans in the training layout with depth maps
and masks, test scans in the test layout (JPEG, light :data:`TEST_LIGHT`), ``pair.txt`` ranked by
view overlap, ``lists/{train,test}.txt`` and each scan's ground-truth cloud
``Points/stl/stl{N:03d}_total.ply``: the surface every view sees, from the depth maps, thinned to
one point per ``point_spacing`` mm cube.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import InputError
from . import sdf
from .cache import build_once, cache_root
from .cameras import Cameras, look_at
from .mvs_cams import MVSCamera, cam_text, pair_text
from .pfm import pfm_bytes
from .ply import points_ply_bytes
from .sdf import Primitive
from .tracer import Light, one_thread, ray_box, shade, sphere_trace

MVS_GENERATOR_VERSION = 1  # bump when the generated files change (invalidates the cached default)
DEPTH_MIN, DEPTH_MAX, DEPTH_NUM = 425.0, 935.0, 192  # the cameras' range line, DTU's scale
CAMERA_DISTANCE = 650.0  # mm from the object's centre
FOCAL_PER_WIDTH = 1.8075  # fx / image width of DTU's cameras (2892 px at 1600): a 31 degree view
ARC_ELEVATIONS = (18.0, 27.0, 36.0, 45.0, 54.0)  # degrees; one arc of cameras each
ARC_SPAN = 80.0  # degrees of azimuth an arc covers, centred on the front
TARGET = (0.0, 0.0, 45.0)  # where every camera looks (mm)
TABLE_RADIUS, TABLE_HALF = 230.0, 10.0  # a round table whose top is z = 0
OBJECT_BOX = [[-160.0, -160.0, -1.0], [160.0, 160.0, 240.0]]  # every object lies inside
HIT_EPS = 0.02  # mm
MAX_STEPS = 96
RAYS_PER_BATCH = 1 << 20
BACKGROUND = (0.03, 0.03, 0.035)  # DTU's dark surroundings
TEST_LIGHT = 3  # the lighting of DTU's test images
PAIR_SOURCES = 10  # source views per view in pair.txt, as DTU's
PAIR_STRIDE = 3  # every PAIR_STRIDE-th pixel of a view votes for its overlaps
THETA0, SIGMA1, SIGMA2 = 5.0, 1.0, 10.0  # MVSNet's view-selection weighting of triangulation angles
VISIBLE_TOLERANCE = 0.01  # relative depth difference of a point that another view also sees


# --- scans ------------------------------------------------------------------

def _texture(rng: np.random.Generator):
    a = tuple(float(c) for c in rng.uniform(0.05, 0.95, 3))
    b = tuple(float(c) for c in np.clip(1.0 - np.asarray(a) + rng.uniform(-0.15, 0.15, 3), 0.02, 0.98))
    if rng.random() < 0.5:
        return partial(sdf.checker, color_a=a, color_b=b, size=float(rng.uniform(7.0, 14.0)))
    axis = tuple(float(c) for c in rng.normal(size=3))
    return partial(sdf.stripes, color_a=a, color_b=b, period=float(rng.uniform(9.0, 18.0)), axis=axis)


def _object(kind: str, rng: np.random.Generator) -> tuple:
    """(shape, half height, rotation) of a primitive of ``kind`` with random sizes (mm)."""
    if kind == "sphere":
        r = rng.uniform(35.0, 55.0)
        return partial(sdf.sphere, radius=r), r, None
    if kind == "box":
        half = tuple(float(h) for h in rng.uniform(28.0, 50.0, 3))
        return partial(sdf.rounded_box, half=half, radius=5.0), half[2], sdf.rotation(rz=float(rng.uniform(0, 90)))
    if kind == "torus":
        minor = rng.uniform(12.0, 17.0)
        return partial(sdf.torus, major=float(rng.uniform(38.0, 50.0)), minor=minor), minor, None
    if kind == "cylinder":
        hh = rng.uniform(30.0, 60.0)
        return partial(sdf.cylinder, radius=float(rng.uniform(24.0, 40.0)), half_height=hh), hh, None
    hh, r = rng.uniform(30.0, 55.0), rng.uniform(18.0, 28.0)  # an upright capsule
    return partial(sdf.capsule, a=(0.0, 0.0, -hh), b=(0.0, 0.0, hh), radius=r), hh + r, None


def table() -> Primitive:
    """The round table all scans stand on: its top is the disc z = 0 of radius TABLE_RADIUS."""
    return Primitive(partial(sdf.cylinder, radius=TABLE_RADIUS, half_height=TABLE_HALF),
                     partial(sdf.checker, color_a=(0.55, 0.42, 0.3), color_b=(0.75, 0.66, 0.52), size=24.0),
                     center=(0.0, 0.0, -TABLE_HALF))


def scan_spec(number: int) -> sdf.SceneSpec:
    """Scan ``number``'s objects (mm, z up): 2 to 4 textured primitives resting on the table
    (:func:`table`, which is not in the list: it is traced in closed form)."""
    rng = np.random.default_rng([2024, number])
    spec, placed = [], []
    kinds = rng.choice(["sphere", "box", "torus", "cylinder", "capsule"], size=int(rng.integers(2, 5)),
                       replace=False)
    for kind in kinds:
        shape, height, rot = _object(str(kind), rng)
        for _ in range(50):  # objects do not overlap: 100 mm between centres
            xy = rng.uniform(-85.0, 85.0, 2)
            if all(np.linalg.norm(xy - other) > 100.0 for other in placed):
                break
        placed.append(xy)
        spec.append(Primitive(shape, _texture(rng), center=(float(xy[0]), float(xy[1]), float(height)),
                              rotation=rot, specular=float(rng.uniform(0.0, 0.3))))
    return spec


def lights(n: int) -> list[Light]:
    """``n`` point lights above the front half, each with its own ambient level."""
    out = []
    for i in range(n):
        angle = math.radians(-90.0 + (i - (n - 1) / 2) * 150.0 / max(n - 1, 1))
        out.append(Light(position=(900.0 * math.cos(angle), 900.0 * math.sin(angle), 450.0 + 150.0 * (i % 3)),
                         ambient=0.15 + 0.07 * (i % 4)))
    return out


# --- cameras ----------------------------------------------------------------

def arc_counts(n_views: int) -> list[int]:
    """Views per arc, lowest arc first: as even as possible, the extra ones on the lower arcs."""
    base, extra = divmod(n_views, len(ARC_ELEVATIONS))
    return [base + (i < extra) for i in range(len(ARC_ELEVATIONS))]


def camera_poses(n_views: int = 49) -> np.ndarray:
    """(n, 4, 4) float64 world -> camera (OpenCV) matrices on arcs, numbered along each arc and back
    along the next, as DTU's positions are."""
    poses = []
    for arc, (count, elevation) in enumerate(zip(arc_counts(n_views), ARC_ELEVATIONS)):
        azimuths = np.linspace(-ARC_SPAN / 2, ARC_SPAN / 2, count) if count > 1 else np.zeros(1)
        for azimuth in azimuths if arc % 2 == 0 else azimuths[::-1]:
            a, e = math.radians(-90.0 + azimuth), math.radians(elevation)
            eye = torch.tensor(TARGET) + CAMERA_DISTANCE * torch.tensor(
                [math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)])
            c2w = look_at(eye, torch.tensor(TARGET)).double().numpy() @ np.diag([1.0, -1.0, -1.0, 1.0])
            poses.append(np.linalg.inv(c2w))
    return np.stack(poses)


def intrinsic(width: int, height: int) -> np.ndarray:
    """K (pixel centres at integers) of DTU's field of view at ``width`` x ``height``."""
    f = FOCAL_PER_WIDTH * width
    return np.array([[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]])


def _tracer_cameras(extrinsics: np.ndarray, k: np.ndarray, width: int, height: int) -> Cameras:
    c2w = np.linalg.inv(extrinsics) @ np.diag([1.0, -1.0, -1.0, 1.0])  # OpenCV -> our OpenGL axes
    n = len(extrinsics)
    full = lambda v: torch.full((n,), float(v))
    # Our tracer puts pixel centres at integer + 0.5, so its principal point is half a pixel on.
    return Cameras(torch.from_numpy(c2w).float(), full(k[0, 0]), full(k[1, 1]), full(k[0, 2] + 0.5),
                   full(k[1, 2] + 0.5), width, height)


# --- rendering --------------------------------------------------------------

@torch.no_grad()
def render_scan(spec: sdf.SceneSpec, extrinsics: np.ndarray, k: np.ndarray, width: int, height: int,
                light_list: list[Light]) -> dict[str, np.ndarray]:
    """Trace every view once: ``rgb`` (L, N, H, W, 3) under each light, ``depth`` (N, H, W) camera z
    in the range (0 elsewhere) and ``valid`` (N, H, W).

    The objects are sphere-traced inside their box, no further than the table, whose top is hit in
    closed form: most rays end on the table, and marching towards a plane at a grazing angle is slow.
    """
    cams = _tracer_cameras(extrinsics, k, width, height)
    n, pixels = len(cams), height * width
    rgb = np.zeros((len(light_list), n * pixels, 3), np.float32)
    depth = np.zeros(n * pixels, np.float32)
    per_batch = max(1, RAYS_PER_BATCH // pixels)  # whole views per batch: the march's steps cost per call
    with one_thread():
        for start in range(0, n, per_batch):
            views = torch.arange(start, min(start + per_batch, n))
            rays = cams.rays_at(views.repeat_interleave(pixels), *_pixels(width, height, len(views)))
            colours, z = _trace(spec, rays, light_list)
            rows = slice(start * pixels, (start + len(views)) * pixels)
            rgb[:, rows], depth[rows] = colours.numpy(), z.numpy()
    depth = depth.reshape(n, height, width)
    return {"rgb": rgb.reshape(len(light_list), n, height, width, 3), "depth": depth, "valid": depth > 0}


def _pixels(width: int, height: int, repeat: int):
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                            indexing="ij")
    return xs.reshape(-1).repeat(repeat), ys.reshape(-1).repeat(repeat)


def _trace(spec: sdf.SceneSpec, rays, light_list: list[Light]):
    """(colours (L, M, 3) under each light, camera z (M,) in the depth range, 0 elsewhere) of rays."""
    o, d = rays.origins, rays.directions
    down = d[:, 2] < -1e-9  # the table top z = 0 within its radius
    t_table = torch.where(down, -o[:, 2] / torch.where(down, d[:, 2], torch.full_like(d[:, 2], -1.0)),
                          torch.full_like(d[:, 2], math.inf))
    on_table = down & ((o[:, :2] + t_table.clamp(max=1e9)[:, None] * d[:, :2]).norm(dim=-1) <= TABLE_RADIUS)
    t_table = torch.where(on_table, t_table, torch.full_like(t_table, math.inf))
    t_near, t_far = ray_box(o, d, OBJECT_BOX)
    t, hit = sphere_trace(lambda p: sdf.union_distance(spec, p), o, d, t_near, torch.minimum(t_far, t_table),
                          eps=HIT_EPS, max_steps=MAX_STEPS)
    t = torch.where(hit, t, t_table)
    z = t * rays.z_scale
    hit = (hit | on_table) & (z > DEPTH_MIN) & (z < DEPTH_MAX)
    colours = torch.tensor(BACKGROUND).repeat(len(light_list), len(t), 1)
    if hit.any():
        scene = [table(), *spec]
        points = o[hit] + t[hit, None] * d[hit]
        _, index = sdf.union(scene, points)
        normal = sdf.normals(scene, points, h=0.05)
        base = sdf.albedo(scene, points, index)
        for i, light in enumerate(light_list):
            colours[i, hit] = shade(scene, points, d[hit], normal, index, light, base)
    return colours, torch.where(hit, z, torch.zeros_like(z))


def backproject(depth: np.ndarray, k: np.ndarray, extrinsic: np.ndarray, stride: int = 1):
    """World points (M, 3) of the pixels with depth > 0 (every ``stride``-th row and column), and
    their (rows, cols)."""
    rows, cols = np.nonzero(depth[::stride, ::stride] > 0)
    rows, cols = rows * stride, cols * stride
    z = depth[rows, cols].astype(np.float64)
    cam = np.linalg.solve(k, np.stack([cols * z, rows * z, z]))  # pixel centres at integers
    world = np.linalg.inv(extrinsic) @ np.concatenate([cam, np.ones((1, len(z)))])
    return world[:3].T, rows, cols


def project(points: np.ndarray, k: np.ndarray, extrinsic: np.ndarray):
    """(u, v, z) of world points (M, 3) in a camera (pixel centres at integers)."""
    cam = extrinsic[:3, :3] @ points.T + extrinsic[:3, 3:]
    uvw = k @ cam
    z = cam[2]
    safe = np.where(np.abs(z) > 1e-9, z, 1e-9)
    return uvw[0] / safe, uvw[1] / safe, z


def seen_by(points: np.ndarray, depth: np.ndarray, k: np.ndarray, extrinsic: np.ndarray,
            tolerance: float = VISIBLE_TOLERANCE) -> np.ndarray:
    """(M,) True where a view whose depth map is ``depth`` sees the points (not occluded)."""
    u, v, z = project(points, k, extrinsic)
    col, row = np.round(u).astype(np.int64), np.round(v).astype(np.int64)
    h, w = depth.shape
    inside = (z > 0) & (col >= 0) & (col < w) & (row >= 0) & (row < h)
    seen = np.zeros(len(points), bool)
    d = depth[row[inside], col[inside]]
    seen[inside] = (d > 0) & (np.abs(d - z[inside]) < tolerance * z[inside])
    return seen


def _angle_weight(theta: np.ndarray) -> np.ndarray:
    sigma = np.where(theta <= THETA0, SIGMA1, SIGMA2)
    return np.exp(-((theta - THETA0) ** 2) / (2 * sigma**2))


def pair_scores(depths: np.ndarray, k: np.ndarray, extrinsics: np.ndarray, n_sources: int = PAIR_SOURCES,
                stride: int = PAIR_STRIDE) -> dict[int, list[tuple[int, float]]]:
    """pair.txt's lists: for each view the ``n_sources`` views that see most of its surface, scored as
    MVSNet scores them (the shared points, each weighted by its triangulation angle)."""
    centres = np.stack([np.linalg.inv(e)[:3, 3] for e in extrinsics])
    pairs = {}
    for ref in range(len(depths)):
        points, _, _ = backproject(depths[ref], k, extrinsics[ref], stride)
        scores = []
        for src in range(len(depths)):
            if src == ref or not len(points):
                continue
            shared = points[seen_by(points, depths[src], k, extrinsics[src])]
            if not len(shared):
                continue
            a, b = centres[ref] - shared, centres[src] - shared
            cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
            theta = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
            scores.append((src, float(_angle_weight(theta).sum())))
        scores.sort(key=lambda item: -item[1])
        pairs[ref] = [(src, round(score, 3)) for src, score in scores[:n_sources] if score > 0]
    return pairs


def surface_points(depths: np.ndarray, rgb: np.ndarray, k: np.ndarray, extrinsics: np.ndarray,
                   spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """The surface all views see (back-projected depth maps), one point (and colour) per
    ``spacing`` mm cube: (points (M, 3) float32, colours (M, 3) uint8)."""
    points, colours = [], []
    for view in range(len(depths)):
        p, rows, cols = backproject(depths[view], k, extrinsics[view])
        points.append(p)
        colours.append(rgb[view, rows, cols])
    points, colours = np.concatenate(points), np.concatenate(colours)
    cells = np.floor(points / spacing).astype(np.int64)
    cells -= cells.min(0)
    span = cells.max(0) + 1
    _, first = np.unique((cells[:, 0] * span[1] + cells[:, 1]) * span[2] + cells[:, 2], return_index=True)
    return points[first].astype(np.float32), np.round(np.clip(colours[first], 0, 1) * 255).astype(np.uint8)


# --- writing ----------------------------------------------------------------

def _put(path: Path, data: bytes) -> None:
    # Plain writes: the dataset is written into a fresh folder that only appears when complete.
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _put_image(path: Path, values: np.ndarray, **save) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(np.clip(values, 0, 1) * 255).astype(np.uint8)).save(path, **save)


def _depth_visual(depth: np.ndarray) -> np.ndarray:
    """A grey view of ``depth`` (near bright) that is 0 exactly where there is none: the mask."""
    shade = 1.0 - (depth - DEPTH_MIN) / (DEPTH_MAX - DEPTH_MIN)
    return np.where(depth > 0, 0.2 + 0.8 * shade, 0.0)


def write_mvs_dataset(out_dir, train_scans=(1, 2, 3), test_scans=(4, 5), width: int = 160,
                      height: int = 128, test_width: int | None = None, test_height: int | None = None,
                      n_views: int = 49, n_lights: int = 7, point_spacing: float = 1.0,
                      n_sources: int = PAIR_SOURCES) -> Path:
    """Generate a DTU-format dataset into ``out_dir`` (absent or empty): ``train_scans`` in the
    training layout at ``width`` x ``height`` (sides multiples of 32 suit cascade MVS networks),
    ``test_scans`` in the test layout at ``test_width`` x ``test_height`` (default: the same), the
    scan lists and every scan's ground-truth cloud. Scan numbers seed the compositions."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(out, "output directory exists and is not empty")
    train_scans, test_scans = [int(s) for s in train_scans], [int(s) for s in test_scans]
    if set(train_scans) & set(test_scans) or len(set(train_scans)) != len(train_scans) \
            or len(set(test_scans)) != len(test_scans):
        raise InputError(out, "train and test scans must be distinct numbers")
    if min([width, height, n_views, n_lights, *([test_width] if test_width else []),
            *([test_height] if test_height else [])]) < 1 or n_views < 2 or not 0 <= TEST_LIGHT < 10:
        raise InputError(out, "sizes, views (>= 2) and lights must be positive")
    test_width, test_height = test_width or width, test_height or height
    extrinsics = camera_poses(n_views)
    light_list = lights(n_lights)
    test_light = min(TEST_LIGHT, n_lights - 1)
    out.mkdir(parents=True, exist_ok=True)

    def range_cam(e, k):
        return MVSCamera(e, k, DEPTH_MIN, (DEPTH_MAX - DEPTH_MIN) / DEPTH_NUM, DEPTH_NUM)

    k_train = intrinsic(width, height)
    train_pairs = None
    for number in train_scans:
        spec = scan_spec(number)
        r = render_scan(spec, extrinsics, k_train, width, height, light_list)
        if train_pairs is None:  # DTU pairs views once, for every scan: from the first scan's surface
            train_pairs = pair_scores(r["depth"], k_train, extrinsics, n_sources)
        for view in range(n_views):
            for light in range(n_lights):
                _put_image(out / f"Rectified/scan{number}_train/rect_{view + 1:03d}_{light}_r5000.png",
                           r["rgb"][light, view])
            _put(out / f"Depths/scan{number}_train/depth_map_{view:04d}.pfm", pfm_bytes(r["depth"][view]))
            _put_image(out / f"Depths/scan{number}_train/depth_visual_{view:04d}.png",
                       _depth_visual(r["depth"][view]))
        points, colours = surface_points(r["depth"], r["rgb"][test_light], k_train, extrinsics, point_spacing)
        _put(out / f"Points/stl/stl{number:03d}_total.ply", points_ply_bytes(points, colours))
    if train_scans:
        k_file = k_train.copy()
        k_file[:2] /= 4  # the quarter-size intrinsics MVSNet's training cameras hold
        for view in range(n_views):
            _put(out / f"Cameras/train/{view:08d}_cam.txt", cam_text(range_cam(extrinsics[view], k_file)).encode())
        _put(out / "Cameras/pair.txt", pair_text(train_pairs).encode())
    k_test = intrinsic(test_width, test_height)
    for number in test_scans:
        r = render_scan(scan_spec(number), extrinsics, k_test, test_width, test_height, [light_list[test_light]])
        for view in range(n_views):
            _put_image(out / f"scan{number}/images/{view:08d}.jpg", r["rgb"][0, view], quality=95)
            _put(out / f"scan{number}/cams/{view:08d}_cam.txt", cam_text(range_cam(extrinsics[view], k_test)).encode())
        _put(out / f"scan{number}/pair.txt", pair_text(pair_scores(r["depth"], k_test, extrinsics, n_sources)).encode())
        points, colours = surface_points(r["depth"], r["rgb"][0], k_test, extrinsics, point_spacing)
        _put(out / f"Points/stl/stl{number:03d}_total.ply", points_ply_bytes(points, colours))
    for split, numbers in (("train", train_scans), ("test", test_scans)):
        _put(out / f"lists/{split}.txt", "".join(f"scan{n}\n" for n in numbers).encode())
    return out


def default_mvs_dir(name: str = "default") -> Path:
    """The bundled procedural MVS dataset (:func:`write_mvs_dataset`'s defaults), generated into the
    cache folder on first use (``.../scenes/mvs-<name>-v<version>``)."""
    if name not in DEFAULT_DATASETS:
        raise InputError(name, f"unknown procedural MVS dataset (known: {', '.join(DEFAULT_DATASETS)})")
    final = cache_root() / f"mvs-{name}-v{MVS_GENERATOR_VERSION}"
    return build_once(final, lambda tmp: write_mvs_dataset(tmp, **DEFAULT_DATASETS[name]))


DEFAULT_DATASETS = {"default": {}}  # name -> options of write_mvs_dataset
