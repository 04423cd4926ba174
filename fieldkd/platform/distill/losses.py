"""Distillation losses: pure functions of student and teacher tensors.

Every loss takes the student's value first and the teacher's (the target)
second. The target is detached inside each function, so gradients reach the
student only, whatever the caller passes. ``kind`` picks the norm of the
difference:

- ``mse``: mean of squares;
- ``l1``: mean of absolute values;
- ``norm_l2``: the Euclidean norm of the whole difference (PVD's default,
  ``normL2``; it grows with the square root of the number of elements);
- ``norm_l1``: the sum of absolute values;
- ``smooth_l1``: Huber with beta 0.05, averaged.

Per-sample losses take tensors of the samples to compare (already selected by
the caller's masks); an optional ``mask`` selects further.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..render.composite import alphas_from_densities

KINDS = ("mse", "l1", "norm_l2", "norm_l1", "smooth_l1")
DENSITY_CLIP = (-2.0, 7.0)  # PVD's density range constraint on the raw (pre-activation) density


def difference(student: torch.Tensor, target: torch.Tensor, kind: str = "mse",
               mask: torch.Tensor | None = None) -> torch.Tensor:
    """Scalar size of ``student - target`` (target detached); 0 for empty input."""
    if kind not in KINDS:
        raise ValueError(f"unknown loss kind {kind!r}; choose one of {KINDS}")
    if student.shape != target.shape:
        raise ValueError(f"student {tuple(student.shape)} and teacher {tuple(target.shape)} differ in shape")
    student, target = student.float(), target.detach().float()
    if mask is not None:
        student, target = student[mask], target[mask]
    if student.numel() == 0:
        return student.sum() * 0.0  # keeps the graph (and the device) without a NaN mean
    diff = student - target
    if kind == "mse":
        return diff.square().mean()
    if kind == "l1":
        return diff.abs().mean()
    if kind == "norm_l2":
        return torch.linalg.vector_norm(diff)
    if kind == "norm_l1":
        return diff.abs().sum()
    return F.smooth_l1_loss(student, target, beta=0.05)


def feature_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str = "mse", mask=None) -> torch.Tensor:
    """Intermediate 16-d feature, (N, 16) each."""
    return difference(student, teacher, kind, mask)


def clip_density(raw: torch.Tensor, clip: tuple[float, float] | None = DENSITY_CLIP) -> torch.Tensor:
    return raw if clip is None else raw.clamp(clip[0], clip[1])


def density_loss(student_raw: torch.Tensor, teacher_raw: torch.Tensor, kind: str = "mse",
                 clip: tuple[float, float] | None = DENSITY_CLIP, saturate: bool = False,
                 mask=None) -> torch.Tensor:
    """Pre-activation density (N,) each; the teacher's is clipped to ``clip`` first.

    Unclipped, the very negative raw densities of empty space (and the huge
    ones inside solid matter) dominate the loss while changing nothing that a
    render shows. With ``saturate`` a student beyond the clip on the same side
    as its clipped teacher is not penalised either (only the wrong side is), so
    the student is not pulled up to the clip value in empty space.
    """
    target = clip_density(teacher_raw.detach(), clip)
    if saturate and clip is not None:
        lo, hi = clip
        student_raw = torch.where((target <= lo) & (student_raw < lo), target, student_raw)
        student_raw = torch.where((target >= hi) & (student_raw > hi), target, student_raw)
        # Where replaced, the difference is exactly 0 and carries no gradient.
    return difference(student_raw, target, kind, mask)


def colour_loss(student_rgb: torch.Tensor, teacher_rgb: torch.Tensor, kind: str = "mse", mask=None) -> torch.Tensor:
    """Per-sample colour, (N, 3) each."""
    return difference(student_rgb, teacher_rgb, kind, mask)


def sample_alphas(densities: torch.Tensor, t_starts: torch.Tensor, t_ends: torch.Tensor) -> torch.Tensor:
    """Opacity of each interval, 1 - exp(-sigma * delta): what the renderer composites."""
    return alphas_from_densities(densities, t_ends - t_starts)


def alpha_loss(student_alpha: torch.Tensor, teacher_alpha: torch.Tensor, kind: str = "mse", mask=None) -> torch.Tensor:
    """Per-sample alpha (opacity of its interval), any shape."""
    return difference(student_alpha, teacher_alpha, kind, mask)


def rgb_loss(student_rgb: torch.Tensor, teacher_rgb: torch.Tensor, kind: str = "mse", mask=None) -> torch.Tensor:
    """Rendered colour per ray, (R, 3) each."""
    return difference(student_rgb, teacher_rgb, kind, mask)


def depth_loss(student_depth: torch.Tensor, teacher_depth: torch.Tensor, kind: str = "mse", mask=None) -> torch.Tensor:
    """Rendered depth per ray, (R,) each. Pass ``mask`` (e.g. teacher opacity > 0.5)
    to leave out rays that see background, whose depth means nothing."""
    return difference(student_depth, teacher_depth, kind, mask)


def outer_envelope(t_target: torch.Tensor, t_env: torch.Tensor, w_env: torch.Tensor) -> torch.Tensor:
    """For each target interval, the total weight of the ``env`` intervals that overlap it.

    t_target (R, T+1) and t_env (R, E+1): sorted interval edges per ray;
    w_env (R, E): weights of the env intervals. Returns (R, T).
    An env interval [a, b) overlaps [lo, hi) when a < hi and b > lo.
    """
    cum = torch.cat([torch.zeros_like(w_env[..., :1]), torch.cumsum(w_env, dim=-1)], dim=-1)  # (R, E+1)
    lo, hi = t_target[..., :-1].contiguous(), t_target[..., 1:].contiguous()
    n_env = w_env.shape[-1]
    # First env interval that overlaps: the first whose end is > lo.
    first = torch.searchsorted(t_env[..., 1:].contiguous(), lo, right=True).clamp(max=n_env)
    # One past the last that overlaps: the number of env intervals whose start is < hi.
    last = torch.searchsorted(t_env[..., :-1].contiguous(), hi, right=False).clamp(max=n_env)
    last = torch.maximum(last, first)
    return torch.gather(cum, -1, last) - torch.gather(cum, -1, first)


def interlevel_loss(t_student: torch.Tensor, w_student: torch.Tensor, t_teacher: torch.Tensor,
                    w_teacher: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Histogram (proposal-style) loss: the student's weights must cover the teacher's.

    Edges t_* (R, K+1), weights w_* (R, K). For each teacher interval the
    student's outer envelope (the summed student weight of every student
    interval overlapping it) should be at least the teacher weight there;
    shortfalls cost ``max(0, w_t - envelope)^2 / (w_t + eps)``, summed over
    intervals and averaged over rays, as in mip-NeRF 360's proposal loss. On
    identical intervals the envelope is the student's own weight. The
    teacher's weights are detached.
    """
    w_teacher = w_teacher.detach().float()
    if w_teacher.numel() == 0:
        return w_student.sum() * 0.0
    envelope = outer_envelope(t_teacher.detach().float(), t_student.detach().float(), w_student.float())
    shortfall = (w_teacher - envelope).clamp(min=0.0)
    return (shortfall.square() / (w_teacher + eps)).sum(dim=-1).mean()


