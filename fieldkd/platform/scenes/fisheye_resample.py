"""KITTI-360's side fisheyes (MEI model) resampled to a virtual pinhole camera, as BTS serves them.

The virtual camera sits at the fisheye's centre. Its intrinsics are the caller's; BTS uses the
rectified perspective camera's K (scaled to the served image size), so that every view of a
sample shares one K. Its orientation is the fisheye's turned by ``turn = (yaw, pitch)`` degrees,
in the order of BTS's ``fisheye_rotation`` setting: the rotation from the virtual camera's axes
to the fisheye's is ``Ry(yaw) @ Rx(pitch)`` (OpenCV axes: x right, y down, z forward), with the
yaw mirrored for the right fisheye ``image_03``. BTS's KITTI-360 configs use (0, -15): both
virtual cameras look 15 degrees further down than their fisheye.

Each virtual pixel's ray is projected through the MEI model (:mod:`lens`, tangential terms
included) and the fisheye image is sampled bilinearly there. Pixel (i, j)'s centre is at (i, j)
in both cameras (the calibration files' convention). A virtual pixel is invalid (black) when its
ray leaves the fisheye image, or when one of the four fisheye pixels it blends lies beyond the
mirror's rim, where the model stops being one-to-one (those pixels hold no scene).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from . import lens
from .kitti360 import MeiCamera

RIGHT_FISHEYE = "image_03"
BTS_TURN = (0.0, -15.0)  # (yaw, pitch) degrees, BTS's fisheye_rotation for KITTI-360
ROUND_TRIP = 1e-6  # normalised units: a pixel whose lift does not project back here is beyond the rim


def _rx(degrees: float) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _ry(degrees: float) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def virtual_rotation(camera: str, turn=BTS_TURN) -> np.ndarray:
    """(3, 3) virtual pinhole axes -> fisheye axes for ``camera`` (image_02 or image_03)."""
    yaw, pitch = (float(a) for a in turn)
    if camera == RIGHT_FISHEYE:
        yaw = -yaw
    return _ry(yaw) @ _rx(pitch)


def virtual_cam_to_world(fisheye_to_world: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """(4, 4) the virtual pinhole's camera -> world: same centre, axes turned by ``rotation``."""
    turn = np.eye(4)
    turn[:3, :3] = rotation
    return np.asarray(fisheye_to_world, dtype=np.float64) @ turn


def pinhole_rays(k: np.ndarray, width: int, height: int) -> torch.Tensor:
    """(H, W, 3) float64 unit OpenCV directions through pixel centres (i, j) of intrinsics ``k``."""
    k = np.asarray(k, dtype=np.float64)
    j, i = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                          indexing="ij")
    x = (i - k[0, 2] - k[0, 1] * (j - k[1, 2]) / k[1, 1]) / k[0, 0]
    d = torch.stack([x, (j - k[1, 2]) / k[1, 1], torch.ones_like(i)], -1)
    return d / d.norm(dim=-1, keepdim=True)


def mei_project(cam: MeiCamera, dirs: torch.Tensor) -> torch.Tensor:
    """(..., 2) fisheye pixel coordinates (u, v) of directions (..., 3) in the fisheye's frame."""
    params = torch.tensor(cam.distortion, dtype=torch.float64)
    xd, yd = lens.distort_directions("mei", params, dirs.double())
    return torch.stack([xd * cam.gamma1 + cam.u0, yd * cam.gamma2 + cam.v0], -1)


def mei_one_to_one(cam: MeiCamera, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """True at fisheye pixel coordinates whose lifted ray projects back onto them (inside the rim)."""
    params = torch.tensor(cam.distortion, dtype=torch.float64)
    xd, yd = (u.double() - cam.u0) / cam.gamma1, (v.double() - cam.v0) / cam.gamma2
    dirs = lens.undistort("mei", params, xd, yd)
    bx, by = lens.distort_directions("mei", params, dirs)
    return torch.isfinite(dirs).all(-1) & ((bx - xd).abs() < ROUND_TRIP) & ((by - yd).abs() < ROUND_TRIP)


def fisheye_grid(cam: MeiCamera, k: np.ndarray, width: int, height: int,
                 rotation: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each pixel of the virtual pinhole (``k``, width x height, axes ``rotation`` in the
    fisheye's frame) lands in the fisheye: (grid (H, W, 2) float64 pixel coordinates (u, v),
    valid (H, W) bool)."""
    rays = pinhole_rays(k, width, height)
    if rotation is not None:
        rays = rays @ torch.as_tensor(np.asarray(rotation, dtype=np.float64)).T
    s = rays[..., 2] + cam.distortion[0]  # the MEI projection centre must be behind the ray's sphere point
    grid = mei_project(cam, rays)
    u, v = grid.unbind(-1)
    valid = (s > 1e-9) & torch.isfinite(grid).all(-1) & (u >= 0) & (u <= cam.width - 1) & \
        (v >= 0) & (v <= cam.height - 1)
    # The four fisheye pixels that the bilinear sample blends must all hold scene.
    u0, v0 = torch.nan_to_num(u).floor().clamp(0, cam.width - 1), torch.nan_to_num(v).floor().clamp(0, cam.height - 1)
    for du in (0, 1):
        for dv in (0, 1):
            valid &= mei_one_to_one(cam, (u0 + du).clamp(max=cam.width - 1), (v0 + dv).clamp(max=cam.height - 1))
    return torch.where(valid[..., None], grid, torch.zeros_like(grid)), valid


def resample(image: torch.Tensor, grid: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(C, H, W) the fisheye ``image`` (C, Hf, Wf) sampled bilinearly at ``grid`` (pixel
    coordinates from :func:`fisheye_grid`); invalid pixels are 0."""
    hf, wf = image.shape[-2:]
    norm = torch.stack([grid[..., 0] * (2.0 / max(wf - 1, 1)) - 1.0, grid[..., 1] * (2.0 / max(hf - 1, 1)) - 1.0], -1)
    # align_corners=True: -1 and 1 are the centres of the first and last pixels, as pixel (i, j) is at (i, j).
    out = F.grid_sample(image[None].float(), norm[None].to(torch.float32), mode="bilinear", padding_mode="zeros",
                        align_corners=True)[0]
    return out * valid[None].to(out.dtype)


def resample_fisheye(image: torch.Tensor, cam: MeiCamera, k: np.ndarray, width: int, height: int,
                     rotation: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A fisheye image (C, Hf, Wf) as the virtual pinhole sees it: ((C, H, W), valid (H, W))."""
    if tuple(image.shape[-2:]) != (cam.height, cam.width):
        raise ValueError(f"fisheye image is {tuple(image.shape[-2:])} (H, W), calibration says "
                         f"{(cam.height, cam.width)}")
    grid, valid = fisheye_grid(cam, k, width, height, rotation)
    return resample(image, grid, valid), valid
