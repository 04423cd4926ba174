"""Camera geometry of the BTS density field: pure torch functions.

Conventions (OpenCV): a camera looks along +z, x right, y down; ``cam_to_world``
is a 4x4 camera->world transform; intrinsics ``K`` are in pixels of the image they
belong to, with pixel centres at integer coordinates (pixel (0, 0) is centred at
u = v = 0). Depth ``z`` is the camera-frame z, not the distance along the ray.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

EPS = 1e-3  # a point closer than this to a camera's plane counts as behind it


def full_precision(fn):
    """Run ``fn`` in float32 with autocast off: under mixed precision a bf16 matmul would
    put a 640-pixel-wide projection pixels off and a point 50 m away decimetres off."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        device = next((a.device.type for a in args if torch.is_tensor(a)), "cpu")
        args = [a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args]
        with torch.autocast(device_type=device, enabled=False):
            return fn(*args, **kwargs)
    return wrapper


@full_precision
def to_camera(points: torch.Tensor, cam_to_world: torch.Tensor) -> torch.Tensor:
    """World points [..., N, 3] into the frame of cameras [..., 4, 4]: [..., N, 3]."""
    rot, trans = cam_to_world[..., :3, :3], cam_to_world[..., :3, 3]
    return (points - trans.unsqueeze(-2)) @ rot  # R^T (p - t), as row vectors


@full_precision
def project(points_cam: torch.Tensor, K: torch.Tensor, height: int, width: int):
    """Camera-frame points [..., N, 3] -> (pixel uv [..., N, 2], depth z [..., N], valid [..., N]).

    valid: in front of the camera (z > EPS) and inside the image, pixel area included
    (u in [-0.5, W - 0.5], v in [-0.5, H - 0.5]).
    """
    z = points_cam[..., 2]
    safe_z = torch.where(z > EPS, z, torch.full_like(z, EPS))
    xy = points_cam[..., :2] / safe_z.unsqueeze(-1)
    fx, fy = K[..., 0, 0].unsqueeze(-1), K[..., 1, 1].unsqueeze(-1)
    cx, cy, skew = K[..., 0, 2].unsqueeze(-1), K[..., 1, 2].unsqueeze(-1), K[..., 0, 1].unsqueeze(-1)
    u = fx * xy[..., 0] + skew * xy[..., 1] + cx
    v = fy * xy[..., 1] + cy
    inside = (u >= -0.5) & (u <= width - 0.5) & (v >= -0.5) & (v <= height - 0.5)
    return torch.stack([u, v], dim=-1), z, (z > EPS) & inside


def normalized_uv(uv: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pixel coordinates -> grid_sample's [-1, 1] with align_corners=True (pixel centres at the ends)."""
    scale = uv.new_tensor([2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)])
    return uv * scale - 1.0


@full_precision
def sample_maps(maps: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of maps [B, C, H, W] at pixel coordinates uv [B, N, 2]: [B, N, C].

    Border padding: a point just outside the image takes the edge value (its
    validity is decided by ``project``, not here)."""
    h, w = maps.shape[-2:]
    grid = normalized_uv(uv, h, w).unsqueeze(1)  # [B, 1, N, 2]
    out = F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out[:, :, 0].transpose(1, 2)


def normalized_inverse_depth(z: torch.Tensor, near: float, far: float) -> torch.Tensor:
    """1/z mapped linearly to [-1, 1]: -1 at ``far``, +1 at ``near``."""
    inv = 1.0 / z.clamp(min=EPS)
    return 2.0 * (inv - 1.0 / far) / (1.0 / near - 1.0 / far) - 1.0


def positional_encoding(x: torch.Tensor, n_freqs: int = 6, include_input: bool = True) -> torch.Tensor:
    """[..., D] -> [..., D * (include_input + 2 * n_freqs)]: x, then sin and cos of 2^k * pi * x."""
    parts = [x] if include_input else []
    for k in range(n_freqs):
        angle = (2.0**k) * math.pi * x
        parts += [torch.sin(angle), torch.cos(angle)]
    return torch.cat(parts, dim=-1)


def encoding_width(n_dims: int = 3, n_freqs: int = 6, include_input: bool = True) -> int:
    return n_dims * (int(include_input) + 2 * n_freqs)


def inverse_depth_samples(near: float, far: float, n: int, shape: tuple = (), jitter: bool = False,
                          generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Depths [*shape, n] from ``near`` to ``far``, equally spaced in 1/z (endpoints included).

    jitter: each depth is drawn uniformly (in 1/z) inside its own bin instead, for training;
    the bins tile [1/far, 1/near], so the depths stay sorted and inside [near, far]."""
    if n < 1 or not 0 < near < far:
        raise ValueError(f"need n >= 1 and 0 < near < far, got n={n}, near={near}, far={far}")
    inv_near, inv_far = 1.0 / near, 1.0 / far
    if not jitter:
        t = torch.linspace(0.0, 1.0, n, device=device) if n > 1 else torch.zeros(1, device=device)
        t = t.expand(*shape, n)
    else:
        u = torch.rand(*shape, n, generator=generator).to(device)
        t = (torch.arange(n, device=device) + u) / n
    return 1.0 / (inv_near + t * (inv_far - inv_near))


@full_precision
def pixel_rays(K: torch.Tensor, cam_to_world: torch.Tensor, uv: torch.Tensor):
    """Rays through pixel coordinates uv [..., N, 2] of cameras K [..., 3, 3], cam_to_world [..., 4, 4].

    Returns origins [..., N, 3] and directions [..., N, 3] scaled so that
    origin + z * direction has camera depth z."""
    ones = torch.ones_like(uv[..., :1])
    pix = torch.cat([uv, ones], dim=-1)
    rays_cam = pix @ torch.linalg.inv(K).transpose(-1, -2)  # z component is 1
    dirs = rays_cam @ cam_to_world[..., :3, :3].transpose(-1, -2)
    origins = cam_to_world[..., :3, 3].unsqueeze(-2).expand_as(dirs)
    return origins, dirs
