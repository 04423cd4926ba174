"""MVSNet's camera and view-pair files (``{id:08d}_cam.txt``, ``pair.txt``).

A camera file::

    extrinsic
    4 x 4 world -> camera matrix (OpenCV axes: x right, y down, z forward)

    intrinsic
    3 x 3 matrix K

    DEPTH_MIN DEPTH_INTERVAL [DEPTH_NUM DEPTH_MAX]

With four values the interval is (max - min) / num (the file's own interval is ignored); with two,
the range holds ``depth_num`` (default :data:`DEFAULT_DEPTH_NUM`, MVSNet's 192) intervals.

``pair.txt``: the number of views, then per view a line with its id and a line
``N id score id score ...`` listing its best source views first.

Pixel centres are at integer coordinates (OpenCV): resizing an image by ``s`` maps ``c`` to
``s (c + 0.5) - 0.5`` (:func:`resized_intrinsics`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import write_text
from ..errors import InputError
from . import limits

DEFAULT_DEPTH_NUM = 192  # MVSNet's depth planes: a two-value range line spans this many intervals
MAX_TEXT_BYTES = 1 << 20  # a camera or pair file is a few hundred bytes per view


@dataclass(frozen=True)
class MVSCamera:
    extrinsic: np.ndarray  # (4, 4) float64, world -> camera
    intrinsic: np.ndarray  # (3, 3) float64
    depth_min: float
    depth_interval: float
    depth_num: int | None = None  # the file's plane count (four-value range line), else None

    def depth_max(self, depth_num: int = DEFAULT_DEPTH_NUM) -> float:
        """The far end of the range: the file's own with four values, else min + num * interval."""
        return self.depth_min + (self.depth_num or depth_num) * self.depth_interval


def read_text(path: Path, what: str, referrer: str = "") -> str:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, f"{what} not found" + (f" (referenced by {referrer})" if referrer else ""))
    try:
        size = os.path.getsize(path)
        if size > MAX_TEXT_BYTES:
            raise InputError(path, f"{what} is {size:,} bytes, more than a {what} holds ({MAX_TEXT_BYTES:,})")
        limits.charge(path, size, what)
        return path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(path, f"unreadable {what}: {getattr(e, 'strerror', None) or e}") from None


def read_cam(path: Path, referrer: str = "") -> MVSCamera:
    path = Path(path)
    return parse_cam(read_text(path, "camera file", referrer), path)


def parse_cam(text: str, path) -> MVSCamera:
    words = text.split()
    lower = [w.lower() for w in words]
    if "extrinsic" not in lower or "intrinsic" not in lower:
        raise InputError(path, "camera file needs an 'extrinsic' and an 'intrinsic' block")
    e_at, k_at = lower.index("extrinsic"), lower.index("intrinsic")
    if k_at != e_at + 17:
        raise InputError(path, f"camera file: 'extrinsic' must be followed by 16 numbers, got {k_at - e_at - 1}")
    ext = _numbers(words[e_at + 1:k_at], path, "extrinsic").reshape(4, 4)
    rest = _numbers(words[k_at + 1:], path, "intrinsic and depth range")
    if len(rest) not in (9 + 2, 9 + 4):
        raise InputError(path, f"camera file: 'intrinsic' must be followed by 9 numbers and a depth line of "
                               f"2 or 4 values (DEPTH_MIN DEPTH_INTERVAL [DEPTH_NUM DEPTH_MAX]), got "
                               f"{len(rest)} numbers")
    intr, depth = rest[:9].reshape(3, 3), rest[9:]
    if not np.allclose(ext[3], [0, 0, 0, 1], atol=1e-6):
        raise InputError(path, f"extrinsic's last row must be 0 0 0 1, got {ext[3].tolist()}")
    if intr[0, 0] <= 0 or intr[1, 1] <= 0 or not np.allclose(intr[2], [0, 0, 1], atol=1e-6):
        raise InputError(path, "intrinsic must have positive focal lengths and a last row 0 0 1")
    if len(depth) == 2:
        dmin, interval, num = float(depth[0]), float(depth[1]), None
        if interval <= 0:
            raise InputError(path, f"depth range: DEPTH_INTERVAL must be > 0, got {interval:g}")
    else:
        dmin, num_f, dmax = float(depth[0]), float(depth[2]), float(depth[3])
        if num_f < 1 or num_f != math.floor(num_f):
            raise InputError(path, f"depth range: DEPTH_NUM must be a whole number >= 1, got {num_f:g}")
        if dmin >= dmax:
            raise InputError(path, f"depth range: DEPTH_MIN {dmin:g} must be below DEPTH_MAX {dmax:g}")
        num = int(num_f)
        interval = (dmax - dmin) / num
    if dmin < 0:
        raise InputError(path, f"depth range: DEPTH_MIN must be >= 0, got {dmin:g}")
    return MVSCamera(ext, intr, dmin, interval, num)


