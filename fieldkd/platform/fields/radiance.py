"""The common interface of every radiance field, and the shared
``encoder -> 16-d feature -> density + colour heads`` form."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from .activations import density_activation as get_density_activation
from .heads import ColourHead, UncertaintyHead
from .output import FEATURE_DIM, FieldOutput


def as_aabb(aabb) -> torch.Tensor:
    """Anything tensor-like with 6 numbers -> float32 (2, 3) [min; max]."""
    box = torch.as_tensor(aabb, dtype=torch.float32).reshape(2, 3).clone()
    if not bool((box[1] > box[0]).all()):
        raise ValueError(f"aabb needs max > min on every axis, got {box.tolist()}")
    return box


class RadianceField(nn.Module, ABC):
    """Maps world points x (N, 3) and unit view directions d (N, 3) to
    density and colour; see :class:`FieldOutput`.

    Inputs are normalised to u in [0, 1]^3 by the scene box ``aabb``;
    subclasses see only (clamped) u. Points outside the box get density 0.

    Learning rates: ``param_groups(lr)`` treats ``lr`` as the network lr;
    grid-like parameters (hash tables, planes, lines, voxels) get
    ``lr * grid_lr_scale`` because they are sparse, per-location parameters
    that each see few samples per step.
    """

    has_feature: bool = True
    feature_dim: int = FEATURE_DIM
    backend: str = "torch"  # recorded by callers as the MLflow tag fieldkd.backend

    def __init__(self, aabb, *, density_activation: str = "trunc_exp", grid_lr_scale: float = 1.0):
        super().__init__()
        self.register_buffer("aabb", as_aabb(aabb))
        self.density_activation = density_activation
        self._activate = get_density_activation(density_activation)
        self.grid_lr_scale = float(grid_lr_scale)

    # -- hooks for subclasses -------------------------------------------------

    @abstractmethod
    def _raw_density(self, u: torch.Tensor) -> torch.Tensor:
        """u (N, 3) in [0, 1] -> (N,) raw density; the cheapest path there is."""

    @abstractmethod
    def _evaluate(self, u: torch.Tensor, d: torch.Tensor):
        """u (N, 3) in [0, 1], d (N, 3) -> (raw density (N,), rgb (N, 3), feature or None)."""

    def grid_parameters(self) -> list[nn.Parameter]:
        """Grid-like parameters, which take lr * grid_lr_scale."""
        return []

    def regularization(self) -> torch.Tensor:
        """Weighted sum of the field's own regularisers (a scalar)."""
        return self.aabb.new_zeros(())

    def _extras(self, u: torch.Tensor, feature: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Per-sample extras (see :class:`FieldOutput`); none by default."""
        return {}

    @property
    def extra_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name -> per-sample shape of every extra ``forward`` returns, known
        without evaluating (the renderer fills a batch without samples)."""
        return {}

    # -- public API -----------------------------------------------------------

    def normalize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """World points (N, 3) -> (u clamped to [0, 1]^3, inside-the-box mask (N,))."""
        lo, hi = self.aabb[0], self.aabb[1]
        u = (x - lo) / (hi - lo)
        inside = ((u >= 0) & (u <= 1)).all(dim=-1)
        return u.clamp(0.0, 1.0), inside

    def _masked_density(self, raw: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
        # where() rather than a product: exp(raw) may be inf, and inf * 0 is NaN.
        return torch.where(inside, self._activate(raw), torch.zeros_like(raw))

    def forward(self, x: torch.Tensor, d: torch.Tensor) -> FieldOutput:
        lead = x.shape[:-1]
        u, inside = self.normalize(x.reshape(-1, 3))
        raw, rgb, feature = self._evaluate(u, d.reshape(-1, 3))
        density = self._masked_density(raw, inside)
        extras = {k: v.reshape(*lead, *v.shape[1:]) for k, v in self._extras(u, feature).items()}
        if feature is not None:
            feature = feature.reshape(*lead, feature.shape[-1])
        return FieldOutput(raw.reshape(lead), density.reshape(lead), rgb.reshape(*lead, 3), feature, extras)

    def density(self, x: torch.Tensor) -> torch.Tensor:
        """Density only (no colour), e.g. for occupancy-grid updates."""
        lead = x.shape[:-1]
        u, inside = self.normalize(x.reshape(-1, 3))
        return self._masked_density(self._raw_density(u), inside).reshape(lead)

    def param_groups(self, lr: float) -> list[dict]:
        """Optimizer groups: {"name": "grid", lr * grid_lr_scale} for grid-like
        parameters and {"name": "network", lr} for the rest; empty groups are left out."""
        grid_ids = {id(p) for p in self.grid_parameters()}
        grid = [p for p in self.parameters() if id(p) in grid_ids]
        network = [p for p in self.parameters() if id(p) not in grid_ids]
        groups = []
        if grid:
            groups.append({"name": "grid", "params": grid, "lr": lr * self.grid_lr_scale})
        if network:
            groups.append({"name": "network", "params": network, "lr": lr})
        return groups


class FeatureField(RadianceField):
    """A field whose encoder yields the shared 16-d feature: element 0 is the
    raw density, elements 1..15 feed the colour head with the view direction.

    ``uncertainty=True`` adds UNIKD's uncertainty head on the 16-d feature
    (extras["uncertainty"]); every other parameter and output is the same
    with it on or off, and off the field is exactly what it was without it.
    """

    def __init__(self, aabb, *, color_layers: int = 3, color_hidden: int = 64,
                 dir_encoding: str = "sh", dir_degree: int = 3, density_bias: float = -2.0,
                 uncertainty: bool = False, **base):
        super().__init__(aabb, **base)
        self.colour = ColourHead(FEATURE_DIM - 1, dir_encoding, dir_degree, color_layers, color_hidden)
        self.uncertainty_head = UncertaintyHead.optional(uncertainty, FEATURE_DIM)
        # A constant added to the raw density so that a fresh field starts nearly
        # transparent: empty space is then culled by the occupancy grid from the
        # first updates instead of being fogged over and learned away slowly.
        offset = torch.zeros(FEATURE_DIM)
        offset[0] = density_bias
        self.register_buffer("feature_offset", offset)

    @abstractmethod
    def encode_feature(self, u: torch.Tensor) -> torch.Tensor:
        """u (N, 3) in [0, 1] -> (N, 16) feature."""

    def _raw_density(self, u: torch.Tensor) -> torch.Tensor:
        return self.encode_feature(u)[..., 0] + self.feature_offset[0]

    def _evaluate(self, u: torch.Tensor, d: torch.Tensor):
        feature = self.encode_feature(u) + self.feature_offset
        return feature[..., 0], self.colour(feature[..., 1:], d), feature

    def _extras(self, u: torch.Tensor, feature: torch.Tensor | None) -> dict[str, torch.Tensor]:
        return {} if self.uncertainty_head is None else {"uncertainty": self.uncertainty_head(feature)}

    @property
    def extra_shapes(self) -> dict[str, tuple[int, ...]]:
        return {} if self.uncertainty_head is None else {"uncertainty": ()}


def to_signed(u: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1], the range grid_sample and NeRF's encoding expect."""
    return u * 2.0 - 1.0
