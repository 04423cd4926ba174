"""Cross-view geometric consistency of depth maps: reproject a reference depth map into a
source view and back, and count the source views that agree.

Conventions (shared with fusion and the multi-view data): a camera is ``(K, E)`` with ``K``
the 3x3 intrinsics and ``E`` the 4x4 world->camera extrinsics; depth is the camera-space z, in
the units of the camera translation; pixel ``(x, y)`` is column ``x``, row ``y``, and pixel
centres sit at integer coordinates (MVSNet's convention). Depth ``<= 0`` or non-finite marks a
pixel without a depth. Inputs may be numpy arrays or CPU torch tensors; the math runs in
float64 numpy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["agreeing_stats", "agreement", "backproject", "project", "reproject", "sample_depth"]


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _camera(K, E) -> tuple[np.ndarray, np.ndarray]:
    K, E = _np(K), _np(E)
    if K.shape != (3, 3) or E.shape != (4, 4):
        raise ValueError(f"a camera is K (3, 3) and E (4, 4), got {K.shape} and {E.shape}")
    return K, E


def _valid_depth(depth: np.ndarray) -> np.ndarray:
    return np.isfinite(depth) & (depth > 0)


def backproject(depth, K, E, xy=None) -> np.ndarray:
    """World points (..., 3) of pixels ``xy`` (..., 2) (default: every pixel of ``depth``,
    giving (H, W, 3)) at camera-space depth ``depth``."""
    K, E = _camera(K, E)
    depth = _np(depth)
    if xy is None:
        ys, xs = np.indices(depth.shape, dtype=np.float64)
        xy = np.stack([xs, ys], axis=-1)
    xy = _np(xy)
    pix = np.concatenate([xy, np.ones_like(xy[..., :1])], axis=-1)
    cam = (pix @ np.linalg.inv(K).T) * depth[..., None]
    world = np.linalg.inv(E)  # general inverse, so a non-rigid E (a scaled world) also works
    return cam @ world[:3, :3].T + world[:3, 3]


def project(points, K, E) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (..., 2) and camera-space depth (...) of world ``points`` (..., 3).
    Points at or behind the camera get NaN coordinates."""
    K, E = _camera(K, E)
    cam = _np(points) @ E[:3, :3].T + E[:3, 3]
    z = cam[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        xy = (cam @ K.T)[..., :2] / np.where(z > 0, z, np.nan)[..., None]
    return xy, z


def sample_depth(depth, xy, mode: str = "bilinear") -> np.ndarray:
    """``depth`` (H, W) read at sub-pixel positions ``xy`` (..., 2); 0 where it has no value.

    ``bilinear`` (the default, as the official MVSNet-family filters via an image remap)
    interpolates the four neighbours, and gives 0 when a neighbour with a non-zero weight has
    no depth, so a depth edge never yields a blend of foreground and "no surface";
    ``nearest`` takes the closest pixel. Positions outside the image, or NaN, give 0.
    """
    depth, xy = _np(depth), _np(xy)
    h, w = depth.shape
    x, y = xy[..., 0], xy[..., 1]
    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"sample_depth mode must be 'bilinear' or 'nearest', got {mode!r}")
    # Nearest covers whole pixels; bilinear only the span between the outer pixel centres.
    border = 0.5 if mode == "nearest" else 0.0
    inside = np.isfinite(x) & np.isfinite(y) & (x >= -border) & (y >= -border)
    inside &= (x <= w - 1 + border) & (y <= h - 1 + border)
    x, y = np.where(inside, x, 0.0), np.where(inside, y, 0.0)
    ok = _valid_depth(depth)
    clean = np.where(ok, depth, 0.0)
    if mode == "nearest":
        xi = np.clip(np.floor(x + 0.5), 0, w - 1).astype(np.int64)
        yi = np.clip(np.floor(y + 0.5), 0, h - 1).astype(np.int64)
        return np.where(inside & ok[yi, xi], clean[yi, xi], 0.0)
    if h < 2 or w < 2:
        raise ValueError(f"bilinear sampling needs a depth map of at least 2x2, got {depth.shape}")
    x0 = np.clip(np.floor(x), 0, w - 2).astype(np.int64)
    y0 = np.clip(np.floor(y), 0, h - 2).astype(np.int64)
    fx, fy = x - x0, y - y0
    value = np.zeros_like(x)
    missing = ~inside
    for dy, dx, weight in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)),
                           (1, 0, (1 - fx) * fy), (1, 1, fx * fy)):
        value += weight * clean[y0 + dy, x0 + dx]
        missing |= (weight > 0) & ~ok[y0 + dy, x0 + dx]
    return np.where(missing, 0.0, value)


