"""Camera geometry of plane-sweep stereo: projection matrices, pyramid levels, and the
warp of a source view onto depth hypotheses of the reference view.

Conventions: cameras are (K 3x3, E 4x4 world->camera); pixel (x, y) is the centre of
column x, row y, so that a level 1/s of the image samples the full image at (s*x, s*y),
which is where a stride-s convolution centres its outputs and where ``subsample`` samples.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def scale_intrinsics(intrinsics: torch.Tensor, scale: float) -> torch.Tensor:
    """K of a level ``scale`` times the image's side ([..., 3, 3])."""
    k = intrinsics.clone()
    k[..., :2, :] = k[..., :2, :] * scale
    return k


def projection(intrinsics: torch.Tensor, extrinsics: torch.Tensor) -> torch.Tensor:
    """4x4 matrices mapping world points to (x*z, y*z, z, 1): [..., 4, 4]."""
    with torch.autocast(extrinsics.device.type, enabled=False):  # see homography_warp
        k4 = torch.zeros_like(extrinsics, dtype=torch.float32)
        k4[..., :3, :3] = intrinsics.float()
        k4[..., 3, 3] = 1.0
        return k4 @ extrinsics.float()


def pixel_grid(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Homogeneous pixel centres [3, H*W], row-major."""
    y, x = torch.meshgrid(torch.arange(height, device=device, dtype=dtype),
                          torch.arange(width, device=device, dtype=dtype), indexing="ij")
    return torch.stack((x.reshape(-1), y.reshape(-1), torch.ones_like(x).reshape(-1)))


def homography_warp(source: torch.Tensor, source_proj: torch.Tensor, reference_proj: torch.Tensor,
                    depths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``source`` [B,C,h,w] where each reference pixel lands at each of its depths
    ``depths`` [B,D,h,w] (fronto-parallel planes of the reference camera, or per-pixel
    hypotheses). Returns the warped values [B,C,D,h,w] and where the point fell inside the
    source image, in front of its camera [B,D,h,w]. Differentiable in ``source`` and ``depths``."""
    b, c, h, w = source.shape
    d = depths.shape[1]
    # Coordinates in float32 even under mixed precision: in bf16, pixel positions of a 640-wide
    # image and DTU depths (~700 mm) would be off by whole pixels and millimetres.
    with torch.autocast(source.device.type, enabled=False):
        relative = source_proj.float() @ torch.linalg.inv(reference_proj.float())  # reference (xz, yz, z, 1) -> source
        rot, trans = relative[:, :3, :3], relative[:, :3, 3:4]
        rays = rot @ pixel_grid(h, w, source.device)  # [B,3,h*w]: source coordinates of a point at depth 1
        points = rays.unsqueeze(2) * depths.float().reshape(b, 1, d, h * w) + trans.unsqueeze(-1)  # [B,3,D,h*w]
    z = points[:, 2]
    in_front = z > 1e-6
    z = torch.where(in_front, z, torch.ones_like(z))  # no division by ~0 behind the camera
    x, y = points[:, 0] / z, points[:, 1] / z
    valid = in_front & (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    # Points behind the camera sample far outside (zeros), not their mirror image.
    far = torch.full_like(x, -10.0)
    gx = torch.where(in_front, x / ((w - 1) / 2) - 1, far)
    gy = torch.where(in_front, y / ((h - 1) / 2) - 1, far)
    grid = torch.stack((gx, gy), dim=-1).reshape(b, d * h, w, 2)
    warped = F.grid_sample(source, grid.to(source.dtype), mode="bilinear", padding_mode="zeros",
                           align_corners=True)
    return warped.reshape(b, c, d, h, w), valid.reshape(b, d, h, w)


def warp_with_depth(source: torch.Tensor, source_proj: torch.Tensor, reference_proj: torch.Tensor,
                    depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``homography_warp`` through one depth map [B,h,w]: ([B,C,h,w], valid [B,h,w])."""
    warped, valid = homography_warp(source, source_proj, reference_proj, depth.unsqueeze(1))
    return warped[:, :, 0], valid[:, 0]


def subsample(images: torch.Tensor, factor: int) -> torch.Tensor:
    """Level 1/factor of [..., C, H, W] images: a centred box blur of side 2*factor-1 (against
    aliasing), sampled at (factor*x, factor*y), the pixels the level's intrinsics describe."""
    if factor == 1:
        return images
    lead, (c, h, w) = images.shape[:-3], images.shape[-3:]
    flat = images.reshape(-1, c, h, w)
    blurred = F.avg_pool2d(flat, 2 * factor - 1, stride=1, padding=factor - 1, count_include_pad=False)
    out = blurred[..., ::factor, ::factor]
    return out.reshape(*lead, c, out.shape[-2], out.shape[-1])


def subsample_map(values: torch.Tensor, factor: int) -> torch.Tensor:
    """Level 1/factor of per-pixel maps [..., H, W] by picking pixels (no blending of labels)."""
    return values if factor == 1 else values[..., ::factor, ::factor]
