"""EXR depth maps (as Blender, nerfstudio's tools and many renderers write them), through OpenEXR.

A depth EXR holds one float channel, named ``Z``, ``depth``, ``D`` or ``Y`` by
most tools, or an RGB(A) image whose channels repeat the depth (Blender's
compositor output): the first of these found is the depth. The header is read
first, so the image's declared size meets the scene's limits before any pixel
is decoded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from . import limits
from ..atomic import atomic_path

DEPTH_CHANNELS = ("Z", "depth", "D", "Y", "R")


def read_depth(path: Path, what: str = "depth map") -> np.ndarray:
    """(H, W) float32 values of the file's depth channel."""
    import OpenEXR

    try:
        with OpenEXR.File(str(path), header_only=True) as head:
            low, high = head.header()["dataWindow"]
        width, height = int(high[0] - low[0] + 1), int(high[1] - low[1] + 1)
        limits.check_image(path, width, height, 4, what)
        with OpenEXR.File(str(path), separate_channels=True) as f:  # its pixels live while it is open
            channels = f.channels()
            name = next((c for c in DEPTH_CHANNELS if c in channels), None)
            found = sorted(channels)
            values = None if name is None else np.array(channels[name].pixels, dtype=np.float32)
    except InputError:
        raise
    except Exception as e:  # OpenEXR raises plain exceptions for damaged files
        raise InputError(path, f"unreadable {what}: {' '.join(str(e).split())}") from None
    if values is None:
        raise InputError(path, f"{what} has no depth channel (looked for {', '.join(DEPTH_CHANNELS)}; "
                               f"found {', '.join(found) or 'none'})")
    return values


def write_depth(path: Path, depth: np.ndarray) -> None:
    """A float32 ``Z`` channel, ZIP-compressed, written atomically."""
    import OpenEXR

    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with atomic_path(path) as tmp, OpenEXR.File(header, {"Z": np.ascontiguousarray(depth, np.float32)}) as f:
        f.write(str(tmp))
