"""Evaluation of trained fields: image, depth and mesh metrics, and report images."""

from .depth import depth_metrics
from .image import LpipsMetric, make_lpips, mse_to_psnr, psnr, ssim
from .mesh import extract_mesh, load_mesh, mesh_metrics, sample_surface
from .report import colorize, error_map, side_by_side, to_uint8

__all__ = [
    "psnr",
    "mse_to_psnr",
    "ssim",
    "LpipsMetric",
    "make_lpips",
    "depth_metrics",
    "extract_mesh",
    "load_mesh",
    "sample_surface",
    "mesh_metrics",
    "side_by_side",
    "error_map",
    "colorize",
    "to_uint8",
]
