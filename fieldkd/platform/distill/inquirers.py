"""Inquirers: where the teacher is asked. Each is a source with ``sample(n)``.

- :class:`SphereInquirer`: random poses on a sphere (or part of one) around
  an object, looking at its centre; radius range and elevation band from the
  training cameras, intrinsics from a random training camera.
- :class:`CameraBoxInquirer`: random camera centres in the box spanned by the
  training cameras (forward-facing scenes), each oriented like one of its
  nearest training cameras, jittered.
- :class:`TrajectoryInquirer`: random poses on a past camera trajectory (UNIKD's
  random inquirer): a uniform position along the frames, the rotation slerped
  and the position interpolated between the two neighbouring frames.
- :class:`TrainingRayInquirer`: random pixels of the training images, with or
  without their colours.
- :class:`BoxPointInquirer`: random 3D points in the scene box with random
  view directions.

Ray inquirers return an :class:`Inquiry` (rays, optional colours, and which
pose each ray belongs to); the point inquirer a :class:`PointInquiry`. All
randomness comes from the inquirer's own ``torch.Generator``, whose state
``state_dict`` saves, so a resumed run draws the same sequence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..scenes.cameras import Cameras, Rays, camera_up, rays_from_directions, rays_through_pixels
from ..scenes.poses import along_trajectory
from ..scenes.scene import SceneSplit
from ..train.photometric import PixelSampler


@dataclass
class Inquiry:
    rays: Rays
    colours: torch.Tensor | None = None  # (R, 3) ground truth where the rays come from real images
    pose_index: torch.Tensor | None = None  # (R,) which of this draw's poses each ray came from
    poses: torch.Tensor | None = None  # (P, 4, 4) the poses drawn (OpenGL camera-to-world)
    views: torch.Tensor | None = None  # (R,) the training view each ray comes from (real images only)


@dataclass
class PointInquiry:
    points: torch.Tensor  # (N, 3)
    directions: torch.Tensor  # (N, 3) unit


def make_generator(seed: int | None = None, generator: torch.Generator | None = None) -> torch.Generator:
    if generator is not None:
        return generator
    g = torch.Generator()
    g.manual_seed(0 if seed is None else int(seed))
    return g


class _Seeded:
    """Owns a CPU generator; saves and restores its state."""

    def __init__(self, seed: int | None, generator: torch.Generator | None, device):
        self.generator = make_generator(seed, generator)
        self.device = torch.device(device)

    def _rand(self, *shape) -> torch.Tensor:
        return torch.rand(*shape, generator=self.generator)

    def _randint(self, high: int, *shape) -> torch.Tensor:
        return torch.randint(0, int(high), shape, generator=self.generator)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


# -- pose helpers (pure) ----------------------------------------------------------------------


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def look_at_many(eyes: torch.Tensor, targets: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """(N, 4, 4) OpenGL camera-to-world matrices at ``eyes`` (N, 3) looking at ``targets``
    ((N, 3) or (3,)) with ``up`` (3,) as the world's up direction."""
    eyes = eyes.float()
    back = _unit(eyes - targets.float().expand_as(eyes))
    up = up.float().expand_as(back)
    right = torch.linalg.cross(up, back, dim=-1)
    # Looking straight along up: any right axis orthogonal to the view will do.
    fallback = torch.linalg.cross(torch.roll(up, 1, dims=-1), back, dim=-1)
    right = _unit(torch.where(right.norm(dim=-1, keepdim=True) < 1e-6, fallback, right))
    true_up = torch.linalg.cross(back, right, dim=-1)
    m = torch.zeros(eyes.shape[0], 4, 4)
    m[:, :3, 0], m[:, :3, 1], m[:, :3, 2], m[:, :3, 3] = right, true_up, back, eyes
    m[:, 3, 3] = 1.0
    return m


