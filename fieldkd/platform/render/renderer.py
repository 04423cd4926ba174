"""Render rays through a radiance field.

Samples are placed as (rays, samples); the occupancy grid marks which of
them can matter, and only those are sent to the field, the costly part. By
default (``packed``) the live samples stay a flat list with their ray indices
and are composited by per-ray segment sums (render/packed.py). With
``packed=False`` they are scattered back into the (rays, samples) layout, dead
samples at zero density, and composited there: the same result, slower.

With ``min_alpha`` or ``min_transmittance`` above zero, a cheap pass first asks
the field for the density alone, without gradients, at every live sample, and
keeps only the samples that can change the pixel: opaque enough, and in front
of the point where the ray's transmittance has run out (nerfacc's ``alpha_thre``
and ``early_stop_eps``). It pays where a sample's full evaluation costs many
density evaluations: a neural SDF's normals are an input gradient, and training
differentiates through them again.

With ``sampler="proposal"`` there is no grid: small proposal networks place the
samples (render/proposal.py), and a training render also returns
``proposal_loss``, which trains them; their parameters and state are the renderer's.
"""

from __future__ import annotations

from dataclasses import dataclass, field as dataclass_field

import torch

from ..scenes.cameras import Cameras, Rays
from .composite import composite, composite_values
from .occupancy import OccupancyGrid
from .packed import composite_packed, composite_values_packed, visible_samples
from .proposal import ProposalConfig, ProposalSampler, midpoints
from .samplers import ray_bounds, stratified


@dataclass
class RenderConfig:
    samples_per_ray: int = 128  # steps across the scene box
    chunk: int = 4096  # rays per forward pass when rendering whole images
    occupancy: bool = True
    occupancy_resolution: int = 64
    occupancy_threshold: float = 0.01
    occupancy_update_every: int = 16
    occupancy_warmup_steps: int = 64
    # After the warm-up a refresh asks the field at most this many points per training sample
    # since the last one (None: every candidate cell, as nerfacc does). A refresh then costs a
    # fraction of the steps between refreshes, whatever the grid's resolution.
    occupancy_refresh_share: float | None = 0.25
    packed: bool = True  # composite the live samples as a flat list (see render/packed.py)
    sampler: str = "occupancy"  # one of SAMPLERS
    # sampler=proposal (render/proposal.py): samples of each proposal level, then of the field
    proposal_samples: list[int] = dataclass_field(default_factory=lambda: [64])
    proposal_final_samples: int = 48
    proposal_resolution: int = 128  # finest level of each proposal network's hash grid
    proposal_log2_hashmap_size: int = 16
    proposal_loss_weight: float = 1.0  # weight of the interlevel loss that trains the proposal networks
    # Skip samples of opacity below min_alpha, and those where less than min_transmittance of the
    # light is left; judged from a density-only pass without gradients. 0: no pass.
    min_alpha: float = 0.0
    min_transmittance: float = 0.0

    def proposal_config(self) -> ProposalConfig:
        return ProposalConfig(tuple(int(n) for n in self.proposal_samples), int(self.proposal_final_samples),
                              int(self.proposal_resolution), int(self.proposal_log2_hashmap_size))


# occupancy: samples_per_ray steps across the box, empty space culled by the grid;
# proposal: proposal networks place proposal_final_samples per ray (no grid).
SAMPLERS = ("occupancy", "proposal")
# The render.proposal_* keys a checkpoint records with the proposal networks' weights.
PROPOSAL_SIZES = ("proposal_samples", "proposal_final_samples", "proposal_resolution", "proposal_log2_hashmap_size")