def interval_edges(t_starts: torch.Tensor, t_ends: torch.Tensor) -> torch.Tensor:
    """(R, S) contiguous starts and ends -> (R, S+1) edges."""
    return torch.cat([t_starts, t_ends[..., -1:]], dim=-1)


# Depth-distribution terms of a multi-view stereo student (KD-MVS): the label at
# each pixel is a Gaussian (mu, sigma) over depth; the student's is read off its
# probability volume over the depth hypotheses.

MIN_SIGMA = 1e-2  # in depth units: keeps 1 / sigma^2 finite where a label or a peaked volume has sigma = 0
MIN_PROB = 1e-8  # probabilities are clamped to this before the log


def _masked_mean(values: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    if values.numel() == 0:
        return anchor.sum() * 0.0  # keeps the graph (and the device) without a NaN mean
    return values.mean()


def volume_moments(prob_volume: torch.Tensor, hypotheses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of depth under a probability volume.

    ``prob_volume`` and ``hypotheses`` are (B, D, H, W): the probability of each
    of the D depth hypotheses at each pixel (summing to 1 over D) and its depth.
    Returns (B, H, W) each. The variance is clamped to a tiny positive value
    before the square root, whose gradient at 0 is infinite (a one-hot volume).
    """
    prob, depth = prob_volume.float(), hypotheses.float()
    mean = (prob * depth).sum(dim=1)
    var = (prob * (depth - mean[:, None]).square()).sum(dim=1)
    return mean, var.clamp(min=1e-12).sqrt()


def gaussian_kl_map(mu_p: torch.Tensor, sigma_p: torch.Tensor, mu_q: torch.Tensor, sigma_q: torch.Tensor,
                    min_sigma: float | torch.Tensor = MIN_SIGMA) -> torch.Tensor:
    """Elementwise KL(N(mu_p, sigma_p^2) || N(mu_q, sigma_q^2)), both sigmas clamped below at ``min_sigma``:
    log(sigma_q / sigma_p) + (sigma_p^2 + (mu_p - mu_q)^2) / (2 sigma_q^2) - 1/2."""
    sigma_p, sigma_q = sigma_p.float().clamp(min=min_sigma), sigma_q.float().clamp(min=min_sigma)
    return (torch.log(sigma_q) - torch.log(sigma_p)
            + (sigma_p.square() + (mu_p.float() - mu_q.float()).square()) / (2.0 * sigma_q.square()) - 0.5)


KL_DIRECTIONS = ("student||label", "label||student")


def gaussian_kl(mu_p: torch.Tensor, sigma_p: torch.Tensor, mu_q: torch.Tensor, sigma_q: torch.Tensor,
                min_sigma: float | torch.Tensor = MIN_SIGMA, mask: torch.Tensor | None = None,
                direction: str = "student||label") -> torch.Tensor:
    """Mean over the ``mask``ed pixels of a KL between the label p = N(mu_p, sigma_p^2) and the
    student q = N(mu_q, sigma_q^2).

    Unlike the other losses here the *target comes first*; p (the label) is detached.
    ``direction``:

    - ``"student||label"`` (KD-MVS's official code, with sigma^2 where it has sigma):
      log(sigma_p / sigma_q) + (sigma_q^2 + (mu_q - mu_p)^2) / (2 sigma_p^2) - 1/2, i.e. the
      student's expected squared distance to the label's mean in units of the label's variance,
      minus the log of its spread. On a grid of depth hypotheses its minimum puts the mass on the
      hypotheses nearest mu_p, as the cross-entropy does; the divisor is the label's variance, a
      constant of the data, so the gradient's scale does not depend on the student.
    - ``"label||student"``: the divisor is the *student's* variance, and for a mean it cannot
      reach (mu_p between two coarse hypotheses, or outside a cascade stage's window) the minimum
      is a student as broad as the miss, sigma_q^2 = sigma_p^2 + (mu_q - mu_p)^2; the gradient
      grows as 1 / sigma_q^3 where the student is sharp. Kept for comparison.

    ``min_sigma``: a number, or a tensor that broadcasts to the maps (e.g. [B,1,1], one per
    sample). Pixels are selected before the formula, so invalid labels (NaN, 0) outside the mask
    never reach the gradient.
    """
    if direction not in KL_DIRECTIONS:
        raise ValueError(f"KL direction must be one of {KL_DIRECTIONS}, got {direction!r}")
    mu_p, sigma_p = mu_p.detach(), sigma_p.detach()
    if torch.is_tensor(min_sigma):  # per sample ([B,1,1]) or per pixel: selected with the pixels
        min_sigma = torch.broadcast_to(min_sigma.detach().float(), mu_q.shape)
    if mask is not None:
        mask = mask.bool()
        mu_p, sigma_p, mu_q, sigma_q = mu_p[mask], sigma_p[mask], mu_q[mask], sigma_q[mask]
        if torch.is_tensor(min_sigma):
            min_sigma = min_sigma[mask]
    if direction == "student||label":
        values = gaussian_kl_map(mu_q, sigma_q, mu_p, sigma_p, min_sigma)
    else:
        values = gaussian_kl_map(mu_p, sigma_p, mu_q, sigma_q, min_sigma)
    return _masked_mean(values, mu_q)


def discretised_gaussian(hypotheses: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor,
                         min_sigma: float | torch.Tensor = MIN_SIGMA) -> torch.Tensor:
    """The Gaussian N(mu, sigma^2) as a distribution over depth hypotheses (B, D, H, W), ascending
    along D: each hypothesis gets the Gaussian's mass between the midpoints to its neighbours,
    the first and the last also the tails beyond them, so the D values sum to 1 whatever the
    spacing. ``mu``, ``sigma`` (B, H, W); sigma clamped below at ``min_sigma`` (a number, or a
    tensor that broadcasts to the maps)."""
    hyp = hypotheses.detach().float()
    sigma = torch.maximum(sigma.detach().float(), torch.as_tensor(min_sigma, dtype=torch.float32,
                                                                   device=sigma.device))
    edges = 0.5 * (hyp[:, 1:] + hyp[:, :-1])  # (B, D-1, H, W)
    cdf = torch.special.ndtr((edges - mu.detach().float()[:, None]) / sigma[:, None])
    zeros, ones = torch.zeros_like(cdf[:, :1]), torch.ones_like(cdf[:, :1])
    cdf = torch.cat([zeros, cdf, ones], dim=1)
    return (cdf[:, 1:] - cdf[:, :-1]).clamp_min(0.0)


def discretised_gaussian_kl(prob_volume: torch.Tensor, hypotheses: torch.Tensor, mu: torch.Tensor,
                            sigma: torch.Tensor, min_sigma: float | torch.Tensor = MIN_SIGMA,
                            mask: torch.Tensor | None = None, direction: str = "student||label",
                            min_prob: float = MIN_PROB) -> torch.Tensor:
    """Mean over the ``mask``ed pixels of a KL between the label N(mu, sigma^2) put on the volume's
    own hypotheses (:func:`discretised_gaussian`, t) and the student's volume q (B, D, H, W).

    Unlike :func:`gaussian_kl`, which compares the volume's mean and standard deviation with the
    label's as two continuous Gaussians, this compares distributions over the same hypotheses, so
    its minimum, 0 at q = t, is one the volume can reach at any spacing: where the label is much
    narrower than the spacing t is one-hot at the nearest hypothesis (the cross-entropy's target),
    and where it is as wide as the spacing t spreads over the neighbours, whose soft-argmin then
    lands between them near mu. (The moments' KL asks a coarse volume for a Gaussian it cannot
    hold: a mean between two hypotheses with a spread below their spacing.)

    ``direction``: ``"student||label"``, sum q log(q / t) (the official direction; t clamped at
    ``min_prob`` in the log), or ``"label||student"``, sum t log(t / q) (q clamped at ``min_prob``).
    The label is detached.
    """
    if direction not in KL_DIRECTIONS:
        raise ValueError(f"KL direction must be one of {KL_DIRECTIONS}, got {direction!r}")
    if torch.is_tensor(min_sigma):
        min_sigma = torch.broadcast_to(min_sigma.detach().float().to(mu.device), mu.shape)
    target = discretised_gaussian(hypotheses, mu, sigma, min_sigma)
    q = prob_volume.float()
    if direction == "student||label":
        values = (q * (torch.log(q.clamp_min(min_prob)) - torch.log(target.clamp_min(min_prob)))).sum(1)
    else:
        values = (torch.xlogy(target, target) - target * torch.log(q.clamp_min(min_prob))).sum(1)
    if mask is not None:
        values = values[mask.bool()]
    return _masked_mean(values, q)


def hypothesis_cross_entropy(volume: torch.Tensor, hypotheses: torch.Tensor, target_depth: torch.Tensor,
                             mask: torch.Tensor | None = None, *, log_probs: bool = False,
                             min_prob: float = MIN_PROB) -> torch.Tensor:
    """Cross-entropy of a (B, D, H, W) volume against the hypothesis nearest to ``target_depth`` (B, H, W).

    ``volume`` holds probabilities (clamped below at ``min_prob`` before the
    log, so a zero at the target costs -log(min_prob), not infinity) or, with
    ``log_probs``, log-probabilities (e.g. ``log_softmax`` of the cost logits,
    the safer form). Mean of -log p(nearest) over the ``mask``ed pixels; the
    target picks an index only, so no gradient reaches it.
    """
    logp = volume.float() if log_probs else torch.log(volume.float().clamp(min=min_prob))
    nearest = (hypotheses.detach().float() - target_depth.detach().float()[:, None]).abs().argmin(dim=1, keepdim=True)
    nll = -torch.gather(logp, 1, nearest).squeeze(1)
    if mask is not None:
        nll = nll[mask.bool()]
    return _masked_mean(nll, logp)
