"""Procedural datasets: render a named SDF scene and write it to disk.

``write_scene`` produces a dataset in any registered format plus ``mesh.ply``
(marching cubes of the analytic SDF, the ground-truth surface). Two kinds of
scenes:

- object scenes (:mod:`specs`): seen from orbit cameras, in the scene box
  [-BOUND, BOUND]^3; splits drawn from separate camera streams.
- room scenes (:mod:`indoor`): an interior in world units seen along one camera
  path (:mod:`trajectory`), numbered in path order; every ``test_every``-th
  frame is held out. The in-memory scene is normalised by the room's
  ``world_from_scene`` (kept in ``Scene.extras``). ``mesh.ply`` is in world
  units for formats that record that transform (monosdf), in scene units
  for the others.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import numpy as np
import torch
from skimage.measure import marching_cubes

from ..errors import InputError
from . import sdf
from .bounds import derive_bounds
from .cameras import Cameras, intrinsics_from_fov
from .indoor import ROOMS, Room
from .orbits import ELEVATION_DEG, RADIUS, object_cameras
from .ply import write_ply
from .registry import WRITERS, write_format
from .scene import Scene, SceneSplit
from .similarity import points_from_world, pose_from_world, similarity_parts
from .specs import BOUND, SCENES
from .trajectory import loop_poses
from .tracer import one_thread, render_views

GENERATOR_VERSION = 3  # bump when rendered output changes (invalidates caches); 3: monosdf splits.json "depth"
BLENDER_FOV = 0.6911112070083618  # camera_angle_x of the NeRF-synthetic scenes
CAMERA_RADIUS = RADIUS  # distance of the orbit cameras from the origin (option camera_radius)
ELEVATION_RANGE = ELEVATION_DEG  # their elevation band in degrees, (min, max) (option elevation_range)
TRACE_BOUND = BOUND + 0.05  # rays and the mesh grid cover a bit more than the scene box
# Closest orbit: every camera outside the scene box, whatever its direction (the box's half-diagonal).
MIN_CAMERA_RADIUS = math.sqrt(3.0) * TRACE_BOUND
MAX_CAMERA_RADIUS = 50.0  # depth PNGs store millimetres in 16 bits (65 m)
# Lens coefficients of the distorted variants (a phone's wide camera; a mild fisheye), see lens.PARAMS.
LENSES = {
    "pinhole": None,
    "opencv": (0.0578, -0.02, 0.0, 0.0, 0.001, -0.0005),
    "fisheye": (0.05, -0.01, 0.002, -0.0003),
}
ROOM_FOV = math.radians(70.0)  # horizontal field of view of the room cameras (a phone's, roughly)
ROOM_MAX_STEPS = 4096  # every ray of a room hits: let grazing rays converge
ROOM_MESH_PAD = 0.1  # world units the room's mesh grid reaches beyond the walls
UNIT_BOX = [[-1.0] * 3, [1.0] * 3]  # the normalised scene box of room scenes
WORLD_FORMATS = ("monosdf",)  # formats that record world_from_scene: their mesh.ply is in world units


def _unknown(name: str) -> InputError:
    return InputError(name, f"unknown procedural scene (known: {', '.join([*SCENES, *ROOMS])})")


def scene_spec(name: str) -> sdf.SceneSpec:
    if name not in SCENES:
        raise _unknown(name)
    return SCENES[name]()


def room_spec(name: str) -> Room:
    if name not in ROOMS:
        raise _unknown(name)
    return ROOMS[name]()


def orbit_band(camera_radius, elevation_range) -> tuple[float, tuple[float, float]]:
    """The checked orbit: radius in (MIN_CAMERA_RADIUS, MAX_CAMERA_RADIUS], elevations in degrees
    with -90 <= min <= max <= 90. Bad values raise :class:`InputError` naming the option."""
    try:
        radius = float(camera_radius)
    except (TypeError, ValueError):
        radius = float("nan")
    if not MIN_CAMERA_RADIUS < radius <= MAX_CAMERA_RADIUS:
        raise InputError("camera_radius", f"must be above {MIN_CAMERA_RADIUS:.3f} (cameras outside the "
                                          f"scene box) and at most {MAX_CAMERA_RADIUS:g}, got {camera_radius!r}")
    try:
        low, high = (float(e) for e in elevation_range)
    except (TypeError, ValueError):
        low = high = float("nan")
    if not -90.0 <= low <= high <= 90.0:
        raise InputError("elevation_range", "must be (min, max) degrees with -90 <= min <= max <= 90, "
                                            f"got {elevation_range!r}")
    return radius, (low, high)


def orbit_cameras(n_train=60, n_val=10, n_test=20, width=80, height=80,
                  camera_angle_x=BLENDER_FOV, seed=0, lens: str = "pinhole",
                  per_frame_intrinsics: bool = False, camera_radius: float = CAMERA_RADIUS,
                  elevation_range=ELEVATION_RANGE) -> dict[str, Cameras]:
    """Cameras per split on a sphere of ``camera_radius`` around the origin, looking at it, at
    elevations (degrees) within ``elevation_range`` (see :mod:`orbits`); empty splits omitted.

    ``lens``: a key of :data:`LENSES` (distorted variants); ``per_frame_intrinsics``: focal
    lengths vary by up to 10 % and the principal point by up to a pixel from frame to frame.
    """
    if lens not in LENSES:
        raise InputError("lens", f"unknown lens {lens!r} (known: {', '.join(LENSES)})")
    radius, band = orbit_band(camera_radius, elevation_range)
    fx, fy, cx, cy = intrinsics_from_fov(camera_angle_x, width, height)
    poses = object_cameras({"train": n_train, "val": n_val, "test": n_test}, radius, band, seed=seed)
    out = {}
    for split, c2w in poses.items():
        if len(c2w):
            n = len(c2w)
            full = lambda v: torch.full((n,), float(v))  # noqa: E731
            k = [full(fx), full(fy), full(cx), full(cy)]
            if per_frame_intrinsics:
                wave = torch.sin(torch.arange(n, dtype=torch.float32) * 1.3)
                k = [k[0] * (1 + 0.1 * wave), k[1] * (1 + 0.1 * wave), k[2] + wave, k[3] - wave]
            params = None if LENSES[lens] is None else torch.tensor(LENSES[lens]).expand(n, -1).clone()
            out[split] = Cameras(c2w, *k, width, height, model=lens, distortion=params)
    return out


def render_scene(name: str = "default", width=80, height=80, n_train=60, n_val=10, n_test=20,
                 camera_angle_x=BLENDER_FOV, seed=0, background=(1.0, 1.0, 1.0),
                 progress: bool = False, lens: str = "pinhole", per_frame_intrinsics: bool = False,
                 camera_radius: float = CAMERA_RADIUS, elevation_range=ELEVATION_RANGE) -> Scene:
    """Render the named scene in memory; images composited on ``background``; the images of a
    distorted ``lens`` are rendered through it; cameras at ``camera_radius`` with elevations in
    ``elevation_range`` degrees (see :func:`orbit_cameras`). The box is the scene box whatever the
    orbit; near and far follow the cameras (:func:`derive_bounds`: distance -/+ the box's half-diagonal)."""
    spec = scene_spec(name)
    bg = torch.tensor(background, dtype=torch.float32)
    splits = {}
    for split, cams in orbit_cameras(n_train, n_val, n_test, width, height, camera_angle_x, seed,
                                     lens, per_frame_intrinsics, camera_radius, elevation_range).items():
        r = render_views(spec, cams, TRACE_BOUND, progress=progress, desc=f"{name} {split}")
        splits[split] = SceneSplit(
            images=r["rgb"] + bg * (1 - r["alpha"][..., None]),
            cameras=cams,
            frame_paths=[f"{split}/{i}" for i in range(len(cams))],
            alphas=r["alpha"], depths=r["depth"], normals=r["normal"],
        )
    box = torch.tensor([[-BOUND] * 3, [BOUND] * 3])
    all_c2w = torch.cat([s.cameras.c2w for s in splits.values()])
    aabb, near, far = derive_bounds(all_c2w, aabb=box)
    return Scene(name=name, source=Path(f"procedural:{name}"), splits=splits, aabb=aabb,
                 near=near, far=far, background=bg, extras={"seed": seed})


@torch.no_grad()
def _mesh_on_grid(distance_fn, low, high, counts, chunk: int = 1 << 20):
    """Marching cubes of the zero set of ``distance_fn`` on a regular grid from ``low`` to ``high``
    with ``counts`` samples per axis. Returns (vertices (V, 3) float32, faces (F, 3) int32)."""
    axes = [torch.linspace(lo, hi, n) for lo, hi, n in zip(low, high, counts)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)
    with one_thread():
        values = torch.cat([distance_fn(p) for p in grid.split(chunk)])
    volume = values.reshape(*counts).numpy()
    spacing = tuple((hi - lo) / (n - 1) for lo, hi, n in zip(low, high, counts))
    verts, faces, _, _ = marching_cubes(volume, level=0.0, spacing=spacing)
    return (verts + np.asarray(low)).astype(np.float32), faces.astype(np.int32)


def extract_mesh(spec: sdf.SceneSpec, resolution: int = 128, chunk: int = 1 << 20):
    """Marching cubes of the SDF zero set on a resolution^3 grid over the trace box.

    Returns (vertices (V, 3) float32 in world units, faces (F, 3) int32).
    """
    return _mesh_on_grid(lambda p: sdf.union_distance(spec, p), (-TRACE_BOUND,) * 3, (TRACE_BOUND,) * 3,
                         (resolution,) * 3, chunk)


def room_mesh(room: Room, resolution: int = 128, chunk: int = 1 << 20):
    """Marching cubes of a room's SDF, ``resolution`` samples along its longest side, in world units."""
    low = np.asarray(room.low, dtype=np.float64) - ROOM_MESH_PAD
    extent = np.asarray(room.high, dtype=np.float64) + ROOM_MESH_PAD - low
    step = float(extent.max()) / (resolution - 1)
    counts = [int(math.ceil(e / step - 1e-9)) + 1 for e in extent]
    high = [lo + step * (n - 1) for lo, n in zip(low.tolist(), counts)]
    return _mesh_on_grid(lambda p: sdf.union_distance(room.primitives, p), low.tolist(), high, counts, chunk)


def room_splits(n_frames: int, test_every: int = 8) -> dict[str, list[int]]:
    """Frame numbers per split in path order: every ``test_every``-th frame (from 0) is test,
    every other test frame is also val, the rest train."""
    if n_frames < 2 or test_every < 2:
        raise InputError("room scene", f"need n_frames >= 2 and test_every >= 2, got {n_frames}, {test_every}")
    test = list(range(0, n_frames, test_every))
    held = set(test)
    return {"train": [i for i in range(n_frames) if i not in held], "val": test[::2], "test": test}


def render_room(name: str = "indoor", width: int = 64, height: int = 48, n_frames: int = 100,
                test_every: int = 8, camera_angle_x: float = ROOM_FOV, background=(1.0, 1.0, 1.0),
                progress: bool = False) -> Scene:
    """Render a room along its camera path; the scene is in normalised units (see module docstring)."""
    room = room_spec(name)
    c2w_world = loop_poses(room.path, n_frames)
    fx, fy, cx, cy = intrinsics_from_fov(camera_angle_x, width, height)
    full = lambda v: torch.full((n_frames,), float(v))  # noqa: E731
    r = render_views(room.primitives, Cameras(c2w_world, full(fx), full(fy), full(cx), full(cy), width, height),
                     room.trace_box(), progress=progress, desc=name, light=room.light,
                     max_steps=ROOM_MAX_STEPS)
    world_from_scene = room.world_from_scene
    scale, rotation, _ = similarity_parts(world_from_scene)
    c2w = torch.from_numpy(pose_from_world(c2w_world.double().numpy(), world_from_scene)).float()
    bg = torch.tensor(background, dtype=torch.float32)
    frames = SceneSplit(
        images=r["rgb"] + bg * (1 - r["alpha"][..., None]),
        cameras=Cameras(c2w, full(fx), full(fy), full(cx), full(cy), width, height),
        frame_paths=[f"frame/{i}" for i in range(n_frames)],
        alphas=r["alpha"], depths=r["depth"] / scale,
        normals=r["normal"] @ torch.from_numpy(rotation).float(),  # rows: Q^T n
    )
    ids = room_splits(n_frames, test_every)
    aabb, near, far = derive_bounds(c2w, aabb=UNIT_BOX)
    return Scene(name=name, source=Path(f"procedural:{name}"),
                 splits={split: frames.subset(views) for split, views in ids.items()},
                 aabb=aabb, near=near, far=far, background=bg,
                 extras={"world_from_scene": torch.from_numpy(world_from_scene), "frame_ids": ids})


def _options(render, name: str, options: dict) -> dict:
    known = set(inspect.signature(render).parameters) - {"name", "progress", "background"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise InputError(name, f"unknown option {unknown[0]!r} for this scene (known: {', '.join(sorted(known))})")
    return options


def write_scene(spec_name: str, out_dir, fmt: str = "blender", mesh_resolution: int = 128,
                progress: bool = True, center_crop: str = "no_crop", **options) -> Path:
    """Render ``spec_name`` and write it in format ``fmt`` plus ``mesh.ply`` into ``out_dir``.

    ``options`` go to :func:`render_scene` for object scenes (width=80, height=80,
    n_train=60, n_val=10, n_test=20, camera_angle_x, seed, camera_radius=4,
    elevation_range=(10, 60) degrees) or to
    :func:`render_room` for room scenes (width=64, height=48, n_frames=100,
    test_every=8, camera_angle_x). ``out_dir`` must be absent or empty (nothing
    is ever overwritten). ``progress`` shows a tqdm bar while rendering. Object scenes
    also take ``lens`` (pinhole, opencv, fisheye) and ``per_frame_intrinsics``; the
    monosdf format takes ``center_crop`` (cameras.npz then holds the camera of the
    uncropped image, as MonoSDF's DTU / TNT / Replica data do; images must be 384x384).
    """
    out = Path(out_dir)
    if fmt not in WRITERS:
        raise InputError(out, f"unknown scene format {fmt!r} (known: {', '.join(WRITERS)})")
    if center_crop != "no_crop" and fmt != "monosdf":
        raise InputError(out, f"center_crop is a monosdf option, not one of format {fmt}")
    if options.get("lens", "pinhole") != "pinhole" and fmt != "nerfstudio":
        raise InputError(out, f"format {fmt} has no lens model: write lens={options['lens']} as nerfstudio")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(out, "output directory exists and is not empty")
    if spec_name in ROOMS:
        scene = render_room(spec_name, progress=progress, **_options(render_room, spec_name, options))
        verts, faces = room_mesh(room_spec(spec_name), mesh_resolution)
        if fmt not in WORLD_FORMATS:
            verts = points_from_world(verts, scene.extras["world_from_scene"].numpy())
    else:
        scene = render_scene(spec_name, progress=progress, **_options(render_scene, spec_name, options))
        verts, faces = extract_mesh(scene_spec(spec_name), mesh_resolution)
    write_format(fmt, scene, out, **({"center_crop": center_crop} if center_crop != "no_crop" else {}))
    write_ply(out / "mesh.ply", verts, faces)
    return out