class Renderer:
    def __init__(self, aabb: torch.Tensor, near: float, far: float, background: torch.Tensor,
                 config: RenderConfig | None = None):
        self.cfg = config or RenderConfig()
        self.aabb = aabb.float()
        self.near, self.far = float(near), float(far)
        self.background = background.float()
        if self.cfg.sampler not in SAMPLERS:
            raise ValueError(f"render.sampler must be one of {', '.join(SAMPLERS)}, got {self.cfg.sampler!r}")
        self.proposal = (ProposalSampler(self.aabb, self.cfg.proposal_config())
                         if self.cfg.sampler == "proposal" else None)
        self.grid = (
            OccupancyGrid(aabb, self.cfg.occupancy_resolution, self.cfg.occupancy_threshold,
                          warmup_steps=self.cfg.occupancy_warmup_steps)
            if self.cfg.occupancy and self.proposal is None else None
        )
        self.samples_since_refresh = 0  # field samples of training renders since the last refresh
        diagonal = (self.aabb[1] - self.aabb[0]).norm().item()
        # Step length of a ray crossing the box's diagonal with samples_per_ray samples.
        self.step_size = diagonal / self.cfg.samples_per_ray

    def to(self, device) -> "Renderer":
        self.aabb = self.aabb.to(device)
        self.background = self.background.to(device)
        if self.grid is not None:
            self.grid.to(device)
        if self.proposal is not None:
            self.proposal.to(device)
        return self

    def param_groups(self, lr: float) -> list[dict]:
        """The renderer's own trainable parameters (the proposal networks'), one group; none otherwise."""
        return self.proposal.param_groups(lr) if self.proposal is not None else []

    def render_rays(self, field, rays: Rays, train: bool = False, with_samples: bool = False):
        """rgb, depth (camera z), opacity, weights and the count of field samples.

        Every per-sample extra the field returns (``FieldOutput.extras``, e.g.
        "normal" (R, 3) or "uncertainty" (R,)) is composited with the colour's
        weights under its own name. With ``with_samples`` the points, their
        mask and the field outputs are returned too, for losses on individual
        samples (distillation).
        """
        return self._render(field, rays, train, with_samples)[0]

    def _render(self, field, rays: Rays, train: bool, with_samples: bool):
        """render_rays' result and the names of the composited extras."""
        t_near, t_far = ray_bounds(rays.origins, rays.directions, self.aabb, self.near, self.far)
        proposals = None
        if self.proposal is not None:
            proposals = self.proposal.sample(rays.origins, rays.directions, t_near, t_far, jitter=train)
            t_starts, t_ends = proposals.edges[:, :-1], proposals.edges[:, 1:]
            t_points = midpoints(proposals.edges)
        else:
            t_starts, t_ends, t_points = stratified(t_near, t_far, self.cfg.samples_per_ray, jitter=train)
        points = rays.origins[:, None, :] + rays.directions[:, None, :] * t_points[..., None]
        live = t_ends > t_starts
        if self.grid is not None:
            live &= self.grid.query(points)
        if (self.cfg.min_alpha > 0 or self.cfg.min_transmittance > 0) and not with_samples:
            # Per-sample losses (distillation) compare every sample: they keep them all.
            live = self._visible(field, points, live, t_starts, t_ends)

        if self.cfg.packed:
            out, output, extras = self._composite_packed(field, rays, points, live, t_starts, t_ends)
        else:
            out, output, extras = self._composite_dense(field, rays, points, live, t_starts, t_ends)
        out["depth"] = out["depth"] * rays.z_scale
        if train:
            self.samples_since_refresh += out["n_samples"]
        clash = set(extras) & set(out)
        if clash:
            raise ValueError(f"field extras {sorted(clash)} clash with the renderer's own outputs")
        out.update(extras)
        if proposals is not None and train:
            out["proposal_loss"] = self.cfg.proposal_loss_weight * self.proposal.loss(
                proposals.levels, proposals.edges, out["weights"])
        if with_samples:
            out.update(points=points, live=live, field_output=output, t_starts=t_starts, t_ends=t_ends)
        return out, tuple(extras)

    @torch.no_grad()
    def _visible(self, field, points, live, t_starts, t_ends) -> torch.Tensor:
        """The live samples that are opaque enough and still reached by enough light."""
        ray_idx, sample_idx = live.nonzero(as_tuple=True)
        if not ray_idx.numel():
            return live
        model = getattr(field, "module", field)  # the field itself, not its DDP wrapper: no gradient here
        densities = model.density(points[ray_idx, sample_idx]).to(t_starts.dtype)
        starts, ends = t_starts[ray_idx, sample_idx], t_ends[ray_idx, sample_idx]
        keep = visible_samples(densities, starts, ends, ray_idx, t_starts.shape[0],
                               self.cfg.min_alpha, self.cfg.min_transmittance)
        visible = torch.zeros_like(live)
        visible[ray_idx[keep], sample_idx[keep]] = True
        return visible

    def _composite_dense(self, field, rays: Rays, points, live, t_starts, t_ends):
        n_samples = t_starts.shape[1]
        sel_points = points[live]
        sel_dirs = rays.directions[:, None, :].expand(-1, n_samples, -1)[live]
        output = field(sel_points, sel_dirs) if sel_points.shape[0] else None
        densities = t_starts.new_zeros(t_starts.shape)
        colors = t_starts.new_zeros(*t_starts.shape, 3)
        if output is not None:
            # Scatter back in the order boolean indexing gathered them.
            densities = densities.masked_scatter(live, output.density.to(densities.dtype))
            colors = colors.masked_scatter(live[..., None].expand_as(colors), output.rgb.to(colors.dtype))

        out = composite(densities, t_starts, t_ends, colors, self.background)
        out["n_samples"] = int(live.sum())
        return out, output, _composite_extras(field, output, live, out["weights"])

    def _composite_packed(self, field, rays: Rays, points, live, t_starts, t_ends):
        # nonzero() is row-major: the field sees the very samples, in the very order, of the dense path.
        ray_idx, sample_idx = live.nonzero(as_tuple=True)
        n_rays = t_starts.shape[0]
        output = field(points[ray_idx, sample_idx], rays.directions[ray_idx]) if ray_idx.numel() else None
        starts, ends = t_starts[ray_idx, sample_idx], t_ends[ray_idx, sample_idx]
        if output is None:
            densities, colors = starts.new_zeros(0), starts.new_zeros(0, 3)
        else:
            densities, colors = output.density.to(starts.dtype), output.rgb.to(starts.dtype)
        out = composite_packed(densities, starts, ends, ray_idx, n_rays, colors, self.background)
        packed_weights = out["weights"]
        # The (rays, samples) weights of the output contract; one scatter, outside the rendering math.
        out["weights"] = packed_weights.new_zeros(t_starts.shape).index_put((ray_idx, sample_idx), packed_weights)
        out["n_samples"] = int(ray_idx.numel())
        return out, output, _composite_extras_packed(field, output, ray_idx, n_rays, packed_weights)

    @torch.no_grad()
    def render_image(self, field, cameras: Cameras, index: int, device=None) -> dict[str, torch.Tensor]:
        """Whole image in chunks of rays: rgb (H, W, 3), depth (H, W), opacity (H, W),
        and each composited extra of the field, e.g. normal (H, W, 3), uncertainty (H, W)."""
        rays = cameras.image_rays(index)
        parts, names = [], {}
        for start in range(0, len(rays), self.cfg.chunk):
            chunk = rays[start:start + self.cfg.chunk]
            if device is not None:
                chunk = chunk.to(device)
            out, extras = self._render(field, chunk, train=False, with_samples=False)
            names.update(dict.fromkeys(extras))
            parts.append({k: out[k].float().cpu() for k in ("rgb", "depth", "opacity") + extras})
        h, w = cameras.height, cameras.width
        image = {k: torch.cat([p[k] for p in parts]).reshape(h, w, *parts[0][k].shape[1:])
                 for k in ("rgb", "depth", "opacity")}
        for k in names:
            # A chunk with no live sample has no extras; its weights are all zero anyway.
            like = next(p[k] for p in parts if k in p)
            image[k] = torch.cat([p.get(k, like.new_zeros(p["depth"].shape + like.shape[1:]))
                                  for p in parts]).reshape(h, w, *like.shape[1:])
        return image

    @torch.no_grad()
    def update_occupancy(self, field, step: int) -> None:
        """Refresh the grid; it stores sigma * step, roughly one step's opacity."""
        if self.grid is None or step % self.cfg.occupancy_update_every:
            return
        share, seen = self.cfg.occupancy_refresh_share, self.samples_since_refresh
        limit = None if share is None else max(MIN_REFRESH_CELLS, int(share * seen))
        self.grid.update(lambda x: field.density(x) * self.step_size, step, max_cells=limit)
        self.samples_since_refresh = 0

    def state_dict(self) -> dict:
        if self.grid is None:
            return self._proposal_state()
        return {"grid": self.grid.state_dict(), "samples_since_refresh": self.samples_since_refresh}

    def load_state_dict(self, state: dict) -> None:
        if self.grid is not None and "grid" in state:
            self.grid.load_state_dict(state["grid"])
            self.samples_since_refresh = int(state.get("samples_since_refresh", 0))
        # A state without proposal networks (a field trained with the grid) leaves them fresh.
        if self.proposal is not None and "proposal" in state:
            self.proposal.load_state_dict(state["proposal"]["networks"])

    def _proposal_state(self) -> dict:
        """The networks' weights and the render.proposal_* sizes that rebuild them (plain values)."""
        if self.proposal is None:
            return {}
        sizes = {k: getattr(self.cfg, k) for k in PROPOSAL_SIZES}
        sizes["proposal_samples"] = [int(n) for n in sizes["proposal_samples"]]
        return {"proposal": {"config": sizes, "networks": dict(self.proposal.state_dict())}}