def rotation_about(axes: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rodrigues: (N, 3, 3) rotations by ``angles`` (N,) radians about unit ``axes`` (N, 3)."""
    x, y, z = _unit(axes).unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(-1, 3, 3)
    s, c = torch.sin(angles)[:, None, None], torch.cos(angles)[:, None, None]
    return torch.eye(3).expand_as(k) + s * k + (1.0 - c) * (k @ k)


def elevations(centres: torch.Tensor, centre: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """Elevation angles (radians) of points seen from ``centre``, above the plane orthogonal to ``up``."""
    offsets = centres.float() - centre.float()
    return torch.asin(((offsets @ up.float()) / offsets.norm(dim=-1).clamp(min=1e-12)).clamp(-1.0, 1.0))


def _pixel_rays(cameras: Cameras, cam: torch.Tensor, c2w: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> Rays:
    if not cameras.pinhole:  # new poses see through the training camera's lens too
        return rays_from_directions(c2w, cameras.lens_directions(cam, px, py).float())
    return rays_through_pixels(c2w, cameras.fx[cam].float(), cameras.fy[cam].float(),
                               cameras.cx[cam].float(), cameras.cy[cam].float(), px, py)


class _PoseInquirer(_Seeded):
    """Draws poses, ``rays_per_pose`` random pixels each, intrinsics from a training camera."""

    def __init__(self, cameras: Cameras, rays_per_pose: int, seed, generator, device):
        super().__init__(seed, generator, device)
        if rays_per_pose < 1:
            raise ValueError("rays_per_pose must be >= 1")
        self.cameras = cameras
        self.rays_per_pose = int(rays_per_pose)

    def poses(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, 4, 4) poses and the training camera (n,) whose intrinsics each uses."""
        raise NotImplementedError

    def sample(self, n: int) -> Inquiry:
        n_poses = -(-int(n) // self.rays_per_pose)
        poses, cam = self.poses(n_poses)
        pose_index = torch.arange(n_poses).repeat_interleave(self.rays_per_pose)[:n]
        px = self._randint(self.cameras.width, n).float()
        py = self._randint(self.cameras.height, n).float()
        rays = _pixel_rays(self.cameras, cam[pose_index], poses[pose_index], px, py)
        return Inquiry(rays.to(self.device), None, pose_index.to(self.device), poses.to(self.device))


class SphereInquirer(_PoseInquirer):
    """Random poses around an object, looking at ``centre`` (default: the box centre).

    ``elevation``: "cameras" (the band the training cameras span), "hemisphere"
    (0 to 90 degrees above the horizon) or "sphere" (all directions), or an
    explicit (low, high) pair in degrees. The radius is uniform between the
    nearest and the farthest training camera; elevations are uniform in
    sin(elevation), i.e. uniform over the sphere's area.
    """

    def __init__(self, cameras: Cameras, aabb, *, centre=None, elevation="cameras", up=None,
                 rays_per_pose: int = 1, seed: int | None = 0, generator: torch.Generator | None = None,
                 device="cpu"):
        super().__init__(cameras, rays_per_pose, seed, generator, device)
        box = torch.as_tensor(aabb, dtype=torch.float32).reshape(2, 3)
        self.centre = box.mean(0) if centre is None else torch.as_tensor(centre, dtype=torch.float32)
        self.up = camera_up(cameras) if up is None else _unit(torch.as_tensor(up, dtype=torch.float32))
        centres = cameras.centers.float()
        distance = (centres - self.centre).norm(dim=-1)
        self.radius = (float(distance.min()), float(distance.max()))
        if elevation == "cameras":
            elev = elevations(centres, self.centre, self.up)
            band = (float(elev.min()), float(elev.max()))
        elif elevation == "hemisphere":
            band = (0.0, math.pi / 2)
        elif elevation == "sphere":
            band = (-math.pi / 2, math.pi / 2)
        else:
            low, high = (math.radians(float(e)) for e in elevation)
            band = (low, high)
        self.elevation = band
        # An orthonormal basis of the horizon plane.
        helper = torch.tensor([1.0, 0.0, 0.0]) if abs(float(self.up[0])) < 0.9 else torch.tensor([0.0, 1.0, 0.0])
        self.east = _unit(torch.linalg.cross(self.up, helper, dim=-1))
        self.north = torch.linalg.cross(self.up, self.east, dim=-1)

    def poses(self, n: int):
        lo, hi = self.elevation
        z = math.sin(lo) + self._rand(n) * (math.sin(hi) - math.sin(lo))
        elev = torch.asin(z.clamp(-1.0, 1.0))
        azim = self._rand(n) * (2 * math.pi)
        radius = self.radius[0] + self._rand(n) * (self.radius[1] - self.radius[0])
        horizontal = torch.cos(azim)[:, None] * self.east + torch.sin(azim)[:, None] * self.north
        direction = torch.cos(elev)[:, None] * horizontal + torch.sin(elev)[:, None] * self.up
        eyes = self.centre + radius[:, None] * direction
        cam = self._randint(len(self.cameras), n)
        return look_at_many(eyes, self.centre, self.up), cam


class CameraBoxInquirer(_PoseInquirer):
    """Random camera centres in the box the training cameras span; each takes the
    orientation and intrinsics of one of its ``k_nearest`` training cameras,
    rotated by a random angle up to ``jitter_deg`` about a random axis."""

    def __init__(self, cameras: Cameras, *, jitter_deg: float = 5.0, k_nearest: int = 1, rays_per_pose: int = 1,
                 seed: int | None = 0, generator: torch.Generator | None = None, device="cpu"):
        super().__init__(cameras, rays_per_pose, seed, generator, device)
        centres = cameras.centers.float()
        self.box = torch.stack([centres.min(0).values, centres.max(0).values])
        self.jitter = math.radians(float(jitter_deg))
        self.k = max(1, min(int(k_nearest), len(cameras)))

    def poses(self, n: int):
        lo, hi = self.box
        eyes = lo + self._rand(n, 3) * (hi - lo)
        nearest = torch.cdist(eyes, self.cameras.centers.float()).topk(self.k, largest=False).indices  # (n, k)
        cam = nearest.gather(1, self._randint(self.k, n, 1)).squeeze(1)
        axes = torch.randn(n, 3, generator=self.generator)
        turn = rotation_about(axes, self._rand(n) * self.jitter)
        c2w = torch.zeros(n, 4, 4)
        c2w[:, :3, :3] = turn @ self.cameras.c2w[cam, :3, :3].float()
        c2w[:, :3, 3] = eyes
        c2w[:, 3, 3] = 1.0
        return c2w, cam


class TrajectoryInquirer(_PoseInquirer):
    """Poses between consecutive frames of a trajectory (``cameras`` in frame order):
    u ~ U(0, 1) over the normalised frame index, then slerp / lerp between the two
    neighbouring frames; intrinsics from the earlier one."""

    def __init__(self, cameras: Cameras, *, rays_per_pose: int = 1, seed: int | None = 0,
                 generator: torch.Generator | None = None, device="cpu"):
        super().__init__(cameras, rays_per_pose, seed, generator, device)

    def poses(self, n: int):
        return along_trajectory(self.cameras.c2w.float(), self._rand(n))


class TrainingRayInquirer(_Seeded):
    """Random pixels of a split's images (a :class:`PixelSampler` with its own generator)."""

    def __init__(self, split: SceneSplit, *, with_colours: bool = True, seed: int | None = 0,
                 generator: torch.Generator | None = None, device="cpu"):
        super().__init__(seed, generator, device)
        self.pixels = PixelSampler(split, self.device, generator=self.generator)
        self.with_colours = with_colours

    def sample(self, n: int) -> Inquiry:
        rays, colours, views = self.pixels.draw(int(n))
        return Inquiry(rays, colours if self.with_colours else None, None, None, views)


class BoxPointInquirer(_Seeded):
    """Uniform points in the scene box, each with a uniform random unit direction."""

    def __init__(self, aabb, *, seed: int | None = 0, generator: torch.Generator | None = None, device="cpu"):
        super().__init__(seed, generator, device)
        self.aabb = torch.as_tensor(aabb, dtype=torch.float32).reshape(2, 3)

    def sample(self, n: int) -> PointInquiry:
        lo, hi = self.aabb
        points = lo + self._rand(int(n), 3) * (hi - lo)
        directions = _unit(torch.randn(int(n), 3, generator=self.generator))
        return PointInquiry(points.to(self.device), directions.to(self.device))
