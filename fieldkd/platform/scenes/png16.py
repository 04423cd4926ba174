"""16-bit colour PNGs at full precision (Pillow reads them as 8-bit RGB).

A small decoder for non-interlaced 16-bit grey-alpha, RGB and RGBA PNGs:
zlib-inflate the IDAT stream and undo the per-row filters of the PNG
specification. None and Up are whole-row operations and Sub is a running
sum; Average and Paeth depend on the pixel to the left and run pixel by
pixel. The encoder writes unfiltered rows (for tests and generated data).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type -> channels


def header(path: Path) -> tuple[int, int] | None:
    """(bit depth, colour type) of a PNG file, None for anything else."""
    with open(path, "rb") as f:
        head = f.read(29)
    if len(head) < 29 or head[:8] != SIGNATURE or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


def is_16bit_colour(path: Path) -> bool:
    found = header(path)
    return found is not None and found[0] == 16 and found[1] in (2, 4, 6)


def _chunks(data: bytes):
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        yield kind, data[pos + 8:pos + 8 + length]
        pos += 12 + length


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def _unfilter(raw: np.ndarray, height: int, stride: int, bpp: int) -> np.ndarray:
    rows = raw.reshape(height, stride + 1)
    out = np.zeros((height, stride), dtype=np.int64)
    prior = np.zeros(stride, dtype=np.int64)
    for y in range(height):
        kind, line = rows[y, 0], rows[y, 1:].astype(np.int64)
        if kind == 0:
            cur = line
        elif kind == 1:
            cur = np.cumsum(line.reshape(-1, bpp), axis=0).reshape(-1) % 256
        elif kind == 2:
            cur = (line + prior) % 256
        elif kind in (3, 4):
            cur = line.copy()
            left = np.zeros(bpp, dtype=np.int64)
            up_left = np.zeros(bpp, dtype=np.int64)
            for x in range(0, stride, bpp):
                up = prior[x:x + bpp]
                guess = (left + up) // 2 if kind == 3 else _paeth(left, up, up_left)
                cur[x:x + bpp] = (line[x:x + bpp] + guess) % 256
                left, up_left = cur[x:x + bpp], up
        else:
            raise ValueError(f"unknown PNG filter type {kind} in row {y}")
        out[y], prior = cur, cur
    return out


def read(path: Path) -> np.ndarray:
    """(H, W, C) uint16 pixels of a 16-bit PNG; ValueError when it is not one this reads."""
    data = Path(path).read_bytes()
    if data[:8] != SIGNATURE:
        raise ValueError("not a PNG file")
    chunks = list(_chunks(data))
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    if depth != 16 or colour not in CHANNELS or interlace:
        raise ValueError(f"not a non-interlaced 16-bit PNG (depth {depth}, colour type {colour})")
    channels = CHANNELS[colour]
    stream = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    stride = width * channels * 2
    if len(stream) != height * (stride + 1):
        raise ValueError("PNG pixel data has the wrong length")
    pixels = _unfilter(np.frombuffer(stream, dtype=np.uint8), height, stride, channels * 2)
    pairs = pixels.reshape(height, width, channels, 2)
    return (pairs[..., 0] * 256 + pairs[..., 1]).astype(np.uint16)


def write(path: Path, pixels: np.ndarray) -> None:
    """(H, W, C) uint16 pixels (C = 1, 2, 3, 4) as a 16-bit PNG with unfiltered rows."""
    pixels = np.asarray(pixels, dtype=np.uint16)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    height, width, channels = pixels.shape
    colour = {v: k for k, v in CHANNELS.items()}[channels]
    rows = pixels.astype(">u2").reshape(height, -1).view(np.uint8)
    raw = np.concatenate([np.zeros((height, 1), dtype=np.uint8), rows], axis=1).tobytes()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 16, colour, 0, 0, 0)
    Path(path).write_bytes(SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
                           + chunk(b"IEND", b""))
