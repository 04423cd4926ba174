"""Losses of the cascade MVS network: the self-supervised teacher loss and the student's
loss against probabilistic pseudo-labels. Pure functions of tensors.

Teacher, per stage (official weights; s = log sigma^2 from the uncertainty head, or 0):

    12 mean(e^-s photo) + 3 mean(e^-s feat) + 1.2 mean(s) + 6 SSIM + 0.18 smoothness

The smoothness acts on depth in units of the sample's depth range (depth / (max - min)) when the
range is given: the other terms are unitless (colours in [0,1], features, log-variances), so in
raw millimetres at DTU's scale (depths ~425-935) the smoothness would outweigh them all and the
official weights would mean something different at every scale.

Unlike the official code, every stage's terms are computed afresh (officially the SSIM and
smoothness sums carry over from stage to stage, so stage 1's count three times).

Student, per stage: 0.5 KL(student || label) + 2 cross-entropy to the hypothesis nearest the
label's mean (hard labels: the cross-entropy only). By default (``kl_form="discrete"``) the KL
compares the volume with the label's Gaussian put on the stage's own hypotheses, a target the
volume can match at any spacing. ``kl_form="moments"`` is the official form: the volume's mean and
standard deviation against the label as two Gaussians, the correct formula (officially sigma
stands where sigma^2 belongs), dividing by the label's variance. On a grid coarser than the labels
(the CPU sizes' 34/8/4 mm against labels ~1.4 mm wide) its best value is far from 0, and its
stage-1 term outweighs the rest (untrained, 2.1e3 against a cross-entropy of 5.7:
results/kdmvs_kl.md). Sigma is clamped from below in both. ``kl_direction="label||student"`` turns
either round (in the moments' form it then divides by the student's variance and asks a student
that misses to be as broad as the miss; measured to make probabilistic labels lose to hard ones,
benchmarks/results/kdmvs.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...distill.losses import discretised_gaussian_kl, gaussian_kl, hypothesis_cross_entropy, volume_moments
from .geometry import projection, subsample, subsample_map, warp_with_depth

TEACHER_WEIGHTS = {"photo": 12.0, "feature": 3.0, "log_var": 1.2, "ssim": 6.0, "smooth": 0.18}
STUDENT_WEIGHTS = {"kl": 0.5, "ce": 2.0}
VIEW_SELECTIONS = ("image", "pixel")
KL_FORMS = ("moments", "discrete")
_INVALID = 1e4  # ranks a view that does not see a pixel behind every view that does


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


# --- image comparison -----------------------------------------------------------------------

def _grad_x(x: torch.Tensor) -> torch.Tensor:
    return F.pad(x[..., :, 1:] - x[..., :, :-1], (0, 1))


def _grad_y(x: torch.Tensor) -> torch.Tensor:
    return F.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1))


def reconstruction_error(warped: torch.Tensor, reference: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-pixel error [B,h,w] of a warped source [B,C,h,w] against the reference: 0.5
    smooth-L1 of the values + 0.5 smooth-L1 of their x and y differences, channel means.
    A difference counts only where both of its pixels are valid warps."""
    v = valid.unsqueeze(1).to(warped.dtype)
    gx_valid = v * F.pad(v[..., :, 1:], (0, 1))  # this pixel and its right neighbour
    gy_valid = v * F.pad(v[..., 1:, :], (0, 0, 0, 1))  # this pixel and the one below
    value = F.smooth_l1_loss(warped, reference, reduction="none").mean(1)
    gx = F.smooth_l1_loss(_grad_x(warped) * gx_valid, _grad_x(reference) * gx_valid, reduction="none").mean(1)
    gy = F.smooth_l1_loss(_grad_y(warped) * gy_valid, _grad_y(reference) * gy_valid, reduction="none").mean(1)
    return 0.5 * value + 0.5 * (gx + gy)


def select_views(errors: torch.Tensor, valid: torch.Tensor, mode: str = "image", top_k: int = 3) -> torch.Tensor:
    """Per-pixel photometric term [B,h,w] from per-view error maps and validity [B,S,h,w].

    "image" (official): rank the views by their whole-image error (the mean over their valid
    pixels) and at each pixel sum the errors of the ``top_k`` best-ranked views that see it.
    "pixel": at each pixel the smallest error among the views that see it.
    Pixels no view sees contribute 0."""
    if mode not in VIEW_SELECTIONS:
        raise ValueError(f"view selection must be one of {VIEW_SELECTIONS}, got {mode!r}")
    valid_f = valid.to(errors.dtype)
    if mode == "image":
        score = (errors * valid_f).sum((2, 3)) / valid_f.sum((2, 3)).clamp_min(1.0)  # [B,S]
        rank = score[:, :, None, None].detach().expand_as(errors)
        k = min(top_k, errors.shape[1])
    else:
        rank, k = errors.detach(), 1
    rank = rank + _INVALID * (1.0 - valid_f)
    chosen = torch.topk(rank, k, dim=1, largest=False).indices
    picked = torch.gather(errors, 1, chosen) * torch.gather(valid_f, 1, chosen)
    return picked.sum(1)


