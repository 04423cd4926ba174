"""Pinhole cameras and the rays they cast.

Internally every camera-to-world matrix uses the OpenGL / Blender convention:
the camera looks down its local -z axis, +y is up and +x is right. Readers of
formats with another convention (OpenCV: +z forward, +y down) convert with
:func:`opencv_to_opengl` when they load.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Flips the y and z axes of a camera frame: OpenCV <-> OpenGL (its own inverse).
_FLIP_YZ = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))


def opencv_to_opengl(c2w: torch.Tensor) -> torch.Tensor:
    """Convert (..., 4, 4) camera-to-world matrices from OpenCV to OpenGL axes."""
    return c2w @ _FLIP_YZ.to(c2w)


opengl_to_opencv = opencv_to_opengl


@dataclass
class Rays:
    """A batch of rays. ``z_scale`` turns a distance along the unit direction
    into camera z-depth: ``z_depth = t * z_scale``."""

    origins: torch.Tensor  # (N, 3)
    directions: torch.Tensor  # (N, 3), unit length
    z_scale: torch.Tensor  # (N,)

    def __len__(self) -> int:
        return self.origins.shape[0]

    def __getitem__(self, index) -> "Rays":
        return Rays(self.origins[index], self.directions[index], self.z_scale[index])

    def to(self, device) -> "Rays":
        return Rays(self.origins.to(device), self.directions.to(device), self.z_scale.to(device))


@dataclass
class Cameras:
    """N pinhole cameras sharing one image size."""

    c2w: torch.Tensor  # (N, 4, 4) OpenGL convention
    fx: torch.Tensor  # (N,)
    fy: torch.Tensor  # (N,)
    cx: torch.Tensor  # (N,)
    cy: torch.Tensor  # (N,)
    width: int
    height: int

    def __len__(self) -> int:
        return self.c2w.shape[0]

    def __getitem__(self, index) -> "Cameras":
        index = torch.as_tensor(index).reshape(-1)
        return Cameras(
            self.c2w[index], self.fx[index], self.fy[index], self.cx[index], self.cy[index],
            self.width, self.height,
        )

    @property
    def centers(self) -> torch.Tensor:
        return self.c2w[:, :3, 3]

    def rays_at(self, cam_idx: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> Rays:
        """Rays through pixel coordinates (px, py) of cameras cam_idx (all (M,)).

        Pixel centres are at integer + 0.5, as in Blender's renders.
        """
        return rays_through_pixels(
            self.c2w[cam_idx], self.fx[cam_idx], self.fy[cam_idx],
            self.cx[cam_idx], self.cy[cam_idx], px, py,
        )

    def image_rays(self, index: int) -> Rays:
        """All H*W rays of one camera, in row-major pixel order."""
        ys, xs = torch.meshgrid(
            torch.arange(self.height, dtype=torch.float32),
            torch.arange(self.width, dtype=torch.float32),
            indexing="ij",
        )
        idx = torch.full((self.height * self.width,), index, dtype=torch.long)
        return self.rays_at(idx, xs.reshape(-1), ys.reshape(-1))


def project(points: torch.Tensor, cameras: "Cameras") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pixel coordinates px, py and camera z-depth of points (N, 3) in every camera: (C, N) each.
    OpenGL cameras look down -z; pixel centres are at integer + 0.5."""
    points = points.reshape(-1, 3).float()
    c2w = cameras.c2w.to(points.device).float()
    rot, centre = c2w[:, :3, :3], c2w[:, :3, 3]
    local = torch.einsum("cji,cnj->cni", rot, points[None] - centre[:, None])  # R^T (x - c)
    depth = -local[..., 2]
    safe = depth.clamp(min=1e-9)
    fx, fy, cx, cy = (t.to(points.device).float()[:, None] for t in (cameras.fx, cameras.fy, cameras.cx, cameras.cy))
    return fx * local[..., 0] / safe + cx, -fy * local[..., 1] / safe + cy, depth


def in_image(px: torch.Tensor, py: torch.Tensor, depth: torch.Tensor, cameras: "Cameras",
             near: float = 0.0) -> torch.Tensor:
    """Where projected points (see :func:`project`) land inside the image, in front of the camera."""
    return (depth > near) & (px >= 0) & (px < cameras.width) & (py >= 0) & (py < cameras.height)


def visible(points: torch.Tensor, cameras: "Cameras", near: float = 0.0) -> torch.Tensor:
    """(C, N) True where point n projects inside camera c's image, in front of it
    (camera depth > ``near``). No occlusion test: what the frustum could see."""
    return in_image(*project(points, cameras), cameras, near)


def camera_up(cameras: Cameras) -> torch.Tensor:
    """The mean up axis of the cameras (their +y), a good guess of the world's up
    for captures where people hold cameras upright; z when it is ambiguous."""
    mean = cameras.c2w[:, :3, 1].float().mean(0)
    return mean / mean.norm() if mean.norm() > 0.3 else torch.tensor([0.0, 0.0, 1.0])


def surrounds(cameras: Cameras, centre: torch.Tensor, spread: float = 0.8) -> bool:
    """True when the cameras look at ``centre`` from all around (an object scene).

    The directions from the centre to the cameras nearly cancel out when they
    surround it, and nearly agree in a forward-facing capture: compare the
    length of their mean with ``spread``.
    """
    offsets = cameras.centers.float() - centre.float()
    units = offsets / offsets.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    return bool(units.mean(0).norm() < spread)


def rays_through_pixels(c2w, fx, fy, cx, cy, px, py) -> Rays:
    """Pure ray generation for the OpenGL convention (camera looks down -z)."""
    x = (px + 0.5 - cx) / fx
    y = -(py + 0.5 - cy) / fy
    local = torch.stack([x, y, -torch.ones_like(x)], dim=-1)  # (M, 3), z = -1
    dirs = torch.einsum("mij,mj->mi", c2w[:, :3, :3], local)
    norm = dirs.norm(dim=-1)
    # |local| == |dirs| for a rotation, and the z component of local is 1 in size.
    return Rays(c2w[:, :3, 3].clone(), dirs / norm[:, None], 1.0 / norm)


def look_at(eye: torch.Tensor, target: torch.Tensor, up=(0.0, 0.0, 1.0)) -> torch.Tensor:
    """OpenGL camera-to-world matrix at ``eye`` looking at ``target`` (z-up world)."""
    eye = torch.as_tensor(eye, dtype=torch.float32)
    target = torch.as_tensor(target, dtype=torch.float32)
    up = torch.as_tensor(up, dtype=torch.float32)
    back = eye - target
    back = back / back.norm()
    right = torch.linalg.cross(up, back)
    if right.norm() < 1e-6:  # looking straight along up: pick any right axis
        right = torch.linalg.cross(torch.tensor([0.0, 1.0, 0.0]), back)
    right = right / right.norm()
    true_up = torch.linalg.cross(back, right)
    m = torch.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, true_up, back, eye
    return m


def intrinsics_from_fov(camera_angle_x: float, width: int, height: int):
    """(fx, fy, cx, cy) for Blender's horizontal field of view and square pixels."""
    fx = 0.5 * width / torch.tan(torch.tensor(0.5 * camera_angle_x)).item()
    return fx, fx, width / 2.0, height / 2.0
