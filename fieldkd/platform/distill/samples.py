"""Where teacher and student meet: the sample points along inquired rays, and the
teacher's answers there.

The points follow the student renderer's layout (its scene box, near/far,
samples per ray, and its occupancy grid, which the student inherits from the
teacher; see :func:`occupancy_from_teacher`), jittered by a generator of the
source's own. Because nothing in that choice depends on the student's changing
weights, a batch can be computed ahead of time and stored (:mod:`.store`),
and a student trained from the store sees exactly what one trained on the fly
sees.

A :class:`DistillBatch` holds per ray: the ray, the interval layout, the
teacher's rendered rgb/depth/opacity over those points (and ground-truth
colours when the rays come from real images); per live sample: the teacher's
raw density, density, colour and feature, in the order boolean indexing
with ``live`` gives.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields, replace

import torch

from ..fields.output import FieldOutput
from ..render.composite import composite
from ..render.occupancy import OccupancyGrid
from ..render.renderer import Renderer
from ..render.samplers import ray_bounds, stratified
from ..scenes.cameras import Rays
from .inquirers import make_generator
from .teacher import Teacher


@dataclass
class SampleLayout:
    """How points are laid out along rays: the student renderer's settings."""

    aabb: torch.Tensor  # (2, 3)
    near: float
    far: float
    samples_per_ray: int
    background: torch.Tensor  # (3,)
    grid: OccupancyGrid | None = None  # live samples must lie in occupied cells

    @classmethod
    def from_renderer(cls, renderer: Renderer) -> "SampleLayout":
        return cls(renderer.aabb, renderer.near, renderer.far, renderer.cfg.samples_per_ray,
                   renderer.background, renderer.grid)

    def grid_digest(self) -> str | None:
        """Identifies the occupancy the live samples follow (None without a grid)."""
        if self.grid is None:
            return None
        return hashlib.sha1(self.grid.occupied.cpu().numpy().tobytes()).hexdigest()

    def describe(self) -> dict:
        """Plain data that identifies the layout (the grid is summarised by its occupancy)."""
        return {"aabb": [float(v) for v in self.aabb.reshape(-1).tolist()], "near": float(self.near),
                "far": float(self.far), "samples_per_ray": int(self.samples_per_ray),
                "background": [float(v) for v in self.background.tolist()]}

    def intervals(self, t_near: torch.Tensor, t_far: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t_starts, t_ends, _ = stratified(t_near, t_far, self.samples_per_ray, jitter=False)
        return t_starts, t_ends

    def place(self, rays: Rays, generator: torch.Generator):
        """t_near, t_far (R,), t_starts, t_ends, t_points (R, S), positions (R, S, 3), live (R, S)."""
        t_near, t_far = ray_bounds(rays.origins, rays.directions, self.aabb.to(rays.origins.device),
                                   self.near, self.far)
        t_starts, t_ends = self.intervals(t_near, t_far)
        frac = torch.rand(t_starts.shape, generator=generator).to(t_starts.device)
        t_points = t_starts + frac * (t_ends - t_starts)
        positions = rays.origins[:, None, :] + rays.directions[:, None, :] * t_points[..., None]
        live = t_ends > t_starts
        if self.grid is not None:
            live &= self.grid.query(positions)
        return t_near, t_far, t_starts, t_ends, t_points, positions, live


@dataclass
class TeacherSamples:
    """The teacher at the live samples (L = live.sum())."""

    raw_density: torch.Tensor  # (L,)
    density: torch.Tensor  # (L,)
    rgb: torch.Tensor  # (L, 3)
    feature: torch.Tensor | None  # (L, F) or None (a grid teacher)


@dataclass
class DistillBatch:
    rays: Rays
    t_near: torch.Tensor  # (R,)
    t_far: torch.Tensor  # (R,)
    t_starts: torch.Tensor  # (R, S)
    t_ends: torch.Tensor  # (R, S)
    t_points: torch.Tensor  # (R, S)
    positions: torch.Tensor  # (R, S, 3)
    live: torch.Tensor  # (R, S) bool
    teacher: TeacherSamples
    teacher_rgb: torch.Tensor  # (R, 3) rendered on the batch's own points
    teacher_depth: torch.Tensor  # (R,) camera z-depth
    teacher_opacity: torch.Tensor  # (R,)
    row: torch.Tensor  # (R,) int64: position in the inquiry sequence
    pose: torch.Tensor  # (R,) int64: pose index within the draw (the row for single-ray poses)
    colours: torch.Tensor | None = None  # (R, 3) ground truth, when the rays come from real images

    def __len__(self) -> int:
        return self.t_near.shape[0]

    @property
    def directions(self) -> torch.Tensor:
        """(L, 3) view direction of each live sample."""
        return self.rays.directions[:, None, :].expand_as(self.positions)[self.live]

    def dense(self, values: torch.Tensor) -> torch.Tensor:
        """Live-sample values (L, ...) -> (R, S, ...) with zeros at dead samples."""
        out = values.new_zeros(*self.live.shape, *values.shape[1:])
        out[self.live] = values
        return out

    def to(self, device) -> "DistillBatch":
        def move(v):
            if isinstance(v, (torch.Tensor, Rays)):
                return v.to(device)
            if isinstance(v, TeacherSamples):
                return TeacherSamples(*(x.to(device) if x is not None else None
                                        for x in (v.raw_density, v.density, v.rgb, v.feature)))
            return v

        return replace(self, **{f.name: move(getattr(self, f.name)) for f in fields(self)})


def empty_output(field, device) -> FieldOutput:
    """What a field returns for no points (not every encoding accepts an empty batch)."""
    zeros = torch.zeros(0, device=device)
    feature = torch.zeros(0, field.feature_dim, device=device) if field.has_feature else None
    return FieldOutput(zeros, zeros.clone(), torch.zeros(0, 3, device=device), feature)


def teacher_render(layout: SampleLayout, densities: torch.Tensor, colours: torch.Tensor, t_starts: torch.Tensor,
                   t_ends: torch.Tensor, z_scale: torch.Tensor) -> dict[str, torch.Tensor]:
    """Composite dense (R, S) densities and (R, S, 3) colours as the renderer does."""
    out = composite(densities, t_starts, t_ends, colours, layout.background.to(densities.device))
    out["depth"] = out["depth"] * z_scale
    return out


class OnTheFlySource:
    """Inquire, lay out points, ask the teacher: one :class:`DistillBatch` per call.

    ``inquirer.sample(n)`` gives the rays; the points' jitter comes from this
    source's generator. ``state_dict`` holds both generators' states and the
    row count, so a resumed run continues the same sequence.
    """

    def __init__(self, inquirer, teacher: Teacher, layout: SampleLayout, *, seed: int | None = 0,
                 generator: torch.Generator | None = None, device="cpu"):
        self.inquirer = inquirer
        self.teacher = teacher
        self.layout = layout
        self.generator = make_generator(seed, generator)
        self.device = torch.device(device)
        self.rows = 0

    def next(self, n: int) -> DistillBatch:
        inquiry = self.inquirer.sample(int(n))
        rays = inquiry.rays.to(self.device)
        t_near, t_far, t_starts, t_ends, t_points, positions, live = self.layout.place(rays, self.generator)
        dirs = rays.directions[:, None, :].expand_as(positions)[live]
        views = inquiry.views.to(self.device)[:, None].expand_as(live)[live] if inquiry.views is not None else None
        out = (self.teacher.query(positions[live], dirs, views) if live.any()
               else empty_output(self.teacher.field, positions.device))
        samples = TeacherSamples(out.raw_density.float(), out.density.float(), out.rgb.float(),
                                 out.feature.float() if out.feature is not None else None)
        densities = t_starts.new_zeros(t_starts.shape)
        colours = t_starts.new_zeros(*t_starts.shape, 3)
        densities[live] = samples.density
        colours[live] = samples.rgb
        render = teacher_render(self.layout, densities, colours, t_starts, t_ends, rays.z_scale)
        n_rays = len(rays)
        row = torch.arange(self.rows, self.rows + n_rays, dtype=torch.long, device=self.device)
        pose = (inquiry.pose_index.to(self.device) if inquiry.pose_index is not None
                else torch.arange(n_rays, dtype=torch.long, device=self.device))
        self.rows += n_rays
        gt = inquiry.colours.to(self.device).float() if inquiry.colours is not None else None
        return DistillBatch(rays, t_near, t_far, t_starts, t_ends, t_points, positions, live, samples,
                            render["rgb"], render["depth"], render["opacity"], row, pose, gt)

    def state_dict(self) -> dict:
        return {"inquirer": self.inquirer.state_dict(), "generator": self.generator.get_state(), "rows": self.rows}

    def fingerprint(self) -> str:
        """Identifies what this source will draw from here on: its kind, its generators' states."""
        digest = hashlib.sha1(type(self.inquirer).__name__.encode())
        for state in (self.inquirer.state_dict().get("generator"), self.generator.get_state()):
            if state is not None:
                digest.update(state.cpu().numpy().tobytes())
        digest.update(str(self.rows).encode())
        return digest.hexdigest()

    def load_state_dict(self, state: dict) -> None:
        self.inquirer.load_state_dict(state["inquirer"])
        self.generator.set_state(state["generator"])
        self.rows = int(state["rows"])


@torch.no_grad()
def occupancy_from_teacher(renderer: Renderer, teacher: Teacher, passes: int = 4) -> None:
    """Give the student's renderer the teacher's idea of where space is empty.

    PVD's student marches through the teacher's density grid. When both grids
    have the same resolution over the same box, the teacher's is copied;
    otherwise the student's grid is filled from the teacher's density (the
    maximum over ``passes`` jittered samples per cell, scaled to one step's
    opacity as the renderer's own updates do), with the grid's own threshold.
    """
    grid = renderer.grid
    if grid is None:
        return
    source = teacher.renderer.grid if teacher.renderer is not None else None
    if (source is not None and source.resolution == grid.resolution
            and torch.allclose(source.aabb.to(grid.aabb), grid.aabb)):
        grid.load_state_dict(source.state_dict())
        return
    grid.density_ema.zero_()
    step = renderer.step_size
    for _ in range(passes):
        # Step 0 is inside the warm-up: every cell is evaluated and nothing is culled yet.
        grid.update(lambda x: teacher.density(x.to(teacher.device)).to(x) * step, step=0)
    ema = grid.density_ema
    grid.occupied.copy_(ema > min(grid.threshold, ema.mean().item()))
