"""Minimal PLY mesh writer and reader (triangle meshes), and vertex-only point clouds.

Writer: ``vertex`` with float32 x, y, z and ``face`` with a uchar count and
int32 indices, binary little-endian (or ASCII). Reader: ASCII or
binary_little_endian, any scalar property types, extra properties skipped;
polygons are fan-triangulated.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..atomic import atomic_open
from ..errors import InputError
from . import limits

_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}


def write_ply(path: str | Path, vertices: np.ndarray, faces: np.ndarray, binary: bool = True) -> None:
    vertices = np.asarray(vertices, dtype="<f4").reshape(-1, 3)
    faces = np.asarray(faces, dtype="<i4").reshape(-1, 3)
    header = (
        f"ply\nformat {'binary_little_endian' if binary else 'ascii'} 1.0\n"
        f"element vertex {len(vertices)}\nproperty float x\nproperty float y\nproperty float z\n"
        f"element face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n"
    )
    with atomic_open(path) as f:
        f.write(header.encode("ascii"))
        if binary:
            f.write(vertices.tobytes())
            packed = np.empty(len(faces), dtype=[("n", "u1"), ("idx", "<i4", (3,))])
            packed["n"], packed["idx"] = 3, faces
            f.write(packed.tobytes())
        else:
            for v in vertices:
                f.write(f"{v[0]:.9g} {v[1]:.9g} {v[2]:.9g}\n".encode("ascii"))
            for t in faces:
                f.write(f"3 {t[0]} {t[1]} {t[2]}\n".encode("ascii"))


def _parse_header(path, lines):
    fmt, elements = None, []
    for line in lines:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format":
            fmt = words[1]
        elif words[0] == "element":
            elements.append({"name": words[1], "count": int(words[2]), "props": []})
        elif words[0] == "property" and elements:
            if words[1] == "list":
                elements[-1]["props"].append((words[4], _TYPES[words[2]], _TYPES[words[3]]))
            else:
                elements[-1]["props"].append((words[2], _TYPES[words[1]], None))
        else:
            raise InputError(path, f"unexpected PLY header line {line!r}")
    if fmt not in ("ascii", "binary_little_endian"):
        raise InputError(path, f"unsupported PLY format {fmt!r} (need ascii or binary_little_endian)")
    return fmt, elements


def _read_binary(data: bytes, offset: int, element):
    props, count = element["props"], element["count"]
    if all(p[2] is None for p in props):
        dtype = np.dtype([(name, "<" + t) for name, t, _ in props])
        rows = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
        return {name: rows[name] for name, _, _ in props}, offset + dtype.itemsize * count
    if len(props) == 1:  # fast path: a face element whose polygons all share one size
        name, ct, it = props[0]
        k = int(np.frombuffer(data, dtype="<" + ct, count=1, offset=offset)[0]) if count else 0
        dtype = np.dtype([("n", "<" + ct), ("idx", "<" + it, (k,))])
        if offset + dtype.itemsize * count <= len(data):
            rows = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
            if np.all(rows["n"] == k):
                return {name: rows["idx"]}, offset + dtype.itemsize * count
    columns = {name: [] for name, _, _ in props}
    for _ in range(count):
        for name, t, it in props:
            value = np.frombuffer(data, dtype="<" + t, count=1, offset=offset)[0]
            offset += np.dtype(t).itemsize
            if it is not None:
                n = int(value)
                value = np.frombuffer(data, dtype="<" + it, count=n, offset=offset)
                offset += np.dtype(it).itemsize * n
            columns[name].append(value)
    return columns, offset


def _read_ascii(tokens, element):
    columns = {name: [] for name, _, _ in element["props"]}
    for _ in range(element["count"]):
        for name, t, it in element["props"]:
            if it is None:
                columns[name].append(float(next(tokens)))
            else:
                n = int(next(tokens))
                columns[name].append(np.array([int(next(tokens)) for _ in range(n)]))
    return columns


def _triangles(polygons) -> np.ndarray:
    if not isinstance(polygons, np.ndarray) and len({len(p) for p in polygons}) == 1:
        polygons = np.stack(polygons)
    if isinstance(polygons, np.ndarray):  # all polygons share one size: vectorised fan
        k = polygons.shape[1]
        tris = [np.stack([polygons[:, 0], polygons[:, i], polygons[:, i + 1]], -1) for i in range(1, k - 1)]
    else:
        tris = [np.stack([np.full(len(p) - 2, p[0]), p[1:-1], p[2:]], -1) for p in polygons if len(p) >= 3]
    return np.concatenate(tris).astype(np.int64) if tris else np.zeros((0, 3), np.int64)


def _read_tables(path: Path, charge: bool = False) -> dict:
    """Every element of a PLY file as {element: {property: values}}; ``charge``: count the file's
    bytes against the scene's read budget (:mod:`limits`) before reading it."""
    try:
        if charge:
            limits.charge(path, os.path.getsize(path), "point cloud")
        data = path.read_bytes()
    except OSError as e:
        raise InputError(path, f"cannot read {'point cloud' if charge else 'mesh'}: {e.strerror or e}") from None
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise InputError(path, "not a PLY file (no 'ply' magic or 'end_header')")
    body = data.index(b"\n", end) + 1
    try:
        fmt, elements = _parse_header(path, data[:end].decode("ascii").splitlines()[1:])
    except (KeyError, IndexError, ValueError, UnicodeDecodeError) as e:
        raise InputError(path, f"malformed PLY header ({e})") from None
    tables = {}
    try:
        if fmt == "ascii":
            tokens = iter(data[body:].decode("ascii").split())
            for element in elements:
                tables[element["name"]] = _read_ascii(tokens, element)
        else:
            offset = body
            for element in elements:
                tables[element["name"]], offset = _read_binary(data, offset, element)
    except (StopIteration, ValueError, UnicodeDecodeError) as e:
        raise InputError(path, f"PLY body is truncated or malformed ({e or 'too few values'})") from None
    if "vertex" not in tables or not {"x", "y", "z"} <= set(tables["vertex"]):
        raise InputError(path, "PLY has no vertex element with x, y, z")
    return tables


