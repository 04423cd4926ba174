"""Rays to pixels: sampling, empty-space skipping and volume rendering."""

from .composite import alphas_from_densities, composite, composite_values, ray_aabb_intersect, transmittance
from .occupancy import OccupancyGrid
from .renderer import RenderConfig, Renderer
from .samplers import ray_bounds, stratified
from .sdf_density import laplace_cdf, laplace_density

__all__ = [
    "alphas_from_densities", "composite", "composite_values", "ray_aabb_intersect", "transmittance",
    "laplace_cdf", "laplace_density",
    "OccupancyGrid", "RenderConfig", "Renderer", "ray_bounds", "stratified",
]
