"""Image files of a dataset: RGBA colour, 16-bit depth and 8-bit normal PNGs.

Encodings (our extensions to the Blender / nerfstudio formats):
- depth: 16-bit grey PNG of camera z-depth in integer units (millimetres by
  default, see ``depth_unit_scale_factor``); 0 = no surface.
- normals: 8-bit RGB PNG of ``n * 0.5 + 0.5`` in world space; pure black
  (0, 0, 0) = no surface (no unit normal encodes to black).
"""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageMode

from ..atomic import atomic_path
from ..errors import InputError
from . import arrays, exr, limits, png16


def _open(path: Path, what: str, referrer: str = "") -> Image.Image:
    if not path.is_file():
        raise InputError(path, f"{what} not found" + (f" (referenced by {referrer})" if referrer else ""))
    try:
        with warnings.catch_warnings():
            # Opening reads the header only; our limit on its size (below) decides, not PIL's warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except Image.DecompressionBombError as e:  # PIL's hard cap, twice Image.MAX_IMAGE_PIXELS
        raise InputError(path, f"{what} refused as a decompression bomb: {e}") from None
    except (OSError, ValueError) as e:
        raise InputError(path, f"unreadable {what}: {e}") from None
    mode = ImageMode.getmode(image.mode)
    try:
        limits.check_image(path, *image.size, len(mode.bands) * np.dtype(mode.typestr).itemsize, what)
        image.load()
    except InputError:
        image.close()
        raise
    except (OSError, ValueError) as e:
        image.close()
        raise InputError(path, f"unreadable {what}: {e}") from None
    return image


def read_rgba(path: Path, referrer: str = "") -> np.ndarray:
    """(H, W, 4) float32 in [0, 1] straight (not premultiplied) colour; alpha 1 if absent."""
    image = _open(path, "frame image", referrer)
    if image.format == "PNG" and png16.is_16bit_colour(path):  # Pillow would keep 8 of the 16 bits
        return _rgba16(path)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grey
        grey = np.asarray(image, dtype=np.float32) / 65535.0
        return np.concatenate([np.repeat(grey[..., None], 3, -1), np.ones_like(grey)[..., None]], -1)
    return np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0


def _rgba16(path: Path) -> np.ndarray:
    try:
        values = png16.read(path).astype(np.float32) / 65535.0
    except (ValueError, zlib.error, struct.error) as e:
        raise InputError(path, f"unreadable 16-bit PNG: {e}") from None
    if values.shape[2] == 2:  # grey + alpha
        values = np.concatenate([np.repeat(values[..., :1], 3, -1), values[..., 1:]], -1)
    if values.shape[2] == 3:
        values = np.concatenate([values, np.ones_like(values[..., :1])], -1)
    return values


def write_rgba(path: Path, rgb: np.ndarray, alpha: np.ndarray) -> None:
    pixels = np.concatenate([rgb, alpha[..., None]], axis=-1)
    with atomic_path(path) as tmp:
        Image.fromarray(np.round(np.clip(pixels, 0, 1) * 255).astype(np.uint8)).save(tmp)


def write_rgb(path: Path, rgb: np.ndarray) -> None:
    """8-bit RGB PNG without alpha (for formats whose readers expect three channels)."""
    with atomic_path(path) as tmp:
        Image.fromarray(np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)).save(tmp)


def write_grey(path: Path, values: np.ndarray) -> None:
    """8-bit grey PNG of values in [0, 1] (masks)."""
    with atomic_path(path) as tmp:
        Image.fromarray(np.round(np.clip(values, 0, 1) * 255).astype(np.uint8)).save(tmp)


def read_depth(path: Path, unit: float, referrer: str = "") -> np.ndarray:
    """(H, W) float32 depth in scene units: stored value * unit, as nerfstudio reads it.

    16-bit PNG (and other single-channel images), ``.npy`` ((H, W) or (H, W, 1)) or a
    float EXR (:mod:`exr`).
    """
    suffix = path.suffix.lower()
    if suffix == ".exr":
        if not path.is_file():
            raise InputError(path, "depth map not found" + (f" (referenced by {referrer})" if referrer else ""))
        values = exr.read_depth(path)
    elif suffix == ".npy":
        values = _npy(path, "depth map", referrer)
        if values.ndim == 3 and values.shape[2] == 1:
            values = values[..., 0]
    else:
        image = _open(path, "depth image", referrer)
        values = np.asarray(image)
    if values.ndim != 2:
        raise InputError(path, f"depth must be single-channel, got shape {values.shape}")
    depth = values.astype(np.float32) * unit
    if not np.isfinite(depth).all() or (depth < 0).any():
        raise InputError(path, "depth has negative or non-finite values")
    return depth


