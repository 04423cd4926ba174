"""Render rays through a radiance field.

Samples are laid out densely as (rays, samples); the occupancy grid marks
which of them can matter, and only those are sent to the field. The others
keep zero density, so compositing stays exact while the field, the costly
part, sees only occupied space.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..scenes.cameras import Cameras, Rays
from .composite import composite
from .occupancy import OccupancyGrid
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


class Renderer:
    def __init__(self, aabb: torch.Tensor, near: float, far: float, background: torch.Tensor,
                 config: RenderConfig | None = None):
        self.cfg = config or RenderConfig()
        self.aabb = aabb.float()
        self.near, self.far = float(near), float(far)
        self.background = background.float()
        self.grid = (
            OccupancyGrid(aabb, self.cfg.occupancy_resolution, self.cfg.occupancy_threshold,
                          warmup_steps=self.cfg.occupancy_warmup_steps)
            if self.cfg.occupancy else None
        )
        diagonal = (self.aabb[1] - self.aabb[0]).norm().item()
        # Step length of a ray crossing the box's diagonal with samples_per_ray samples.
        self.step_size = diagonal / self.cfg.samples_per_ray

    def to(self, device) -> "Renderer":
        self.aabb = self.aabb.to(device)
        self.background = self.background.to(device)
        if self.grid is not None:
            self.grid.to(device)
        return self

    def render_rays(self, field, rays: Rays, train: bool = False, with_samples: bool = False):
        """rgb, depth (camera z), opacity, weights and the count of field samples.

        With ``with_samples`` the points, their mask and the field outputs are
        returned too, for losses on individual samples (distillation).
        """
        t_near, t_far = ray_bounds(rays.origins, rays.directions, self.aabb, self.near, self.far)
        t_starts, t_ends, t_points = stratified(t_near, t_far, self.cfg.samples_per_ray, jitter=train)
        points = rays.origins[:, None, :] + rays.directions[:, None, :] * t_points[..., None]
        live = t_ends > t_starts
        if self.grid is not None:
            live &= self.grid.query(points)

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
        out["depth"] = out["depth"] * rays.z_scale
        out["n_samples"] = int(live.sum())
        if with_samples:
            out.update(points=points, live=live, field_output=output, t_starts=t_starts, t_ends=t_ends)
        return out

    @torch.no_grad()
    def render_image(self, field, cameras: Cameras, index: int, device=None) -> dict[str, torch.Tensor]:
        """Whole image in chunks of rays: rgb (H, W, 3), depth (H, W), opacity (H, W)."""
        rays = cameras.image_rays(index)
        parts = []
        for start in range(0, len(rays), self.cfg.chunk):
            chunk = rays[start:start + self.cfg.chunk]
            if device is not None:
                chunk = chunk.to(device)
            out = self.render_rays(field, chunk, train=False)
            parts.append({k: out[k].float().cpu() for k in ("rgb", "depth", "opacity")})
        h, w = cameras.height, cameras.width
        return {
            "rgb": torch.cat([p["rgb"] for p in parts]).reshape(h, w, 3),
            "depth": torch.cat([p["depth"] for p in parts]).reshape(h, w),
            "opacity": torch.cat([p["opacity"] for p in parts]).reshape(h, w),
        }

    @torch.no_grad()
    def update_occupancy(self, field, step: int) -> None:
        """Refresh the grid; it stores sigma * step, roughly one step's opacity."""
        if self.grid is None or step % self.cfg.occupancy_update_every:
            return
        self.grid.update(lambda x: field.density(x) * self.step_size, step)

    def state_dict(self) -> dict:
        return {"grid": self.grid.state_dict()} if self.grid is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.grid is not None and "grid" in state:
            self.grid.load_state_dict(state["grid"])