def read_ply(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(vertices (V, 3) float32, triangles (F, 3) int64)."""
    tables = _read_tables(Path(path))
    vertex = tables["vertex"]
    vertices = np.stack([np.asarray(vertex[k], dtype=np.float32) for k in "xyz"], axis=-1)
    face = tables.get("face", {})
    polygons = face.get("vertex_indices", face.get("vertex_index", []))
    return vertices, _triangles(polygons)


def read_points(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """A point cloud's (points (N, 3) float32, colours (N, 3) uint8 or None): the vertices of a PLY
    file (ascii or binary_little_endian; faces and other properties ignored), such as DTU's
    ``stl{N:03d}_total.ply``. Its bytes count against the scene's read budget."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "point cloud not found")
    vertex = _read_tables(path, charge=True)["vertex"]
    points = np.stack([np.asarray(vertex[k], dtype=np.float32) for k in "xyz"], axis=-1).reshape(-1, 3)
    if not np.isfinite(points).all():
        raise InputError(path, "point cloud has non-finite coordinates")
    names = next((n for n in (("red", "green", "blue"), ("r", "g", "b"), ("diffuse_red", "diffuse_green",
                                                                          "diffuse_blue")) if set(n) <= set(vertex)), None)
    if names is None:
        return points, None
    colours = np.stack([np.asarray(vertex[k], dtype=np.float64) for k in names], axis=-1).reshape(-1, 3)
    return points, np.clip(np.round(colours), 0, 255).astype(np.uint8)


def write_points(path: str | Path, points: np.ndarray, colours: np.ndarray | None = None,
                 binary: bool = True) -> None:
    """A vertex-only PLY: float x, y, z and, with ``colours`` ((N, 3) uint8, or floats in [0, 1]),
    uchar red, green, blue."""
    with atomic_open(path) as f:
        f.write(points_ply_bytes(points, colours, binary))


def points_ply_bytes(points: np.ndarray, colours: np.ndarray | None = None, binary: bool = True) -> bytes:
    points = np.asarray(points, dtype="<f4").reshape(-1, 3)
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    header = f"ply\nformat {'binary_little_endian' if binary else 'ascii'} 1.0\nelement vertex {len(points)}\n"
    header += "property float x\nproperty float y\nproperty float z\n"
    if colours is not None:
        colours = np.asarray(colours)
        if colours.dtype != np.uint8:  # floats in [0, 1]
            colours = np.round(np.clip(colours, 0.0, 1.0) * 255.0).astype(np.uint8)
        colours = colours.reshape(-1, 3)
        if len(colours) != len(points):
            raise ValueError(f"{len(colours)} colours for {len(points)} points")
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
        header += "property uchar red\nproperty uchar green\nproperty uchar blue\n"
    header += "end_header\n"
    if not binary:
        rows = [f"{p[0]:.9g} {p[1]:.9g} {p[2]:.9g}" + ("" if colours is None else f" {c[0]} {c[1]} {c[2]}")
                for p, c in zip(points, colours if colours is not None else points)]
        return (header + "".join(r + "\n" for r in rows)).encode("ascii")
    packed = np.empty(len(points), dtype=fields)
    packed["x"], packed["y"], packed["z"] = points.T
    if colours is not None:
        packed["red"], packed["green"], packed["blue"] = colours.T
    return header.encode("ascii") + packed.tobytes()
