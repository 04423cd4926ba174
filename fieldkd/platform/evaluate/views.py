"""Render a split's views through a field and score them against the ground truth."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .depth import align_scale_shift, depth_metrics
from .image import psnr, ssim
from .panels import view_panels


@dataclass
class ViewScores:
    metrics: dict[str, float]  # test/psnr, test/ssim, [test/lpips], [depth/abs_rel]
    per_view_psnr: list[float]
    images: list[np.ndarray] = field(default_factory=list)  # labelled panels of the first views (panels.py)
    views: list[int] = field(default_factory=list)  # the split's view index of each score
    per_view: dict[str, list[float]] = field(default_factory=dict)  # psnr, ssim[, lpips] per view

    def over(self, views, prefix: str) -> dict[str, float]:
        """The image metrics averaged over some of the scored views (split indices;
        views that were not scored are ignored); empty when none was scored."""
        wanted = {int(v) for v in views}
        rows = [i for i, v in enumerate(self.views) if v in wanted]
        if not rows:
            return {}
        return {f"{prefix}/{name}": float(np.mean([values[i] for i in rows])) for name, values in self.per_view.items()}


def evaluate_views(renderer, model, split, views=None, device=None, lpips=None,
                   keep_images: int = 0, prefix: str = "test",
                   depth_align: bool = False) -> ViewScores:
    """Mean PSNR/SSIM (and LPIPS when given) over ``views`` of ``split``.

    Depth is scored where the split carries ground-truth depth; only pixels
    that the ground truth marks as surface count. ``depth_align`` (for scale-free,
    monocular ground truth) first aligns each rendered depth to it by the least-squares
    scale and shift, as the ``ssi`` depth loss does.
    """
    views = [int(i) for i in (range(len(split)) if views is None else views)]
    psnrs, ssims, lpipses, depth_errors, panels = [], [], [], [], []
    for i in views:
        out = renderer.render_image(model, split.cameras, int(i), device=device)
        pred, gt = out["rgb"].clamp(0, 1).numpy(), split.images[int(i)].numpy()
        psnrs.append(psnr(pred, gt))
        ssims.append(ssim(pred, gt))
        if lpips is not None:
            lpipses.append(lpips(pred, gt))
        gt_depth = split.depths[int(i)].numpy() if split.depths is not None else None
        if gt_depth is not None and (gt_depth > 0).any():
            pred_depth = out["depth"].numpy()
            if depth_align:
                pred_depth = align_scale_shift(pred_depth, gt_depth)
            depth_errors.append(depth_metrics(pred_depth, gt_depth)["abs_rel"])
        if len(panels) < keep_images:
            panels.append(view_panels(pred, gt, out["depth"].numpy(), gt_depth, psnr_db=psnrs[-1]))
    metrics = {f"{prefix}/psnr": float(np.mean(psnrs)), f"{prefix}/ssim": float(np.mean(ssims))}
    if lpipses:
        metrics[f"{prefix}/lpips"] = float(np.mean(lpipses))
    if depth_errors:
        metrics["depth/abs_rel"] = float(np.mean(depth_errors))
    per_view = {"psnr": psnrs, "ssim": ssims, **({"lpips": lpipses} if lpipses else {})}
    return ViewScores(metrics, psnrs, panels, views, per_view)
