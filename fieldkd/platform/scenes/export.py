"""Writing the per-frame files of an in-memory :class:`SceneSplit` (used by format writers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from . import images
from .scene import SceneSplit

DEPTH_UNIT = 1e-3  # depth PNGs store millimetres


def straight_colour(split: SceneSplit, background: torch.Tensor) -> np.ndarray:
    """Undo compositing: colour = (image - bg * (1 - a)) / a (0 where a = 0)."""
    rgb = split.images.numpy()
    if split.alphas is None:
        return rgb
    a = split.alphas.numpy()[..., None]
    bg = background.numpy()
    return np.where(a > 0, (rgb - bg * (1 - a)) / np.maximum(a, 1e-8), 0.0).clip(0, 1)


def write_frame(split: SceneSplit, straight: np.ndarray, index: int, image: Path,
                depth: Path | None, normal: Path | None) -> None:
    for p in (image, depth, normal):
        if p is not None:
            p.parent.mkdir(parents=True, exist_ok=True)
    alpha = split.alphas[index].numpy() if split.alphas is not None else np.ones(straight.shape[1:3])
    images.write_rgba(image, straight[index], alpha)
    if depth is not None:
        images.write_depth(depth, split.depths[index].numpy(), DEPTH_UNIT)
    if normal is not None:
        images.write_normals(normal, split.normals[index].numpy())


def shared_intrinsics(split: SceneSplit) -> tuple[float, float, float, float]:
    c = split.cameras
    return c.fx[0].item(), c.fy[0].item(), c.cx[0].item(), c.cy[0].item()


def same_intrinsics(split: SceneSplit, index: int) -> bool:
    c = split.cameras
    mine = (c.fx[index].item(), c.fy[index].item(), c.cx[index].item(), c.cy[index].item())
    return mine == shared_intrinsics(split)


def require_pinhole(split: SceneSplit, fmt: str) -> None:
    """Formats without lens parameters cannot hold distorted cameras: refuse, never drop them."""
    if not split.cameras.pinhole:
        raise ValueError(f"{fmt} format has no lens model: write {split.cameras.model} cameras as nerfstudio")
