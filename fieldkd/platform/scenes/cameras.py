"""Cameras (pinhole or with a lens model, see :mod:`lens`) and the rays they cast.

Internally every camera-to-world matrix uses the OpenGL / Blender convention:
the camera looks down its local -z axis, +y is up and +x is right. Readers of
formats with another convention (OpenCV: +z forward, +y down) convert with
:func:`opencv_to_opengl` when they load.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import lens

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
    """N cameras sharing one image size and one lens model.

    ``distortion`` (N, D) holds each camera's parameters of ``model`` (see
    :data:`lens.PARAMS`); None for pinholes. Rays of a distorted camera go
    through the lens: the pixel grid is undistorted once per distinct set of
    intrinsics and cached (float32 directions, (H, W, 3) per set).
    """

    c2w: torch.Tensor  # (N, 4, 4) OpenGL convention
    fx: torch.Tensor  # (N,)
    fy: torch.Tensor  # (N,)
    cx: torch.Tensor  # (N,)
    cy: torch.Tensor  # (N,)
    width: int
    height: int
    model: str = "pinhole"
    distortion: torch.Tensor | None = None  # (N, D)
    _grids: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        if self.model not in lens.MODELS:
            raise ValueError(f"unknown camera model {self.model!r} (known: {', '.join(lens.MODELS)})")
        expected = len(lens.PARAMS[self.model])
        if self.distortion is None and expected:
            raise ValueError(f"camera model {self.model} needs distortion parameters")
        if self.distortion is not None and tuple(self.distortion.shape) != (self.c2w.shape[0], expected):
            raise ValueError(f"distortion must be ({self.c2w.shape[0]}, {expected}) for model {self.model}, "
                             f"got {tuple(self.distortion.shape)}")

    def __len__(self) -> int:
        return self.c2w.shape[0]

    def __getitem__(self, index) -> "Cameras":
        index = torch.as_tensor(index).reshape(-1)
        return Cameras(
            self.c2w[index], self.fx[index], self.fy[index], self.cx[index], self.cy[index],
            self.width, self.height, self.model,
            None if self.distortion is None else self.distortion[index],
        )

    @property
    def centers(self) -> torch.Tensor:
        return self.c2w[:, :3, 3]

    @property
    def pinhole(self) -> bool:
        """True when rays are pinhole rays (no lens model, or zero coefficients)."""
        return lens.is_pinhole(self.model, self.distortion)

    def rays_at(self, cam_idx: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> Rays:
        """Rays through pixel coordinates (px, py) of cameras cam_idx (all (M,)).

        Pixel centres are at integer + 0.5, as in Blender's renders.
        """
        if self.pinhole:
            return rays_through_pixels(
                self.c2w[cam_idx], self.fx[cam_idx], self.fy[cam_idx],
                self.cx[cam_idx], self.cy[cam_idx], px, py,
            )
        cam_idx = torch.as_tensor(cam_idx, dtype=torch.long)
        whole = bool(((px == px.floor()) & (py == py.floor())).all()) and (
            px.numel() == 0 or (px.min() >= 0 and py.min() >= 0 and px.max() < self.width
                                and py.max() < self.height))
        if whole:
            groups, grids = self._pixel_grids()
            local = grids[groups[cam_idx], py.long(), px.long()]
        else:
            local = self.lens_directions(cam_idx, px, py).float()
        return rays_from_directions(self.c2w[cam_idx], local)

    def lens_directions(self, cam_idx, px, py) -> torch.Tensor:
        """Unit OpenCV-frame directions through pixels (float64), through the lens (no cache)."""
        d = lambda t: t[cam_idx].double()  # noqa: E731
        xd = (px.double() + 0.5 - d(self.cx)) / d(self.fx)
        yd = (py.double() + 0.5 - d(self.cy)) / d(self.fy)
        return lens.undistort(self.model, self.distortion[cam_idx].double(), xd, yd)

    def _pixel_grids(self):
        """(group of each camera (N,), undistorted pixel grid per group (G, H, W, 3)), cached."""
        if "grids" not in self._grids:
            table = torch.cat([torch.stack([self.fx, self.fy, self.cx, self.cy], -1).double(),
                               self.distortion.double()], -1)
            unique, groups = torch.unique(table, dim=0, return_inverse=True)
            ys, xs = torch.meshgrid(torch.arange(self.height, dtype=torch.float64),
                                    torch.arange(self.width, dtype=torch.float64), indexing="ij")
            grids = []
            for g in range(unique.shape[0]):
                first = int((groups == g).nonzero()[0, 0])
                idx = torch.full((self.height * self.width,), first, dtype=torch.long)
                grids.append(self.lens_directions(idx, xs.reshape(-1), ys.reshape(-1))
                             .float().reshape(self.height, self.width, 3))
            self._grids["grids"] = (groups, torch.stack(grids))
        return self._grids["grids"]

    def image_rays(self, index: int) -> Rays:
        """All H*W rays of one camera, in row-major pixel order."""
        ys, xs = torch.meshgrid(
            torch.arange(self.height, dtype=torch.float32),
            torch.arange(self.width, dtype=torch.float32),
            indexing="ij",
        )
        idx = torch.full((self.height * self.width,), index, dtype=torch.long)
        return self.rays_at(idx, xs.reshape(-1), ys.reshape(-1))


def rays_from_directions(c2w: torch.Tensor, local_opencv: torch.Tensor) -> Rays:
    """Rays of unit directions given in each camera's OpenCV frame (M, 3); z_scale is their z."""
    local = local_opencv * torch.tensor([1.0, -1.0, -1.0], dtype=local_opencv.dtype)  # to OpenGL axes
    dirs = torch.einsum("mij,mj->mi", c2w[:, :3, :3].to(local.dtype), local)
    return Rays(c2w[:, :3, 3].clone(), dirs / dirs.norm(dim=-1, keepdim=True), local_opencv[:, 2].clone())


def project(points: torch.Tensor, cameras: "Cameras") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pixel coordinates px, py and camera z-depth of points (N, 3) in every camera: (C, N) each.
    OpenGL cameras look down -z; pixel centres are at integer + 0.5; lens models apply."""
    points = points.reshape(-1, 3).float()
    c2w = cameras.c2w.to(points.device).float()
    rot, centre = c2w[:, :3, :3], c2w[:, :3, 3]
    local = torch.einsum("cji,cnj->cni", rot, points[None] - centre[:, None])  # R^T (x - c)
    depth = -local[..., 2]
    fx, fy, cx, cy = (t.to(points.device).float()[:, None] for t in (cameras.fx, cameras.fy, cameras.cx, cameras.cy))
    if cameras.pinhole:
        safe = depth.clamp(min=1e-9)
        return fx * local[..., 0] / safe + cx, -fy * local[..., 1] / safe + cy, depth
    opencv = local * torch.tensor([1.0, -1.0, -1.0], device=points.device)
    if cameras.model in ("pinhole", "opencv"):  # the plane projection needs a point in front
        opencv = torch.cat([opencv[..., :2], opencv[..., 2:].clamp(min=1e-9)], -1)
    params = cameras.distortion.to(points.device).float()[:, None, :]
    xd, yd = lens.distort_directions(cameras.model, params, opencv)
    return fx * xd + cx, fy * yd + cy, depth


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