def _numbers(words: list[str], path, what: str) -> np.ndarray:
    try:
        values = np.array([float(w) for w in words], dtype=np.float64)
    except ValueError as e:
        raise InputError(path, f"camera file: {what} holds a non-number ({e})") from None
    if not np.isfinite(values).all():
        raise InputError(path, f"camera file: {what} holds a non-finite value")
    return values


def cam_text(cam: MVSCamera) -> str:
    """The camera file of ``cam``: a four-value range line when it has a plane count, else two."""
    def rows(m):
        return "\n".join(" ".join(f"{v:.10g}" for v in row) for row in m)
    if cam.depth_num is None:
        depth = f"{cam.depth_min:.10g} {cam.depth_interval:.10g}"
    else:
        depth = f"{cam.depth_min:.10g} {cam.depth_interval:.10g} {cam.depth_num} {cam.depth_max():.10g}"
    return f"extrinsic\n{rows(cam.extrinsic)}\n\nintrinsic\n{rows(cam.intrinsic)}\n\n{depth}\n"


def write_cam(path: Path, cam: MVSCamera) -> None:
    write_text(path, cam_text(cam))


Pairs = dict[int, list[tuple[int, float]]]  # view id -> [(source id, score), ...], best first


def read_pair(path: Path, referrer: str = "") -> Pairs:
    path = Path(path)
    return parse_pair(read_text(path, "pair file", referrer), path)


def parse_pair(text: str, path) -> Pairs:
    lines = [line.split() for line in text.splitlines() if line.strip()]
    try:
        count = int(lines[0][0]) if lines and len(lines[0]) == 1 else -1
        if count < 0 or len(lines) != 1 + 2 * count:
            raise ValueError(f"expected a view count, then two lines per view; got {len(lines)} lines")
        pairs: Pairs = {}
        for k in range(count):
            head, row = lines[1 + 2 * k], lines[2 + 2 * k]
            if len(head) != 1:
                raise ValueError(f"view {k}: the id line must hold one number, got {' '.join(head)[:40]!r}")
            view, n = int(head[0]), int(row[0])
            if view in pairs:
                raise ValueError(f"view {view} is listed twice")
            if n < 0 or len(row) != 1 + 2 * n:
                raise ValueError(f"view {view}: source line must be 'N id score ...' with N pairs")
            sources = [(int(row[1 + 2 * i]), float(row[2 + 2 * i])) for i in range(n)]
            if not all(math.isfinite(s) for _, s in sources):
                raise ValueError(f"view {view}: a score is not finite")
            pairs[view] = sources
    except (ValueError, IndexError) as e:
        raise InputError(path, f"malformed pair file: {e}") from None
    for view, sources in pairs.items():
        for src, _ in sources:
            if src not in pairs:
                raise InputError(path, f"view {view} pairs with view {src}, which the file does not list")
    return pairs


def pair_text(pairs: Pairs) -> str:
    lines = [str(len(pairs))]
    for view, sources in pairs.items():
        lines.append(str(view))
        lines.append(" ".join([str(len(sources))] + [f"{s} {score:.6g}" for s, score in sources]))
    return "\n".join(lines) + "\n"


def write_pair(path: Path, pairs: Pairs) -> None:
    write_text(path, pair_text(pairs))


def resized_intrinsics(intrinsic: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """K of an image resized by ``sx`` across and ``sy`` down (pixel centres at integers)."""
    k = np.array(intrinsic, dtype=np.float64)
    k[0, :] *= sx
    k[1, :] *= sy
    k[0, 2] += 0.5 * sx - 0.5
    k[1, 2] += 0.5 * sy - 0.5
    return k


def scaled_intrinsics(intrinsic: np.ndarray, scale: float) -> np.ndarray:
    """K multiplied by ``scale`` on its first two rows, as MVSNet relates its camera files to its
    images (the quarter-size training cameras were made by plain division)."""
    k = np.array(intrinsic, dtype=np.float64)
    k[:2] *= scale
    return k
