"""PFM images (Portable Float Map): the depth maps of MVSNet-format datasets.

A text header of three lines, ``PF`` (3 channels) or ``Pf`` (1 channel), ``WIDTH HEIGHT`` and a
scale whose sign gives the byte order (negative: little-endian), then float32 rows from the
bottom of the image up. Arrays here are top-down, as every other image: (H, W) or (H, W, 3).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..atomic import atomic_open
from ..errors import InputError
from . import limits

MAX_HEADER = 256  # bytes: three short lines


def read_pfm(path: Path, what: str = "PFM depth map", referrer: str = "") -> np.ndarray:
    """(H, W) or (H, W, 3) float32, top row first; InputError(path) when it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, f"{what} not found" + (f" (referenced by {referrer})" if referrer else ""))
    try:
        with open(path, "rb") as f:
            head = f.read(MAX_HEADER)
            channels, width, height, little, start = _header(head)
            limits.check_image(path, width, height, 4 * channels, what)
            f.seek(start)
            data = f.read(width * height * channels * 4)
    except OSError as e:
        raise InputError(path, f"unreadable {what}: {e.strerror or e}") from None
    except ValueError as e:
        raise InputError(path, f"unreadable {what}: {e}") from None
    if len(data) != width * height * channels * 4:
        raise InputError(path, f"unreadable {what}: truncated ({len(data):,} of "
                               f"{width * height * channels * 4:,} bytes of pixels)")
    values = np.frombuffer(data, dtype="<f4" if little else ">f4").astype(np.float32)
    shape = (height, width, 3) if channels == 3 else (height, width)
    return np.ascontiguousarray(values.reshape(shape)[::-1])


def _header(head: bytes) -> tuple[int, int, int, bool, int]:
    """(channels, width, height, little-endian, offset of the pixels) of the header at ``head``."""
    lines, offset = [], 0
    for _ in range(3):
        end = head.find(b"\n", offset)
        if end < 0:
            raise ValueError("header is not three lines")
        lines.append(head[offset:end].decode("ascii", "replace").strip())
        offset = end + 1
    if lines[0] not in ("PF", "Pf"):
        raise ValueError(f"magic {lines[0][:8]!r} is neither 'PF' nor 'Pf'")
    size = lines[1].split()
    if len(size) != 2 or not all(s.isdigit() for s in size):
        raise ValueError(f"size line {lines[1][:40]!r} is not 'WIDTH HEIGHT'")
    width, height = int(size[0]), int(size[1])
    scale = float(lines[2])
    if width < 1 or height < 1 or not np.isfinite(scale) or scale == 0:
        raise ValueError(f"bad size {width}x{height} or scale {lines[2][:40]!r}")
    return 3 if lines[0] == "PF" else 1, width, height, scale < 0, offset


def write_pfm(path: Path, values: np.ndarray, little_endian: bool = True) -> None:
    """Write (H, W), (H, W, 1) or (H, W, 3) values (top row first) as a PFM file (atomically)."""
    with atomic_open(path) as f:
        f.write(pfm_bytes(values, little_endian))


def pfm_bytes(values: np.ndarray, little_endian: bool = True) -> bytes:
    """The PFM file of (H, W), (H, W, 1) or (H, W, 3) values, top row first."""
    values = np.asarray(values, dtype=np.float32)
    if values.ndim == 3 and values.shape[2] == 1:
        values = values[..., 0]
    if values.ndim not in (2, 3) or (values.ndim == 3 and values.shape[2] != 3):
        raise ValueError(f"PFM holds (H, W) or (H, W, 3) values, got shape {values.shape}")
    height, width = values.shape[:2]
    magic = "PF" if values.ndim == 3 else "Pf"
    header = f"{magic}\n{width} {height}\n{-1.0 if little_endian else 1.0}\n".encode("ascii")
    return header + np.ascontiguousarray(values[::-1]).astype("<f4" if little_endian else ">f4").tobytes()
