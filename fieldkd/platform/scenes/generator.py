"""Procedural datasets: render a named SDF scene from orbit cameras and write it to disk.

``write_scene`` produces a dataset in any registered format plus ``mesh.ply``
(marching cubes of the analytic SDF, the ground-truth surface).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from skimage.measure import marching_cubes

from ..errors import InputError
from . import sdf
from .bounds import derive_bounds
from .cameras import Cameras, intrinsics_from_fov
from .orbits import object_cameras
from .ply import write_ply
from .registry import WRITERS, write_format
from .scene import Scene, SceneSplit
from .specs import BOUND, SCENES
from .tracer import one_thread, render_views

GENERATOR_VERSION = 1  # bump when rendered output changes (invalidates caches)
BLENDER_FOV = 0.6911112070083618  # camera_angle_x of the NeRF-synthetic scenes
CAMERA_RADIUS = 4.0
TRACE_BOUND = BOUND + 0.05  # rays and the mesh grid cover a bit more than the scene box


def scene_spec(name: str) -> sdf.SceneSpec:
    if name not in SCENES:
        raise InputError(name, f"unknown procedural scene (known: {', '.join(SCENES)})")
    return SCENES[name]()


def orbit_cameras(n_train=60, n_val=10, n_test=20, width=80, height=80,
                  camera_angle_x=BLENDER_FOV, seed=0) -> dict[str, Cameras]:
    """Cameras per split at radius 4 around the origin (see :mod:`orbits`); empty splits omitted."""
    fx, fy, cx, cy = intrinsics_from_fov(camera_angle_x, width, height)
    poses = object_cameras({"train": n_train, "val": n_val, "test": n_test}, CAMERA_RADIUS, seed=seed)
    out = {}
    for split, c2w in poses.items():
        if len(c2w):
            full = lambda v: torch.full((len(c2w),), float(v))  # noqa: E731
            out[split] = Cameras(c2w, full(fx), full(fy), full(cx), full(cy), width, height)
    return out


def render_scene(name: str = "default", width=80, height=80, n_train=60, n_val=10, n_test=20,
                 camera_angle_x=BLENDER_FOV, seed=0, background=(1.0, 1.0, 1.0),
                 progress: bool = False) -> Scene:
    """Render the named scene in memory; images composited on ``background``."""
    spec = scene_spec(name)
    bg = torch.tensor(background, dtype=torch.float32)
    splits = {}
    for split, cams in orbit_cameras(n_train, n_val, n_test, width, height, camera_angle_x, seed).items():
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
def extract_mesh(spec: sdf.SceneSpec, resolution: int = 128, chunk: int = 1 << 20):
    """Marching cubes of the SDF zero set on a resolution^3 grid over the trace box.

    Returns (vertices (V, 3) float32 in world units, faces (F, 3) int32).
    """
    axis = torch.linspace(-TRACE_BOUND, TRACE_BOUND, resolution)
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
    with one_thread():
        values = torch.cat([sdf.union_distance(spec, p) for p in grid.split(chunk)])
    volume = values.reshape(resolution, resolution, resolution).numpy()
    spacing = 2 * TRACE_BOUND / (resolution - 1)
    verts, faces, _, _ = marching_cubes(volume, level=0.0, spacing=(spacing,) * 3)
    return (verts - TRACE_BOUND).astype(np.float32), faces.astype(np.int32)


def write_scene(spec_name: str, out_dir, fmt: str = "blender", width: int = 80, height: int = 80,
                n_train: int = 60, n_val: int = 10, n_test: int = 20,
                camera_angle_x: float = BLENDER_FOV, seed: int = 0,
                mesh_resolution: int = 128, progress: bool = True) -> Path:
    """Render ``spec_name`` and write it in format ``fmt`` plus ``mesh.ply`` into ``out_dir``.

    ``out_dir`` must be absent or empty (nothing is ever overwritten). ``progress``
    shows a tqdm bar per split while rendering.
    """
    out = Path(out_dir)
    if fmt not in WRITERS:
        raise InputError(out, f"unknown scene format {fmt!r} (known: {', '.join(WRITERS)})")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(out, "output directory exists and is not empty")
    scene = render_scene(spec_name, width, height, n_train, n_val, n_test, camera_angle_x, seed,
                         progress=progress)
    write_format(fmt, scene, out)
    write_ply(out / "mesh.ply", *extract_mesh(scene_spec(spec_name), mesh_resolution))
    return out
