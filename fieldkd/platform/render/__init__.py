"""Rays to pixels: sampling, empty-space skipping and volume rendering."""

from .composite import alphas_from_densities, composite, ray_aabb_intersect, transmittance
from .occupancy import OccupancyGrid
from .renderer import RenderConfig, Renderer
from .samplers import ray_bounds, stratified

__all__ = [
    "alphas_from_densities", "composite", "ray_aabb_intersect", "transmittance",
    "OccupancyGrid", "RenderConfig", "Renderer", "ray_bounds", "stratified",
]