def reproject(ref_depth, K_ref, E_ref, src_depth, K_src, E_src, mode: str = "bilinear"):
    """Reference pixels -> 3D -> source pixels -> the source depth there -> 3D -> reference.

    Returns ``(reprojected_depth, px_error, rel_depth_error, src_xy)``, all of the reference's
    (H, W) shape (``src_xy`` (H, W, 2)): the reference-camera depth of the point the source
    depth map puts behind each reference pixel, the distance in pixels between that point's
    projection and the pixel, and ``|reprojected - ref| / ref``. Pixels that cannot be checked
    (no reference depth, landing outside the source image or on its missing depth, behind a
    camera) have depth 0 and infinite errors. ``mode`` is how the source depth is sampled
    (see :func:`sample_depth`). The maps may differ in size; each ``K`` must match its map.
    """
    ref_depth, src_depth = _np(ref_depth), _np(src_depth)
    if ref_depth.ndim != 2 or src_depth.ndim != 2:
        raise ValueError(f"depth maps must be (H, W), got {ref_depth.shape} and {src_depth.shape}")
    ref_ok = _valid_depth(ref_depth)
    points = backproject(np.where(ref_ok, ref_depth, 1.0), K_ref, E_ref)
    src_xy, _ = project(points, K_src, E_src)
    sampled = sample_depth(src_depth, src_xy, mode)
    back_xy, back_z = project(backproject(sampled, K_src, E_src, np.nan_to_num(src_xy)), K_ref, E_ref)
    ys, xs = np.indices(ref_depth.shape, dtype=np.float64)
    ok = ref_ok & (sampled > 0) & np.isfinite(back_xy).all(-1) & (back_z > 0)
    px = np.hypot(back_xy[..., 0] - xs, back_xy[..., 1] - ys)
    safe_ref = np.where(ref_ok, ref_depth, 1.0)
    rel = np.abs(back_z - safe_ref) / safe_ref
    return (np.where(ok, back_z, 0.0), np.where(ok, px, np.inf), np.where(ok, rel, np.inf), src_xy)


def agreement(ref_depth, ref_cam, sources: Sequence, *, max_px: float = 1.0, max_rel: float = 0.01,
              mode: str = "bilinear") -> tuple[np.ndarray, np.ndarray]:
    """Which source views agree with each reference pixel.

    ``ref_cam`` is ``(K, E)``; ``sources`` a sequence of ``(depth, (K, E))``. A source agrees
    at a pixel when the round trip lands within ``max_px`` pixels (strictly less) and its depth
    within a relative ``max_rel`` of the reference depth. Returns ``(agree (S, H, W) bool,
    depths (S, H, W))``, the reprojected depths, 0 where a source does not agree.
    """
    ref_depth = _np(ref_depth)
    agree = np.zeros((len(sources),) + ref_depth.shape, dtype=bool)
    depths = np.zeros((len(sources),) + ref_depth.shape, dtype=np.float64)
    for i, (src_depth, (K_src, E_src)) in enumerate(sources):
        depth, px, rel, _ = reproject(ref_depth, *ref_cam, src_depth, K_src, E_src, mode)
        agree[i] = (px < max_px) & (rel < max_rel)
        depths[i] = np.where(agree[i], depth, 0.0)
    return agree, depths


def agreeing_stats(ref_depth, agree, depths) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(count, mean, std)`` per pixel: the number of agreeing sources, and the mean and the
    (population) standard deviation of the reference depth together with the agreeing
    reprojected depths. Pixels without a reference depth have count 0 and mean 0."""
    ref = _np(ref_depth)
    ref_ok = _valid_depth(ref)
    ref = np.where(ref_ok, ref, 0.0)
    agree = np.asarray(agree, dtype=bool) & ref_ok
    count = agree.sum(axis=0)
    n = count + ref_ok  # the reference depth itself counts once
    safe_n = np.maximum(n, 1)
    mean = (ref + np.where(agree, depths, 0.0).sum(axis=0)) / safe_n
    square = (ref - mean) ** 2 * ref_ok + (np.where(agree, depths - mean, 0.0) ** 2).sum(axis=0)
    std = np.sqrt(square / safe_n)
    return count, np.where(ref_ok, mean, 0.0), np.where(ref_ok, std, 0.0)
