"""Losses of BTS training and of its distillation: pure functions on patches of rays.

Rays come as square patches (8x8 by default), so that SSIM and the smoothness term
have neighbours: patch tensors are [P, 3, p, p] for colours and [P, p, p] for depths.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SSIM_WEIGHT = 0.85
SMOOTHNESS_WEIGHT = 1e-3
KD_WEIGHT = 1e-2
KD_CLIP = 2.0
MAX_INVALID_SHARE = 0.9


def ssim_3x3(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-pixel SSIM of [N, C, h, w] images over 3x3 windows (reflection-padded), as monodepth2."""
    c1, c2 = 0.01**2, 0.03**2
    x, y = F.pad(x, (1, 1, 1, 1), mode="reflect"), F.pad(y, (1, 1, 1, 1), mode="reflect")
    mu_x, mu_y = F.avg_pool2d(x, 3, 1), F.avg_pool2d(y, 3, 1)
    var_x = F.avg_pool2d(x * x, 3, 1) - mu_x**2
    var_y = F.avg_pool2d(y * y, 3, 1) - mu_y**2
    cov = F.avg_pool2d(x * y, 3, 1) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return num / den


def photometric_error(pred: torch.Tensor, target: torch.Tensor, ssim_weight: float = SSIM_WEIGHT) -> torch.Tensor:
    """[N, 3, h, w] each -> per-pixel error [N, h, w]: w * (1 - SSIM) / 2 + (1 - w) * L1."""
    l1 = (pred - target).abs().mean(dim=1)
    dssim = ((1.0 - ssim_3x3(pred, target)) / 2.0).clamp(0.0, 1.0).mean(dim=1)
    return ssim_weight * dssim + (1.0 - ssim_weight) * l1


def reconstruction_loss(rendered: torch.Tensor, target: torch.Tensor, invalid_share: torch.Tensor,
                        max_invalid: float = MAX_INVALID_SHARE, ssim_weight: float = SSIM_WEIGHT):
    """The minimum over render frames of the photometric error, per pixel.

    rendered [F, P, 3, p, p] (the patches' colours as rendered from each of F frames),
    target [P, 3, p, p], invalid_share [F, P, p, p]. A frame whose ray puts more than
    ``max_invalid`` of its weight on invalid samples does not compete for the minimum;
    a pixel with no such frame left is dropped. Returns (loss, share of pixels kept)."""
    n_frames = rendered.shape[0]
    errors = photometric_error(rendered.flatten(0, 1), target.repeat(n_frames, 1, 1, 1), ssim_weight)
    errors = errors.unflatten(0, (n_frames, -1))
    usable = invalid_share <= max_invalid
    best = errors.masked_fill(~usable, float("inf")).min(dim=0).values
    kept = usable.any(dim=0)
    if not kept.any():
        return rendered.sum() * 0.0, 0.0
    return best[kept].mean(), float(kept.float().mean())


def edge_aware_smoothness(depth: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Smoothness of mean-normalised disparity, relaxed at image edges (monodepth2).

    depth [P, p, p] (> 0), image [P, 3, p, p] -> scalar (unweighted)."""
    disp = 1.0 / depth.clamp(min=1e-6)
    disp = disp / disp.mean(dim=(-2, -1), keepdim=True).clamp(min=1e-7)
    dx, dy = (disp[..., :, 1:] - disp[..., :, :-1]).abs(), (disp[..., 1:, :] - disp[..., :-1, :]).abs()
    ix = (image[..., :, 1:] - image[..., :, :-1]).abs().mean(dim=-3)
    iy = (image[..., 1:, :] - image[..., :-1, :]).abs().mean(dim=-3)
    return (dx * torch.exp(-ix)).mean() + (dy * torch.exp(-iy)).mean()


KD_CLIP_FORMS = ("both", "teacher")


def kd_density_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None,
                    weight: float = KD_WEIGHT, clip: float = KD_CLIP, clip_form: str = "both") -> torch.Tensor:
    """``weight`` x L1 between student and teacher densities (already through softplus); the
    teacher is detached, so no gradient reaches it.

    clip_form "both" (the official): each density clipped to [0, clip], so a student density above
    the clip gets no gradient, even where the teacher's is near 0. "teacher": the clip saturates the
    teacher only (a teacher density at or above it means "at least clip"): the student is pulled down
    to a teacher below the clip from any height, and only up to the clip where the teacher is above.
    mask: the samples that count (inside the input view's frustum); none left gives 0."""
    if student.shape != teacher.shape:
        raise ValueError(f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} densities differ")
    if clip_form not in KD_CLIP_FORMS:
        raise ValueError(f"KD clip form must be one of {KD_CLIP_FORMS}, got {clip_form!r}")
    teacher = teacher.detach()
    if clip_form == "both":
        s, t = student.clamp(0.0, clip), teacher.clamp(0.0, clip)
    else:
        saturated = teacher >= clip
        s = torch.where(saturated, student.clamp(max=clip), student)
        t = teacher.clamp(0.0, clip)
    if mask is not None:
        s, t = s[mask], t[mask]
    if s.numel() == 0:
        return student.sum() * 0.0
    return weight * (s - t).abs().mean()
