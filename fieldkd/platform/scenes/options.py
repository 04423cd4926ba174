"""Reading options that the ``scene.*`` config keys set, shared by every reader."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from ..errors import InputError

MISSING_FRAMES = ("skip", "error")
CENTER_CROPS = ("no_crop", "center_crop_for_dtu", "center_crop_for_replica", "center_crop_for_tnt")


@dataclass(frozen=True)
class ReadOptions:
    """``missing_frames``: skip (with a warning) or refuse frames whose image file is missing.
    ``center_crop``: MonoSDF's ``center_crop_type`` (see :mod:`monosdf`).
    ``depth_scale``: scene units per stored depth value; None: the file's own
    (``depth_unit_scale_factor``) or millimetres."""

    missing_frames: str = "skip"
    center_crop: str = "no_crop"
    depth_scale: float | None = None

    def __post_init__(self):
        if self.missing_frames not in MISSING_FRAMES:
            raise InputError("scene.missing_frames", f"must be one of {', '.join(MISSING_FRAMES)}, "
                                                     f"got {self.missing_frames!r}")
        if self.center_crop not in CENTER_CROPS:
            raise InputError("scene.center_crop", f"must be one of {', '.join(CENTER_CROPS)}, "
                                                  f"got {self.center_crop!r}")
        scale = self.depth_scale
        if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0):
            raise InputError("scene.depth_scale", f"must be a positive number, got {scale!r}")


def warn(message: str) -> None:
    """One warning line on stderr (the CLI's style)."""
    print(f"fieldkd: warning: {message}", file=sys.stderr)
