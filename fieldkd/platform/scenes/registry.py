"""Scene formats by name. Adding a format: one module with ``read`` / ``write``, one line each here."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import InputError
from . import blender, monosdf, nerfstudio, neus
from .limits import ReadLimits, reading
from .options import ReadOptions
from .scene import Scene

READERS: dict[str, Callable[..., Scene]] = {
    "blender": blender.read,
    "nerfstudio": nerfstudio.read,
    "monosdf": monosdf.read,
    "neus": neus.read,
}
WRITERS: dict[str, Callable[..., Path]] = {
    "blender": blender.write,
    "nerfstudio": nerfstudio.write,
    "monosdf": monosdf.write,
    "neus": neus.write,
}
FORMATS = tuple(READERS)


def load_scene(fmt: str, path, background=(1.0, 1.0, 1.0), downscale: int = 1,
               aabb=None, near=None, far=None, limits: ReadLimits | None = None, **options) -> Scene:
    """Read a scene directory in format ``fmt``.

    Images are composited on ``background`` (RGB in [0, 1]) and box-downscaled
    by the integer ``downscale``. ``aabb`` ((2, 3) min/max corners), ``near``
    and ``far`` override the file and the rule in :mod:`bounds`. ``limits``
    (default :class:`ReadLimits`) bounds the files and bytes the read may use; ``options``
    are the fields of :class:`options.ReadOptions` (missing_frames, center_crop,
    depth_scale).
    """
    if fmt not in READERS:
        raise InputError(path, f"unknown scene format {fmt!r} (known: {', '.join(FORMATS)})")
    if isinstance(downscale, bool) or not isinstance(downscale, int) or downscale < 1:
        raise InputError(path, f"downscale must be an integer >= 1, got {downscale!r}")
    bg = tuple(float(c) for c in background)
    if len(bg) != 3 or not all(0.0 <= c <= 1.0 for c in bg):
        raise InputError(path, f"background must be 3 values in [0, 1], got {background!r}")
    with reading(limits):
        return READERS[fmt](path, background=bg, downscale=downscale, aabb=aabb, near=near, far=far,
                            options=ReadOptions(**options))


def write_format(fmt: str, scene: Scene, out_dir, **options) -> Path:
    if fmt not in WRITERS:
        raise InputError(out_dir, f"unknown scene format {fmt!r} (known: {', '.join(WRITERS)})")
    return WRITERS[fmt](scene, out_dir, **options)
