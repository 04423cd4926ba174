"""Proposal sampling: small density networks decide where along a ray the field is asked.

An alternative to the occupancy grid (``render.sampler=proposal``) for scenes without a
tight box (rooms, loose boxes): instead of culling a fixed march with a grid over the box,
each ray is first sampled evenly, a cheap proposal network's density there gives a
histogram of weights, and the next level's samples are drawn from that histogram by
inverse-CDF resampling; the last histogram places the field's samples. This is the
scheme of mip-NeRF 360 (and of nerfacto and K-Planes, which DaC's official code uses).

A proposal network sees no colour and no image: it learns from the interlevel loss, its
histogram must cover the final weights (detached), so that the field's samples land
where the field puts its mass. In distillation (DaC) the teacher's weights take the
final weights' place (the ``interlevel`` term, distill/terms.py).

The math is in pure functions (:func:`uniform_edges`, :func:`resample_edges`,
:func:`histogram_weights`), tested against closed-form cases.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..fields.activations import trunc_exp
from ..fields.encodings.hashgrid import HashGridConfig, TorchHashGrid
from .composite import composite


# ---------------------------------------------------------------------------------------------
# pure math on interval edges (R, K+1) and weights (R, K)

def _quantiles(n_edges: int, n_rays: int, jitter: bool, device):
    """(R, n_edges) increasing levels in [0, 1], 0 and 1 included so the samples span the
    histogram's support; with ``jitter`` each inner level moves uniformly within half a step
    either side (stratified, and still increasing)."""
    u = torch.linspace(0.0, 1.0, n_edges, device=device).expand(n_rays, n_edges).clone()
    if jitter and n_edges > 2:
        step = 1.0 / (n_edges - 1)
        u[:, 1:-1] += (torch.rand(n_rays, n_edges - 2, device=device) - 0.5) * step
    return u


def uniform_edges(t_near: torch.Tensor, t_far: torch.Tensor, n_samples: int, jitter: bool = False) -> torch.Tensor:
    """n_samples intervals spanning [t_near, t_far] (R,): edges (R, n_samples + 1), even
    unless jittered."""
    u = _quantiles(n_samples + 1, t_near.shape[0], jitter, t_near.device)
    return t_near[:, None] + (t_far - t_near)[:, None] * u


def resample_edges(edges: torch.Tensor, weights: torch.Tensor, n_samples: int, *, jitter: bool = False,
                   padding: float = 0.0) -> torch.Tensor:
    """Inverse-CDF resampling: n_samples intervals (edges (R, n_samples + 1)) whose density
    follows the piecewise-constant PDF of ``weights`` (R, K) over ``edges`` (R, K+1).

    Each interval of the result holds an equal share of the histogram's mass: where the
    weights are high the new intervals are short. ``padding`` is added to every weight first,
    so no part of the ray is left out entirely; a ray whose weights sum to zero is resampled
    evenly. The result carries no gradient to the weights.
    """
    edges, weights = edges.detach().float(), weights.detach().float() + padding
    n_rays, n_bins = weights.shape
    total = weights.sum(dim=-1, keepdim=True)
    weights = torch.where(total > 0, weights, torch.ones_like(weights))
    cumulative = torch.cumsum(weights, dim=-1)
    # Divided by its own last entry: exactly 1 at the end, and exactly 1 after the last bin with mass.
    cdf = torch.cat([weights.new_zeros(n_rays, 1), cumulative / cumulative[:, -1:]], dim=-1)
    u = _quantiles(n_samples + 1, n_rays, jitter, edges.device)
    # Q(u) = the first edge where the CDF reaches u; for u = 0 the last edge where it is still 0,
    # so that bins without mass before the support are skipped too.
    above = torch.where(u > 0, torch.searchsorted(cdf, u, right=False), torch.searchsorted(cdf, u, right=True))
    above = above.clamp(1, n_bins)
    below = above - 1
    cdf_lo, cdf_hi = cdf.gather(-1, below), cdf.gather(-1, above)
    t_lo, t_hi = edges.gather(-1, below), edges.gather(-1, above)
    span = cdf_hi - cdf_lo
    frac = torch.where(span > 0, (u - cdf_lo) / span.clamp(min=1e-12), torch.zeros_like(u)).clamp(0.0, 1.0)
    return t_lo + frac * (t_hi - t_lo)


def histogram_weights(densities: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Volume-rendering weights (R, K) of densities (R, K) over intervals ``edges`` (R, K+1):
    the histogram a proposal level gives the next one."""
    return composite(densities, edges[:, :-1], edges[:, 1:])["weights"]


def midpoints(edges: torch.Tensor) -> torch.Tensor:
    return 0.5 * (edges[:, :-1] + edges[:, 1:])


