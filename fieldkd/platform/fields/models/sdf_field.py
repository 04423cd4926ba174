"""Neural SDF field (VolSDF / MonoSDF): an MLP gives a signed distance and a
geometry feature; the density is VolSDF's Laplace density of the distance and
the colour comes from an IDR-style head that also sees the normal.

Units. The trunk works on p = (x - centre) / half, where ``half`` is the box's
largest half-extent, so the box lies in [-1, 1]^3 whatever the scene's units;
``init_radius`` and ``beta_init`` are in these units. The SDF it reports
(``sdf``, ``raw_density = -sdf``) is in world units, so |grad sdf| = 1 in the
world, normals are world-space, and the density is per world unit of length.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...render.sdf_density import laplace_density
from ..backend import pick_hash_backend
from ..encodings.frequency import FrequencyEncoding
from ..encodings.hash_encoders import make_hash_grid
from ..encodings.hashgrid import HashGridConfig
from ..heads import ColourHead, UncertaintyHead
from ..nets import SDFMLP
from ..output import FieldOutput
from ..radiance import RadianceField
from ..regularizers import eikonal_loss, smoothness_loss
from ..registry import register_field

ENCODINGS = ("frequency", "hash")


@register_field("sdf")
class SDFField(RadianceField):
    """Config (defaults in conf/field/sdf.yaml): trunk ``depth`` x ``width`` with
    ``skips``, ``n_frequencies`` of positional encoding, ``encoding`` frequency
    or hash (hash grid + frequency encoding, MonoSDF's grid variant, with the
    hash field's grid keys); geometric init to a sphere of ``init_radius``
    (``inside_out``: free space inside it, for cameras inside a room); Laplace
    density with learnable beta = |param| + ``beta_min``, starting at
    ``beta_init``; ``eikonal_weight`` and ``smooth_weight`` at ``reg_points``
    random points; optional ``uncertainty`` head.

    Extras: "normal" (N, 3) always, "uncertainty" (N,) with the option.
    """

    has_feature = True

    def __init__(self, aabb, *, encoding: str = "frequency", n_frequencies: int = 6, depth: int = 4,
                 width: int = 64, skips: Sequence[int] = (2,), feature_dim: int = 15,
                 init_radius: float = 0.6, inside_out: bool = False,
                 beta_init: float = 0.1, beta_min: float = 1e-4,
                 color_layers: int = 3, color_hidden: int = 64, dir_encoding: str = "sh", dir_degree: int = 3,
                 uncertainty: bool = False, eikonal_weight: float = 0.1, smooth_weight: float = 0.005,
                 reg_points: int = 1024, smooth_eps: float = 0.005,
                 backend: str = "torch", n_levels: int = 16, n_features_per_level: int = 2,
                 log2_hashmap_size: int = 17, base_resolution: int = 16, max_resolution: int | None = 512,
                 grid_lr_scale: float = 1.0):
        super().__init__(aabb, grid_lr_scale=grid_lr_scale)
        if encoding not in ENCODINGS:
            raise ValueError(f"unknown SDF encoding {encoding!r}; choose one of {ENCODINGS}")
        if beta_init <= beta_min:
            raise ValueError(f"beta_init ({beta_init}) must exceed beta_min ({beta_min})")
        self.density_activation = "laplace"
        self.feature_dim = int(feature_dim)
        self.inside_out = bool(inside_out)
        self.frequency = FrequencyEncoding(3, n_frequencies)
        in_dim = self.frequency.out_dim
        self.grid = None
        if encoding == "hash":
            self.backend = pick_hash_backend(backend)
            self.grid_config = HashGridConfig(n_levels, n_features_per_level, log2_hashmap_size,
                                              base_resolution, max_resolution)
            self.grid = make_hash_grid(self.grid_config, self.backend)
            in_dim += self.grid_config.out_dim
        # Inputs are [p, encoding of p, grid features]: p first, as the geometric init expects.
        self.trunk = SDFMLP(in_dim, 1 + self.feature_dim, width, depth, tuple(skips), init_radius, inside_out)
        # IDR's colour network: point, normal and geometry feature with the view direction.
        self.colour = ColourHead(3 + 3 + self.feature_dim, dir_encoding, dir_degree, color_layers, color_hidden)
        self.uncertainty_head = UncertaintyHead.optional(uncertainty, self.feature_dim)
        self.beta_min = float(beta_min)
        self.beta_param = nn.Parameter(torch.tensor(float(beta_init) - self.beta_min))
        self.eikonal_weight, self.smooth_weight = float(eikonal_weight), float(smooth_weight)
        self.reg_points, self.smooth_eps = int(reg_points), float(smooth_eps)
        self.last_regularizers: dict[str, torch.Tensor] = {}

    # -- geometry ---------------------------------------------------------------

    @property
    def half_size(self) -> torch.Tensor:
        """World length of one unit of the trunk's coordinates (largest half-extent of the box)."""
        return (self.aabb[1] - self.aabb[0]).max() / 2

    def beta(self) -> torch.Tensor:
        """Laplace scale in trunk units (the learnable one)."""
        return self.beta_param.abs() + self.beta_min

    def _trunk(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """World points (N, 3) -> (world sdf (N,), geometry feature (N, F), p (N, 3))."""
        p = (x - self.aabb.mean(dim=0)) / self.half_size
        parts = [self.frequency(p)]
        if self.grid is not None:
            lo, hi = self.aabb[0], self.aabb[1]
            parts.append(self.grid(((x - lo) / (hi - lo)).clamp(0.0, 1.0)).to(p.dtype))
        h = self.trunk(torch.cat(parts, dim=-1))
        return h[:, 0] * self.half_size, h[:, 1:], p

    def sdf(self, x: torch.Tensor) -> torch.Tensor:
        """Signed distance (world units, negative inside solids) at world points (..., 3)."""
        return self._trunk(x.reshape(-1, 3))[0].reshape(x.shape[:-1])

    def _with_gradient(self, x: torch.Tensor):
        """_trunk plus d sdf / d x. The gradient is a differentiable part of the
        graph only when the caller records one (training losses on normals and
        the eikonal term backpropagate through it); under no_grad nothing is kept."""
        record = torch.is_grad_enabled()
        with torch.enable_grad():
            xg = x if x.requires_grad else x.detach().requires_grad_(True)
            sdf, geo, p = self._trunk(xg)
            (grad,) = torch.autograd.grad(sdf, xg, torch.ones_like(sdf), create_graph=record)
        if not record:
            sdf, geo, p = sdf.detach(), geo.detach(), p.detach()
        return sdf, geo, p, grad

    def surface(self) -> tuple[Callable[[torch.Tensor], torch.Tensor], float]:
        """(f, level): the surface is {f = level} and solid is f > level (f = -sdf)."""
        return (lambda x: -self.sdf(x)), 0.0

    # -- RadianceField ------------------------------------------------------------

    def _laplace(self, sdf: torch.Tensor) -> torch.Tensor:
        return laplace_density(sdf, self.beta() * self.half_size)

    def _raw_density(self, u: torch.Tensor) -> torch.Tensor:
        lo, hi = self.aabb[0], self.aabb[1]
        return -self.sdf(lo + u * (hi - lo))

    def _evaluate(self, u: torch.Tensor, d: torch.Tensor):
        raise NotImplementedError("SDFField overrides forward: normals need world points")

    def forward(self, x: torch.Tensor, d: torch.Tensor) -> FieldOutput:
        lead = x.shape[:-1]
        x, d = x.reshape(-1, 3), d.reshape(-1, 3)
        _, inside = self.normalize(x)
        sdf, geo, p, grad = self._with_gradient(x)
        normal = F.normalize(grad, dim=-1)
        rgb = self.colour(torch.cat([p, normal, geo], dim=-1), d)
        density = torch.where(inside, self._laplace(sdf), torch.zeros_like(sdf))
        extras = {"normal": normal.reshape(*lead, 3)}
        if self.uncertainty_head is not None:
            extras["uncertainty"] = self.uncertainty_head(geo).reshape(lead)
        return FieldOutput((-sdf).reshape(lead), density.reshape(lead), rgb.reshape(*lead, 3),
                           geo.reshape(*lead, self.feature_dim), extras)

    def density(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x = x.reshape(-1, 3)
        _, inside = self.normalize(x)
        sdf = self._trunk(x)[0]
        return torch.where(inside, self._laplace(sdf), torch.zeros_like(sdf)).reshape(lead)

    @property
    def extra_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {"normal": (3,)}
        if self.uncertainty_head is not None:
            shapes["uncertainty"] = ()
        return shapes

    def grid_parameters(self):
        return list(self.grid.parameters()) if self.grid is not None else []

    # -- regularisers ---------------------------------------------------------------

    def regularizers(self) -> dict[str, torch.Tensor]:
        """Unweighted terms at ``reg_points`` uniform points of the box (global RNG):
        "eikonal" mean (|grad sdf| - 1)^2, at the points and their neighbours;
        "smooth" mean |n(x) - n(x')| with x' = x + U(-eps, eps)^3 (eps in trunk units)."""
        lo, hi = self.aabb[0], self.aabb[1]
        x = lo + torch.rand(self.reg_points, 3, device=lo.device) * (hi - lo)
        offset = (torch.rand_like(x) * 2 - 1) * (self.smooth_eps * self.half_size)
        grad = self._with_gradient(torch.cat([x, x + offset]))[3]
        normals = F.normalize(grad, dim=-1)
        n = self.reg_points
        return {"eikonal": eikonal_loss(grad), "smooth": smoothness_loss(normals[:n], normals[n:])}

    def regularization(self) -> torch.Tensor:
        """eikonal_weight * eikonal + smooth_weight * smooth; the unweighted terms
        are kept, detached, in ``last_regularizers`` for logging."""
        if not (self.eikonal_weight or self.smooth_weight) or self.reg_points < 1:
            return self.aabb.new_zeros(())
        terms = self.regularizers()
        self.last_regularizers = {k: v.detach() for k, v in terms.items()}
        return self.eikonal_weight * terms["eikonal"] + self.smooth_weight * terms["smooth"]
