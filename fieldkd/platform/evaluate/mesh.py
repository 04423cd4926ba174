"""Surface extraction from a field, and mesh-vs-mesh geometry metrics.

Metrics follow the MonoSDF / UNIKD protocol: sample points uniformly on both
surfaces, then nearest-neighbour distances in each direction give accuracy,
completeness, Chamfer distance and an F-score at a distance threshold.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.spatial import cKDTree
from skimage.measure import marching_cubes

from ._arrays import to_numpy

__all__ = ["extract_mesh", "load_mesh", "sample_surface", "mesh_metrics"]


def _as_aabb(aabb) -> np.ndarray:
    box = to_numpy(aabb)
    if box.shape != (2, 3) or not np.all(box[1] > box[0]):
        raise ValueError(f"aabb must be (2, 3) with max > min per axis, got {box.tolist()}")
    return box


def _grid_values(field_fn: Callable, box: np.ndarray, resolution: int, chunk: int, device,
                 keep: Callable | None = None) -> np.ndarray:
    """``field_fn`` on a resolution^3 grid spanning ``box`` (corners included), as float32; where
    ``keep`` (points -> bool mask) is False the field is not asked and the value is 0.

    Points are generated per chunk from flat indices, so memory stays at one
    chunk of points even at high resolutions.
    """
    import torch

    n = resolution
    lo = torch.as_tensor(box[0], dtype=torch.float32, device=device)
    step = torch.as_tensor((box[1] - box[0]) / (n - 1), dtype=torch.float32, device=device)
    out = np.empty(n**3, dtype=np.float32)
    with torch.no_grad():
        for start in range(0, n**3, chunk):
            flat = torch.arange(start, min(start + chunk, n**3), device=device)
            # 'ij' order: x varies slowest, matching volume[i, j, k] = f(x_i, y_j, z_k).
            ijk = torch.stack((flat // (n * n), (flat // n) % n, flat % n), dim=-1)
            points = lo + ijk.float() * step
            if keep is None:
                values = to_numpy(field_fn(points), np.float32).reshape(-1)
            else:
                mask = to_numpy(keep(points), bool).reshape(-1)
                values = np.zeros(len(mask), dtype=np.float32)
                if mask.any():
                    values[mask] = to_numpy(field_fn(points[torch.as_tensor(mask, device=device)]), np.float32).reshape(-1)
            out[start : start + flat.numel()] = values
    return out.reshape(n, n, n)


def extract_mesh(
    density_fn: Callable,
    aabb,
    resolution: int = 128,
    level: float | None = None,
    chunk: int = 65536,
    sdf: bool = False,
    device="cpu",
    keep: Callable | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Marching-cubes mesh of ``{x : field(x) = level}`` inside ``aabb``.

    ``density_fn`` maps a float32 (N, 3) tensor of world points (on ``device``)
    to N values (tensor or array). For a density, the inside is where the value
    exceeds ``level`` (default 10). With ``sdf=True`` the field is a signed
    distance, negative inside, and ``level`` defaults to 0; we negate it so the
    inside is again the larger side and both kinds of field wind faces alike.

    ``keep`` (a density only) maps the grid's points to a bool mask of those worth asking, e.g. the
    occupancy grid's occupied cells (``OccupancyGrid.query``): the others count as empty, density
    0, as the renderer skips them, and the field is asked only where it may be solid.

    Returns world-space vertices (V, 3) float32 and faces (F, 3) int64, wound
    counter-clockwise seen from outside (right-hand normals point out). Raises
    ValueError if the field never crosses ``level`` in the box (empty surface).
    """
    box = _as_aabb(aabb)
    if resolution < 2:
        raise ValueError(f"resolution must be >= 2, got {resolution}")
    if level is None:
        level = 0.0 if sdf else 10.0
    if keep is not None and sdf:
        raise ValueError("extract_mesh: keep skips empty space of a density; an SDF has no such value")
    volume = _grid_values(density_fn, box, int(resolution), int(chunk), device, keep)
    if sdf:
        volume, level = -volume, -level
    if not np.all(np.isfinite(volume)):
        raise ValueError("extract_mesh: the field returned NaN or infinite values on the grid")
    lo, hi = float(volume.min()), float(volume.max())
    if not lo < level < hi:
        kind = "SDF" if sdf else "density"
        shown = (-hi, -lo, -level) if sdf else (lo, hi, level)
        raise ValueError(
            f"extract_mesh: empty surface, the {kind} never crosses level {shown[2]:g} inside the box "
            f"(values range over [{shown[0]:g}, {shown[1]:g}] at resolution {resolution})"
        )
    spacing = tuple((box[1] - box[0]) / (resolution - 1))
    verts, faces, _normals, _values = marching_cubes(
        volume, level=level, spacing=spacing, allow_degenerate=False
    )
    # marching_cubes reports positions relative to voxel (0, 0, 0), scaled by spacing.
    verts = (verts + box[0]).astype(np.float32)
    # For an inside-is-larger field skimage winds faces clockwise seen from
    # outside; reversing gives the usual counter-clockwise, outward-facing order.
    return verts, np.ascontiguousarray(faces[:, ::-1], dtype=np.int64)


