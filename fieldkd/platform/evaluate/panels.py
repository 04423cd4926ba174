"""One view's renders as a person reads them in the MLflow UI: labelled panels at a visible size.

prediction | ground truth | error map [| depth | ground-truth depth], each enlarged by an integer
factor (nearest neighbour, so pixels stay pixels) to at least ``min_side`` pixels and captioned.
"""

from __future__ import annotations

import math

import numpy as np

from .report import side_by_side

MIN_SIDE = 256
CAPTION_PX = 22


def upsample(image: np.ndarray, min_side: int = MIN_SIDE) -> np.ndarray:
    """``image`` repeated by the smallest integer factor that makes its shorter side at least ``min_side``."""
    factor = max(1, math.ceil(min_side / max(1, min(image.shape[:2]))))
    return image if factor == 1 else np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def captioned(image: np.ndarray, text: str, height: int = CAPTION_PX) -> np.ndarray:
    """``image`` (uint8 H, W, 3) under a dark bar that holds ``text`` in white."""
    from PIL import Image, ImageDraw, ImageFont

    bar = Image.new("RGB", (image.shape[1], height), (24, 24, 24))
    font = ImageFont.load_default(size=max(8, height - 8))
    ImageDraw.Draw(bar).text((4, 3), text, fill=(255, 255, 255), font=font)
    return np.concatenate([np.asarray(bar), image], axis=0)


def view_panels(pred, gt, depth_pred=None, depth_gt=None, psnr_db: float | None = None,
                min_side: int = MIN_SIDE) -> np.ndarray:
    """One uint8 strip of captioned panels; the prediction and the error map carry the view's PSNR."""
    strip = side_by_side(pred, gt, depth_pred, depth_gt, with_error=True)
    width = np.asarray(gt).shape[1]
    score = f" {psnr_db:.2f} dB" if psnr_db is not None else ""
    labels = [f"prediction{score}", "ground truth", f"error map{score}"]
    if depth_pred is not None:
        labels.append("depth")
    if depth_gt is not None:
        labels.append("ground-truth depth")
    panels = np.split(strip, strip.shape[1] // width, axis=1)
    return np.concatenate([captioned(upsample(p, min_side), label) for p, label in zip(panels, labels)], axis=1)