def ssim_dissimilarity(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(1 - SSIM) / 2 per pixel over 3x3 windows, clamped to [0, 1], channel mean: [B,h,w].
    Differentiable (the evaluation SSIM in evaluate/image.py is not)."""
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    pool = lambda t: F.avg_pool2d(F.pad(t, (1, 1, 1, 1), mode="reflect"), 3, stride=1)
    mu_x, mu_y = pool(x), pool(y)
    sigma_x = pool(x * x) - mu_x.square()
    sigma_y = pool(y * y) - mu_y.square()
    sigma_xy = pool(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sigma_xy + c2)
    den = (mu_x.square() + mu_y.square() + c1) * (sigma_x + sigma_y + c2)
    return ((1 - num / den) / 2).clamp(0, 1).mean(1)


def edge_aware_smoothness(depth: torch.Tensor, image: torch.Tensor,
                          depth_span: torch.Tensor | float | None = None) -> torch.Tensor:
    """mean |d/dx depth| e^(-mean_c |d/dx image|) + the same in y (depth [B,h,w], image [B,3,h,w]).

    ``depth_span`` (a number or [B]: each sample's max - min depth) puts the depth in units of
    its range first, so the term is the same for a scene and its scaled copy; None: raw units."""
    if depth_span is not None:
        span = torch.as_tensor(depth_span, dtype=depth.dtype, device=depth.device)
        depth = depth / span.reshape(-1, 1, 1)
    dx, dy = depth[:, :, 1:] - depth[:, :, :-1], depth[:, 1:, :] - depth[:, :-1, :]
    wx = torch.exp(-(image[..., :, 1:] - image[..., :, :-1]).abs().mean(1))
    wy = torch.exp(-(image[..., 1:, :] - image[..., :-1, :]).abs().mean(1))
    return (dx.abs() * wx).mean() + (dy.abs() * wy).mean()


# --- teacher --------------------------------------------------------------------------------

def teacher_stage_terms(depth: torch.Tensor, images: torch.Tensor, intrinsics: torch.Tensor,
                        extrinsics: torch.Tensor, view_features: torch.Tensor | None = None,
                        log_var: torch.Tensor | None = None, view_selection: str = "image",
                        top_k: int = 3, ssim_views: int = 2,
                        depth_span: torch.Tensor | float | None = None) -> dict[str, torch.Tensor]:
    """One stage's unweighted terms, computed from scratch.

    depth [B,h,w]; images [B,V,3,H,W] full size (view 0 the reference), subsampled here to
    the stage's size; intrinsics [B,V,3,3] of the stage's size; extrinsics [B,V,4,4];
    view_features [B,V,C,h,w] (detached here) or None for no feature term; log_var [B,h,w]
    or None (s = 0). SSIM is taken against the first ``ssim_views`` sources, summed.
    ``depth_span``: the smoothness's depth unit (see edge_aware_smoothness)."""
    v = images.shape[1]
    factor = images.shape[-1] // depth.shape[-1]
    imgs = subsample(images, factor)
    proj = projection(intrinsics.float(), extrinsics.float())
    s = torch.zeros_like(depth) if log_var is None else log_var
    weight = torch.exp(-s)
    errors, valids, ssim = [], [], depth.new_zeros(())
    feat_errors = []
    for j in range(1, v):
        warped, valid = warp_with_depth(imgs[:, j], proj[:, j], proj[:, 0], depth)
        errors.append(reconstruction_error(warped, imgs[:, 0], valid))
        valids.append(valid)
        if j <= ssim_views:  # on pixels whose whole 3x3 window is a valid warp
            whole = -F.max_pool2d(-valid.unsqueeze(1).float(), 3, stride=1, padding=1)[:, 0] > 0.5
            ssim = ssim + _masked_mean(ssim_dissimilarity(warped, imgs[:, 0]), whole)
        if view_features is not None:
            feats = view_features.detach()
            warped_f, valid_f = warp_with_depth(feats[:, j], proj[:, j], proj[:, 0], depth)
            feat_errors.append(reconstruction_error(warped_f, feats[:, 0], valid_f & valid))
    errors, valids = torch.stack(errors, 1), torch.stack(valids, 1)
    photo = select_views(errors, valids, view_selection, top_k)
    terms = {"photo": (weight * photo).mean(), "log_var": s.mean(), "ssim": ssim,
             "smooth": edge_aware_smoothness(depth, imgs[:, 0], depth_span)}
    if feat_errors:
        terms["feature"] = (weight * select_views(torch.stack(feat_errors, 1), valids, view_selection, top_k)).mean()
    else:
        terms["feature"] = depth.new_zeros(())
    return terms


def weighted_sum(terms: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    return sum(weights[name] * value for name, value in terms.items())


def self_supervised_loss(stages: list[dict], images: torch.Tensor, extrinsics: torch.Tensor,
                         stage_weights=(1.0, 1.0, 1.0), weights: dict | None = None,
                         view_selection: str = "image", top_k: int = 3, ssim_views: int = 2,
                         feature_term: bool = True, depth_span: torch.Tensor | float | None = None,
                         ) -> tuple[torch.Tensor, dict[str, float]]:
    """The teacher loss over the network's stages (CascadeMVSNet output ``stages``):
    sum_i stage_weights[i] * weighted terms of stage i. Returns (loss, scalar metrics).
    ``depth_span`` ([B] max - min depth, or None for raw units): the smoothness's depth unit."""
    weights = {**TEACHER_WEIGHTS, **(weights or {})}
    total, metrics = images.new_zeros(()), {}
    for i, (stage, stage_weight) in enumerate(zip(stages, stage_weights)):
        terms = teacher_stage_terms(stage["depth"], images, stage["intrinsics"], extrinsics,
                                    stage.get("view_features") if feature_term else None, stage.get("log_var"),
                                    view_selection, top_k, ssim_views, depth_span)
        stage_loss = weighted_sum(terms, weights)
        total = total + stage_weight * stage_loss
        metrics[f"train/stage{i + 1}_loss"] = float(stage_loss.detach())
        for name, value in terms.items():
            metrics[f"train/stage{i + 1}_{name}"] = float(value.detach())
    return total, metrics


# --- student --------------------------------------------------------------------------------

def student_stage_terms(prob_volume: torch.Tensor, hypotheses: torch.Tensor, label_mu: torch.Tensor,
                        label_sigma: torch.Tensor, label_mask: torch.Tensor, min_sigma: float | torch.Tensor,
                        hard: bool = False, kl_direction: str = "student||label",
                        kl_form: str = "moments") -> dict[str, torch.Tensor]:
    """One stage's terms against labels of the stage's size [B,h,w]. ``kl_form``: "moments" compares
    the volume's mean and standard deviation with the label as two Gaussians; "discrete" compares the
    volume with the label's Gaussian put on the same hypotheses (distill.losses.discretised_gaussian_kl)."""
    if kl_form not in KL_FORMS:
        raise ValueError(f"KL form must be one of {KL_FORMS}, got {kl_form!r}")
    terms = {"ce": hypothesis_cross_entropy(prob_volume, hypotheses, label_mu, label_mask)}
    if not hard and kl_form == "discrete":
        terms["kl"] = discretised_gaussian_kl(prob_volume, hypotheses, label_mu, label_sigma, min_sigma, label_mask,
                                              kl_direction)
    elif not hard:
        mu, sigma = volume_moments(prob_volume, hypotheses)
        terms["kl"] = gaussian_kl(label_mu, label_sigma, mu, sigma, min_sigma, label_mask, kl_direction)
    return terms


def labelled_loss(stages: list[dict], label_mu: torch.Tensor, label_sigma: torch.Tensor,
                  label_mask: torch.Tensor, min_sigma: float | torch.Tensor,
                  stage_weights=(1.0, 1.0, 1.0), weights: dict | None = None,
                  hard: bool = False, kl_direction: str = "student||label",
                  stage_sigma_ratio: float | None = None,
                  kl_form: str = "moments") -> tuple[torch.Tensor, dict[str, float]]:
    """The student loss over the network's stages; labels [B,H,W] at full size, picked at each
    stage's pixels. ``min_sigma``: the sigma clamp, in depth units (scalar or [B,1,1]);
    ``stage_sigma_ratio``: also clamp at this fraction of each stage's own hypothesis spacing
    (per pixel), so that no stage is asked for a Gaussian narrower than its grid resolves."""
    weights = {**STUDENT_WEIGHTS, **(weights or {})}
    full_w = label_mu.shape[-1]
    total, metrics = label_mu.new_zeros(()), {}
    for i, (stage, stage_weight) in enumerate(zip(stages, stage_weights)):
        factor = full_w // stage["prob_volume"].shape[-1]
        mu, sigma, mask = (subsample_map(t, factor) for t in (label_mu, label_sigma, label_mask))
        floor = min_sigma
        if stage_sigma_ratio is not None and stage["hypotheses"].shape[1] > 1:
            spacing = (stage["hypotheses"][:, 1] - stage["hypotheses"][:, 0]).detach().abs().float()
            floor = torch.maximum(torch.as_tensor(min_sigma, dtype=torch.float32, device=spacing.device),
                                  stage_sigma_ratio * spacing)
        terms = student_stage_terms(stage["prob_volume"], stage["hypotheses"], mu.float(), sigma.float(),
                                    mask.bool(), floor, hard, kl_direction, kl_form)
        stage_loss = weighted_sum(terms, weights)
        total = total + stage_weight * stage_loss
        metrics[f"train/stage{i + 1}_loss"] = float(stage_loss.detach())
        for name, value in terms.items():
            metrics[f"train/stage{i + 1}_{name}"] = float(value.detach())
    return total, metrics