# ---------------------------------------------------------------------------------------------
# the proposal networks and the estimator

@dataclass(frozen=True)
class ProposalConfig:
    samples: tuple[int, ...] = (64,)  # samples of each proposal level (one or two levels)
    final_samples: int = 48  # samples the field sees per ray
    resolution: int = 128  # finest level of each network's hash grid
    log2_hashmap_size: int = 16
    padding: float = 0.01  # added to every histogram weight before resampling
    density_bias: float = -2.0  # a fresh network is nearly transparent: its first proposals are even

    def __post_init__(self):
        if not 1 <= len(self.samples) <= 2 or min(self.samples) < 1:
            raise ValueError(f"render.proposal_samples: one or two levels of >= 1 samples, got {list(self.samples)}")
        if self.final_samples < 1:
            raise ValueError(f"render.proposal_final_samples must be >= 1, got {self.final_samples}")


class ProposalDensity(nn.Module):
    """A small density-only network: a 5-level hash grid over the scene box and one hidden layer
    of 16, density through exp (as nerfacto's proposal networks). Zero outside the box."""

    def __init__(self, aabb: torch.Tensor, resolution: int, log2_hashmap_size: int, density_bias: float):
        super().__init__()
        self.register_buffer("aabb", aabb.float().clone())
        config = HashGridConfig(n_levels=5, n_features_per_level=2, log2_hashmap_size=log2_hashmap_size,
                                base_resolution=16, max_resolution=max(int(resolution), 17))
        self.encoding = TorchHashGrid(config)
        self.mlp = nn.Sequential(nn.Linear(config.out_dim, 16), nn.ReLU(), nn.Linear(16, 1))
        self.density_bias = float(density_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        u = (x.reshape(-1, 3) - self.aabb[0]) / (self.aabb[1] - self.aabb[0])
        inside = ((u >= 0) & (u <= 1)).all(dim=-1)
        raw = self.mlp(self.encoding(u.clamp(0.0, 1.0)))[:, 0] + self.density_bias
        return torch.where(inside, trunc_exp(raw), torch.zeros_like(raw)).reshape(lead)


@dataclass
class Proposals:
    """What sampling a batch of rays gave: the field's intervals and each proposal level's histogram."""

    edges: torch.Tensor  # (R, final_samples + 1), detached
    levels: list[tuple[torch.Tensor, torch.Tensor]]  # per level: edges (R, K+1), weights (R, K) with gradient


class ProposalSampler(nn.Module):
    """One proposal network per level; :meth:`sample` places the field's samples,
    :meth:`loss` trains the networks against the weights the samples got."""

    def __init__(self, aabb: torch.Tensor, config: ProposalConfig | None = None):
        super().__init__()
        self.cfg = config or ProposalConfig()
        self.nets = nn.ModuleList(
            ProposalDensity(aabb, self.cfg.resolution, self.cfg.log2_hashmap_size, self.cfg.density_bias)
            for _ in self.cfg.samples)

    def sample(self, origins: torch.Tensor, directions: torch.Tensor, t_near: torch.Tensor, t_far: torch.Tensor,
               jitter: bool) -> Proposals:
        """Even samples on [t_near, t_far], then each level's histogram resampled into the next."""
        levels = []
        edges = weights = None
        for net, n in zip(self.nets, self.cfg.samples):
            edges = (uniform_edges(t_near, t_far, n, jitter) if weights is None else
                     resample_edges(edges, weights, n, jitter=jitter, padding=self.cfg.padding))
            points = origins[:, None, :] + directions[:, None, :] * midpoints(edges)[..., None]
            weights = histogram_weights(net(points), edges)
            levels.append((edges, weights))
        final = resample_edges(edges, weights, self.cfg.final_samples, jitter=jitter, padding=self.cfg.padding)
        return Proposals(final, levels)

    @staticmethod
    def loss(levels: list[tuple[torch.Tensor, torch.Tensor]], edges: torch.Tensor,
             weights: torch.Tensor) -> torch.Tensor:
        """Sum over levels of the interlevel loss: each level's histogram must cover ``weights``
        (R, S) over ``edges`` (R, S+1), which are detached (only the proposal networks learn)."""
        # Imported here: the distill package imports the renderer, which imports this module.
        from ..distill.losses import interlevel_loss

        total = weights.new_zeros(())
        for level_edges, level_weights in levels:
            total = total + interlevel_loss(level_edges, level_weights, edges.detach(), weights.detach())
        return total

    def param_groups(self, lr: float) -> list[dict]:
        return [{"name": "proposal", "params": list(self.parameters()), "lr": lr}]
