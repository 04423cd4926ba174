"""Combine loaded splits into a :class:`Scene`, resolving box and near/far.

Precedence for ``aabb``, ``near`` and ``far``: function argument, then the
key of that name in the transforms file, then :func:`bounds.derive_bounds`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import InputError
from .bounds import derive_bounds
from .meta import aabb_of, number
from .scene import Scene, SceneSplit

MESH_NAME = "mesh.ply"


def make_scene(root: Path, splits: dict[str, SceneSplit], background, meta: dict, meta_path: Path,
               aabb=None, near=None, far=None, half_size=None, extras=None) -> Scene:
    c2w = torch.cat([s.cameras.c2w for s in splits.values()])
    box, near, far = derive_bounds(
        c2w,
        aabb=aabb if aabb is not None else aabb_of(meta, meta_path),
        near=near if near is not None else number(meta, "near", meta_path),
        far=far if far is not None else number(meta, "far", meta_path),
        half_size=half_size,
    )
    if not 0 < near < far:
        raise InputError(meta_path, f"need 0 < near < far, got near={near}, far={far}")
    mesh = root / MESH_NAME
    return Scene(
        name=root.name,
        source=root,
        splits=splits,
        aabb=box,
        near=near,
        far=far,
        background=torch.as_tensor(background, dtype=torch.float32).reshape(3),
        mesh_path=mesh if mesh.is_file() else None,
        extras=extras or {},
    )