MIN_REFRESH_CELLS = 4096  # a refresh after a few (or no) training samples still explores the grid

# Extras whose losses must not move the geometry: they are composited with detached weights.
# The uncertainty loss's log term falls with the rendered beta; through the weights it makes
# the field transparent (see fields.heads.UncertaintyHead for the measurements).
DETACHED_EXTRAS = frozenset({"uncertainty"})


def _missing_extras(field, like: torch.Tensor, n_rays: int) -> dict[str, torch.Tensor]:
    """Without live samples the field was not called; its declared ``extra_shapes``
    (if any) still give every extra, as zeros, so a batch always has the same keys."""
    module = getattr(field, "module", field)  # DistributedDataParallel wraps the field
    shapes = getattr(module, "extra_shapes", None) or {}
    return {k: like.new_zeros((n_rays, *shape)) for k, shape in shapes.items()}


def _composite_extras(field, output, live: torch.Tensor, weights: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each per-sample extra scattered back to (R, S, ...) and composited with ``weights``
    (detached for :data:`DETACHED_EXTRAS`)."""
    if output is None:
        return _missing_extras(field, weights, weights.shape[0])
    out = {}
    for name, value in (getattr(output, "extras", None) or {}).items():
        full = weights.new_zeros(*live.shape, *value.shape[1:])
        mask = live.reshape(*live.shape, *([1] * (value.dim() - 1))).expand_as(full)
        used = weights.detach() if name in DETACHED_EXTRAS else weights
        out[name] = composite_values(used, full.masked_scatter(mask, value.to(full.dtype)))
    return out


def _composite_extras_packed(field, output, ray_indices: torch.Tensor, n_rays: int,
                             weights: torch.Tensor) -> dict[str, torch.Tensor]:
    """:func:`_composite_extras` on packed samples: ``weights`` (N,) in the field's sample order."""
    if output is None:
        return _missing_extras(field, weights, n_rays)
    out = {}
    for name, value in (getattr(output, "extras", None) or {}).items():
        used = weights.detach() if name in DETACHED_EXTRAS else weights
        out[name] = composite_values_packed(used, value.to(weights.dtype), ray_indices, n_rays)
    return out
