"""NumPy files of a dataset (``.npy``, ``.npz``), read within the scene's byte budget.

Sizes are checked before anything is decompressed or allocated: an ``.npz``
member's uncompressed size from the zip directory (zipfile never inflates past
it), then the array size in the ``.npy`` header, which must fit in that many
bytes. Arrays of Python objects are refused: loading never unpickles.
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from ..errors import InputError
from . import limits

# Everything a damaged or hostile archive makes zipfile or numpy raise (RuntimeError: encrypted member).
_UNREADABLE = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError)


def read_npy(path: Path, what: str) -> np.ndarray:
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            limits.charge(path, size, what)
            return _array(f, size, path, what)
    except _UNREADABLE as e:
        raise InputError(path, f"unreadable {what}: {e}") from None


def read_npz(path: Path, what: str) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` by name (the member name without '.npy'), as ``np.load`` names them."""
    arrays = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                limits.charge(path, info.file_size, f"{what} member {info.filename!r}")
                with archive.open(info) as member:
                    arrays[name] = _array(member, info.file_size, path, f"{what} member {info.filename!r}")
    except _UNREADABLE as e:
        raise InputError(path, f"unreadable {what}: {e}") from None
    return arrays


def _array(stream, size: int, path: Path, what: str) -> np.ndarray:
    """The array in ``stream``, which holds ``size`` bytes: header, then at most that much data."""
    version = npy_format.read_magic(stream)
    header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
    shape, fortran, dtype = header(stream)
    if dtype.hasobject:
        raise InputError(path, f"{what} holds Python objects, which are never loaded")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > size - stream.tell():
        raise InputError(path, f"{what} declares a {shape} {dtype} array ({nbytes:,} bytes) "
                               f"in a file of {size:,} bytes")
    data = np.empty(nbytes, dtype=np.uint8)
    if stream.readinto(memoryview(data)) != nbytes:
        raise InputError(path, f"{what} is truncated")
    return data.view(dtype).reshape(shape, order="F" if fortran else "C")
