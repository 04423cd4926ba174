"""What reading one dataset may do: leave its folder, decode how many pixels and bytes.

Readers do not take these limits as arguments: :func:`load_scene` sets them for
the duration of one read (``with reading(limits): ...``) and the checks read
them from there. So a reader is limited as soon as it resolves file names with
:func:`paths.inside` and reads files with :mod:`images` and :mod:`arrays`.

Bytes are counted as the files declare them, before anything is decoded: an
image's width x height x bytes per pixel of its stored mode (8-bit RGB = 3), an
array's size in its ``.npy`` header or its zip directory entry.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from ..errors import InputError

MAX_PIXELS = 64_000_000  # per image: 8000 x 8000, above any camera's full frame
# A fixed number, not a share of RAM, so a config means the same on every node that loads it. It holds
# the largest common benchmark scene at full resolution (mip-NeRF 360 bicycle: 194 x 4946 x 3286 RGB,
# about 9.5 GB), and the float32 copy the scene keeps is 4 to 5 times the 8-bit bytes divided by downscale^2.
MAX_TOTAL_BYTES = 16 * 2**30


@dataclass(frozen=True)
class ReadLimits:
    allow_outside_paths: bool = False  # scene.allow_outside_paths
    max_pixels: int = MAX_PIXELS  # scene.max_pixels, per image
    max_total_bytes: int = MAX_TOTAL_BYTES  # scene.max_total_bytes, for all files of one scene

    @classmethod
    def from_config(cls, scene_cfg: dict) -> "ReadLimits":
        """The limits a ``scene`` config gives (missing keys: the defaults); InputError naming a bad key."""
        flag = scene_cfg.get("allow_outside_paths", False)
        if not isinstance(flag, bool):
            raise InputError("scene.allow_outside_paths", f"must be true or false, got {flag!r}")
        sizes = {}
        for key, default in (("max_pixels", MAX_PIXELS), ("max_total_bytes", MAX_TOTAL_BYTES)):
            value = scene_cfg.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"scene.{key}", f"must be a positive integer, got {value!r}")
            sizes[key] = value
        return cls(allow_outside_paths=flag, **sizes)


@dataclass
class _Budget:
    limits: ReadLimits
    used: int = 0  # bytes charged so far


_ACTIVE: ContextVar[_Budget | None] = ContextVar("fieldkd_scene_read", default=None)


@contextmanager
def reading(limits: ReadLimits | None = None):
    """Apply ``limits`` (default: :class:`ReadLimits`) to the reads inside; bytes count from zero."""
    token = _ACTIVE.set(_Budget(limits or ReadLimits()))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def current() -> ReadLimits:
    budget = _ACTIVE.get()
    return budget.limits if budget is not None else ReadLimits()


def charge(path, nbytes: int, what: str) -> None:
    """Count ``nbytes`` that a file declares, before decoding it; InputError(path) past the scene's cap.

    Outside :func:`reading` each file is checked on its own against the default cap.
    """
    budget = _ACTIVE.get() or _Budget(ReadLimits())
    cap = budget.limits.max_total_bytes
    if budget.used + nbytes > cap:
        before = f" after {budget.used:,} bytes of other files" if budget.used else ""
        raise InputError(path, f"{what} declares {nbytes:,} bytes decoded{before}, past "
                               f"scene.max_total_bytes={cap:,} (raise it to read this scene)")
    budget.used += nbytes


def check_image(path, width: int, height: int, bytes_per_pixel: int, what: str) -> None:
    """An image's declared size, from its header: within scene.max_pixels, then charged."""
    cap = current().max_pixels
    if width * height > cap:
        raise InputError(path, f"{what} declares {width}x{height} = {width * height:,} pixels, over "
                               f"scene.max_pixels={cap:,} (a decompression bomb, or raise the limit)")
    charge(path, width * height * bytes_per_pixel, what)