def _npy(path: Path, what: str, referrer: str = "") -> np.ndarray:
    if not path.is_file():
        raise InputError(path, f"{what} not found" + (f" (referenced by {referrer})" if referrer else ""))
    values = arrays.read_npy(path, what)  # within the scene's byte cap; never unpickles
    if not isinstance(values, np.ndarray) or values.dtype.kind not in "biuf":
        raise InputError(path, f"{what} must be a numeric array")
    return values


def read_mask(path: Path, referrer: str = "") -> np.ndarray:
    """(H, W) float32 in [0, 1]: a grey or binary image (alpha when it has one), or ``.npy``."""
    if path.suffix.lower() == ".npy":
        values = _npy(path, "mask", referrer).astype(np.float32)
        values = values[..., 0] if values.ndim == 3 and values.shape[2] == 1 else values
        if values.ndim != 2 or not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
            raise InputError(path, "mask must be an (H, W) array of values in [0, 1]")
        return values
    image = _open(path, "mask image", referrer)
    if image.mode in ("RGBA", "LA", "PA"):
        return np.asarray(image.getchannel("A"), dtype=np.float32) / 255.0
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        return np.clip(np.asarray(image, dtype=np.float32) / 65535.0, 0, 1)
    return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


def write_depth(path: Path, depth: np.ndarray, unit: float) -> None:
    stored = np.round(depth / unit)
    if stored.max(initial=0) > 65535:
        raise ValueError(f"{path}: depth {depth.max():.3f} exceeds 16-bit range at unit {unit}")
    with atomic_path(path) as tmp:
        Image.fromarray(stored.astype(np.uint16)).save(tmp)


def read_normals(path: Path, referrer: str = "") -> np.ndarray:
    """(H, W, 3) float32 unit normals, 0 where the pixel is black (no surface)."""
    raw = np.asarray(_open(path, "normal image", referrer).convert("RGB"), dtype=np.float32)
    n = raw / 255.0 * 2.0 - 1.0
    length = np.linalg.norm(n, axis=-1, keepdims=True)
    valid = raw.any(axis=-1, keepdims=True)
    return np.where(valid, n / np.maximum(length, 1e-6), 0.0).astype(np.float32)


def write_normals(path: Path, normals: np.ndarray) -> None:
    encoded = np.round(np.clip(normals * 0.5 + 0.5, 0, 1) * 255).astype(np.uint8)
    valid = np.linalg.norm(normals, axis=-1) > 0.5
    encoded[~valid] = 0
    encoded[valid & ~encoded.any(-1)] = 1  # keep a real normal from reading as "no surface"
    with atomic_path(path) as tmp:
        Image.fromarray(encoded).save(tmp)


def area_downscale(values: np.ndarray, factor: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Box-filter (H, W, ...) by an integer factor (exact area resampling).

    The right/bottom remainder rows are dropped, so pixel (i, j) of the result
    covers original pixels [i*f, (i+1)*f) and intrinsics simply scale by 1/f.
    With ``weights`` (H, W) it averages only where weights > 0 (depth, normals).
    """
    if factor == 1:
        return values
    h, w = values.shape[0] // factor, values.shape[1] // factor
    def blocks(x):
        x = x[: h * factor, : w * factor]
        return x.reshape(h, factor, w, factor, *x.shape[2:]).sum(axis=(1, 3))
    if weights is None:
        return (blocks(values) / factor**2).astype(np.float32)
    wsum = blocks(weights.astype(np.float32))
    expand = (slice(None), slice(None)) + (None,) * (values.ndim - 2)
    total = blocks(values * weights[expand])
    return np.where(wsum[expand] > 0, total / np.maximum(wsum, 1e-12)[expand], 0).astype(np.float32)
