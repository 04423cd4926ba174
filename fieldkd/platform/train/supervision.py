"""What a rendered batch is compared with: colour, and depth, normals and the
uncertainty head where they exist (MonoSDF's cues, UNIKD's uncertainty).

Pure functions of rendered rays and targets; :func:`supervised_loss` puts
them together with the weights of the config's ``supervision`` section, the
same way for real pixels and for a teacher's renders.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

DEPTH_MODES = ("ssi", "plain")
RGB_LOSSES = ("mse", "l1")


@dataclass
class Supervision:
    rgb: str = "mse"  # mse | l1
    depth: float = 0.0  # weight of the depth loss (0: off)
    depth_mode: str = "ssi"  # ssi: scale-and-shift invariant (monocular cues) | plain (metric depth)
    normal_l1: float = 0.0
    normal_cos: float = 0.0
    uncertainty: float = 1.0  # weight of the uncertainty head's loss, for fields that have one
    uncertainty_floor: float = 0.1  # the loss sees beta + floor (UNIKD's 0.1); see uncertainty_loss
    min_opacity: float = 0.5  # depth and normals are compared only on rays at least this opaque

    @classmethod
    def from_dict(cls, values: dict | None) -> "Supervision":
        known = {f.name for f in fields(cls)}
        unknown = set(values or {}) - known
        if unknown:
            raise ValueError(f"unknown supervision key(s) {sorted(unknown)}; accepted: {sorted(known)}")
        found = cls(**(values or {}))
        if found.rgb not in RGB_LOSSES:
            raise ValueError(f"supervision.rgb must be one of {RGB_LOSSES}, got {found.rgb!r}")
        if found.uncertainty_floor <= 0:
            raise ValueError(f"supervision.uncertainty_floor must be > 0, got {found.uncertainty_floor}")
        if found.depth_mode not in DEPTH_MODES:
            raise ValueError(f"supervision.depth_mode must be one of {DEPTH_MODES}, got {found.depth_mode!r}")
        return found


def scale_shift_fit(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares (s, t) with s * pred + t ~ target over the masked entries
    (the closed form of a 2x2 normal equation; s = 1, t = 0 when it is singular)."""
    m = mask.to(pred.dtype)
    a00, a01, a11 = (m * pred * pred).sum(), (m * pred).sum(), m.sum()
    b0, b1 = (m * pred * target).sum(), (m * target).sum()
    det = a00 * a11 - a01 * a01
    ok = det.abs() > 1e-12
    safe = torch.where(ok, det, torch.ones_like(det))
    scale = torch.where(ok, (a11 * b0 - a01 * b1) / safe, torch.ones_like(det))
    shift = torch.where(ok, (a00 * b1 - a01 * b0) / safe, torch.zeros_like(det))
    return scale, shift


def depth_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, mode: str = "plain") -> torch.Tensor:
    """Mean squared depth error over the masked rays; ``ssi`` first aligns the
    prediction to the target by the best scale and shift (monocular depth is
    known only up to both)."""
    if not bool(mask.any()):
        return pred.new_zeros(())
    if mode == "ssi":
        scale, shift = scale_shift_fit(pred, target, mask)
        pred = scale * pred + shift
    return ((pred - target) ** 2)[mask].mean()


def normal_losses(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(L1, 1 - cosine) between rendered normals, renormalised, and unit targets, (R, 3)."""
    if not bool(mask.any()):
        zero = pred.new_zeros(())
        return zero, zero
    unit = pred / pred.norm(dim=-1, keepdim=True).clamp(min=1e-6)
    unit, target = unit[mask], target[mask]
    return (unit - target).abs().sum(-1).mean(), (1.0 - (unit * target).sum(-1)).mean()


def uncertainty_loss(rgb: torch.Tensor, target: torch.Tensor, beta: torch.Tensor, floor: float = 0.1) -> torch.Tensor:
    """UNIKD's loss for the rendered uncertainty beta (R,) >= 0: large errors may be
    explained by a large beta, which the log term makes pay for itself.

    Its optimum is beta = sqrt(0.02 |error|) - floor, clipped at 0: with UNIKD's
    floor of 0.1 only errors above 0.5 raise beta, so a well-fit teacher says
    0 almost everywhere; a smaller floor lets beta follow smaller errors.
    """
    shifted = beta + floor
    return (0.01 * ((rgb - target).abs() / (2.0 * shifted[..., None] ** 2)).mean()
            + (torch.log(shifted).mean() + 3.0) / 2.0)


@dataclass
class Targets:
    """What rendered rays are compared with; depth and normals are optional."""

    rgb: torch.Tensor  # (R, 3)
    depth: torch.Tensor | None = None  # (R,) camera z-depth, 0 where unknown
    normal: torch.Tensor | None = None  # (R, 3) world-space unit normals, 0 where unknown
    valid: torch.Tensor | None = None  # (R,) bool: rays that count at all (None: every ray)


def supervised_loss(out: dict, targets: Targets, sup: Supervision, depth_mode: str | None = None):
    """Weighted sum of the terms that apply, and each term for logging."""
    valid = targets.valid if targets.valid is not None else torch.ones_like(out["opacity"], dtype=torch.bool)
    rgb = out["rgb"].float()
    if not bool(valid.any()):
        return rgb.sum() * 0.0, {}
    diff = rgb[valid] - targets.rgb[valid]
    colour = diff.abs().mean() if sup.rgb == "l1" else (diff**2).mean()
    loss, terms = colour, {"rgb": colour}
    solid = valid & (out["opacity"].detach() >= sup.min_opacity)
    if sup.depth > 0 and targets.depth is not None:
        known = solid & (targets.depth > 0)
        term = depth_loss(out["depth"].float(), targets.depth, known, depth_mode or sup.depth_mode)
        loss, terms["depth"] = loss + sup.depth * term, term
    if (sup.normal_l1 > 0 or sup.normal_cos > 0) and targets.normal is not None and "normal" in out:
        known = solid & (targets.normal.norm(dim=-1) > 0.5)
        l1, cos = normal_losses(out["normal"].float(), targets.normal, known)
        loss = loss + sup.normal_l1 * l1 + sup.normal_cos * cos
        terms.update(normal_l1=l1, normal_cos=cos)
    if sup.uncertainty > 0 and "uncertainty" in out:
        term = uncertainty_loss(rgb[valid], targets.rgb[valid], out["uncertainty"].float()[valid],
                                sup.uncertainty_floor)
        loss, terms["uncertainty"] = loss + sup.uncertainty * term, term
    return loss, terms