def load_mesh(path) -> tuple[np.ndarray, np.ndarray]:
    """Read a PLY mesh as (verts (V, 3) float32, faces (F, 3) int64).

    Faces stay None if the reader returns None (a point cloud); ``mesh_metrics``
    accepts that directly.
    """
    # Imported here so evaluate does not depend on scenes at import time.
    from fieldkd.platform.scenes.ply import read_ply

    verts, faces = read_ply(path)
    faces = None if faces is None else np.asarray(faces, dtype=np.int64)
    return np.asarray(to_numpy(verts), dtype=np.float32), faces


def sample_surface(verts, faces, n: int, seed: int = 0) -> np.ndarray:
    """``n`` points (n, 3) float64 drawn uniformly by area over the triangles."""
    v, f = to_numpy(verts), to_numpy(faces, np.int64)
    if f.ndim != 2 or f.shape[1] != 3 or len(f) == 0:
        raise ValueError(f"sample_surface: faces must be a non-empty (F, 3) array, got shape {f.shape}")
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    areas = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    total = areas.sum()
    if not total > 0:
        raise ValueError("sample_surface: the mesh has zero surface area")
    rng = np.random.default_rng(seed)
    tri = rng.choice(len(f), size=n, p=areas / total)
    u, w = rng.random(n), rng.random(n)
    # Points with u + w > 1 fall in the other half of the parallelogram; folding
    # them back keeps the distribution uniform over the triangle.
    fold = u + w > 1
    u[fold], w[fold] = 1 - u[fold], 1 - w[fold]
    a, b, c = a[tri], b[tri], c[tri]
    return a + u[:, None] * (b - a) + w[:, None] * (c - a)


def _points(verts, faces, n: int, seed: int) -> np.ndarray:
    """Surface samples of a mesh, or the vertices themselves for a point cloud."""
    if faces is None:
        return to_numpy(verts).reshape(-1, 3)
    return sample_surface(verts, faces, n, seed)


def _crop(points: np.ndarray, crop_aabb, which: str) -> np.ndarray:
    if crop_aabb is None:
        return points
    box = _as_aabb(crop_aabb)
    inside = np.all((points >= box[0]) & (points <= box[1]), axis=1)
    if not inside.any():
        raise ValueError(f"mesh_metrics: no {which} surface point lies inside crop_aabb {box.tolist()}")
    return points[inside]


def mesh_metrics(
    pred_verts,
    pred_faces,
    gt_verts,
    gt_faces,
    n_points: int = 100_000,
    threshold: float = 0.05,
    crop_aabb=None,
    seed: int = 0,
) -> dict[str, float]:
    """Geometry of a predicted mesh against ground truth (distances in world units).

    - ``accuracy``: mean distance from predicted points to the nearest GT point
    - ``completeness``: mean distance from GT points to the nearest predicted point
    - ``chamfer``: (accuracy + completeness) / 2
    - ``precision`` / ``recall``: share of predicted / GT points closer than
      ``threshold``; ``fscore`` = 2PR / (P + R), 0 when both are 0.

    ``n_points`` are sampled on each surface; pass faces=None to use the
    vertices as a point cloud instead (e.g. scanned GT). ``crop_aabb`` (2, 3)
    keeps only points inside a box on both sides. Both surfaces are sampled
    with the same ``seed``, so a mesh compared with itself scores exactly 0.
    """
    pred = _crop(_points(pred_verts, pred_faces, n_points, seed), crop_aabb, "predicted")
    gt = _crop(_points(gt_verts, gt_faces, n_points, seed), crop_aabb, "ground-truth")
    d_pred, _ = cKDTree(gt).query(pred, workers=-1)
    d_gt, _ = cKDTree(pred).query(gt, workers=-1)
    accuracy, completeness = float(d_pred.mean()), float(d_gt.mean())
    precision = float(np.mean(d_pred < threshold))
    recall = float(np.mean(d_gt < threshold))
    denom = precision + recall
    return {
        "accuracy": accuracy,
        "completeness": completeness,
        "chamfer": (accuracy + completeness) / 2,
        "precision": precision,
        "recall": recall,
        "fscore": 2 * precision * recall / denom if denom > 0 else 0.0,
    }
