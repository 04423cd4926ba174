"""Sphere-tracing renderer for analytic SDF scenes (batched torch on CPU).

Per pixel it returns premultiplied RGB and alpha averaged over a 2x2 grid of
sub-pixel rays (anti-aliased edges), plus z-depth and world normal of the ray
through the pixel centre, so ``origin + depth / z_scale * direction`` lies on
the surface exactly (to the trace tolerance). Shading: Lambertian with one
directional light and ambient, plus a small Blinn-Phong highlight; interiors
pass a :class:`Light` at a point instead (a directional light from above would
leave ceilings and walls facing away from it flat grey).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ..train.progress import Counter
from . import sdf
from .cameras import Cameras, Rays
from .sdf import SceneSpec

LIGHT_DIR = torch.nn.functional.normalize(torch.tensor([0.35, 0.25, 0.9]), dim=0)
AMBIENT = 0.3
SHININESS = 40.0
SUBPIXEL_OFFSETS = ((-0.25, -0.25), (0.25, -0.25), (-0.25, 0.25), (0.25, 0.25))
HIT_EPS = 1e-4  # a ray has hit once the SDF is below this
MAX_STEPS = 256


@dataclass(frozen=True)
class Light:
    """A point light (``position`` in world units) with its own ambient term.

    ``None`` in place of a Light means the object scenes' directional light
    ``LIGHT_DIR`` with ``AMBIENT``.
    """

    position: tuple[float, float, float]
    ambient: float = AMBIENT


@contextmanager
def one_thread():
    """Run torch single-threaded: the tracer's many small ops gain little from threads,
    and OpenMP spin-waiting makes them ~10x slower when other processes share the cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def box_corners(bound):
    """(min, max) corners of ``bound``: a half-size (the cube [-bound, bound]^3) or a (2, 3) box."""
    if isinstance(bound, (int, float)):
        return -bound, bound
    box = torch.as_tensor(bound, dtype=torch.float32).reshape(2, 3)
    return box[0], box[1]


def ray_box(origins, dirs, half):
    """Entry and exit distances of rays through the box ``half`` (see :func:`box_corners`; slab test)."""
    low, high = box_corners(half)
    safe = torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12), dirs)
    t0 = (low - origins) / safe
    t1 = (high - origins) / safe
    t_near = torch.minimum(t0, t1).amax(dim=-1).clamp(min=0.0)
    t_far = torch.maximum(t0, t1).amin(dim=-1)
    return t_near, t_far


@torch.no_grad()
def sphere_trace(distance_fn, origins, dirs, t_near, t_far, eps=HIT_EPS, max_steps=MAX_STEPS):
    """March each ray by the SDF value until it is below eps or leaves [t_near, t_far].

    Returns (t, hit). Only still-marching rays are evaluated each step, so
    misses and converged rays cost nothing further.
    """
    t = t_near.clone()
    hit = torch.zeros_like(t, dtype=torch.bool)
    active = torch.nonzero(t_near < t_far).squeeze(1)
    for _ in range(max_steps):
        if active.numel() == 0:
            break
        d = distance_fn(origins[active] + t[active, None] * dirs[active])
        done = d < eps
        hit[active[done]] = True
        t_next = t[active] + d
        marching = ~done & (t_next < t_far[active])
        t[active[marching]] = t_next[marching]
        active = active[marching]
    return t, hit


def shade(spec: SceneSpec, points, dirs, normal, index, light: Light | None = None, base=None):
    """Lambert + ambient + Blinn-Phong highlight, clamped to [0, 1]. ``base``: the albedo at the
    points when the caller has it (shading one set of hits under several lights)."""
    base = sdf.albedo(spec, points, index) if base is None else base
    if light is None:
        to_light, ambient = LIGHT_DIR.to(points), AMBIENT
        diffuse = (normal @ to_light).clamp(min=0.0)
    else:
        to_light = torch.nn.functional.normalize(torch.tensor(light.position).to(points) - points, dim=-1)
        ambient = light.ambient
        diffuse = (normal * to_light).sum(-1).clamp(min=0.0)
    half = torch.nn.functional.normalize(to_light - dirs, dim=-1)
    highlight = (normal * half).sum(-1).clamp(min=0.0) ** SHININESS
    rgb = base * (ambient + (1 - ambient) * diffuse[:, None])
    rgb = rgb + (sdf.specular(spec, index) * highlight)[:, None]
    return rgb.clamp(0.0, 1.0)


@torch.no_grad()
def render_rays(spec: SceneSpec, rays: Rays, bound, light: Light | None = None, max_steps: int = MAX_STEPS):
    """Trace rays against the scene inside the box ``bound`` (see :func:`box_corners`).

    Returns dict with hit (M,), t (M,), rgb (M, 3) and normal (M, 3); zeros on misses.
    """
    t_near, t_far = ray_box(rays.origins, rays.directions, bound)
    t, hit = sphere_trace(lambda p: sdf.union_distance(spec, p), rays.origins, rays.directions, t_near, t_far,
                          max_steps=max_steps)
    rgb = torch.zeros_like(rays.origins)
    normal = torch.zeros_like(rays.origins)
    if hit.any():
        points = rays.origins[hit] + t[hit, None] * rays.directions[hit]
        _, index = sdf.union(spec, points)
        normal[hit] = sdf.normals(spec, points)
        rgb[hit] = shade(spec, points, rays.directions[hit], normal[hit], index, light)
    return {"hit": hit, "t": torch.where(hit, t, torch.zeros_like(t)), "rgb": rgb, "normal": normal}


def _pixel_grid(cameras: Cameras, views: torch.Tensor):
    pixels = cameras.height * cameras.width
    ys, xs = torch.meshgrid(
        torch.arange(cameras.height, dtype=torch.float32),
        torch.arange(cameras.width, dtype=torch.float32),
        indexing="ij",
    )
    cam = views.repeat_interleave(pixels)
    return cam, xs.reshape(-1).repeat(len(views)), ys.reshape(-1).repeat(len(views))


@torch.no_grad()
def render_views(spec: SceneSpec, cameras: Cameras, bound, progress: bool = False,
                 rays_per_batch: int = 1 << 18, desc: str = "render", light: Light | None = None,
                 max_steps: int = MAX_STEPS):
    """Render every camera. Returns dict of (N, H, W, ...) tensors:

    rgb (premultiplied by coverage), alpha (coverage of the 2x2 sub-pixels),
    depth (camera z of the centre ray, 0 on miss), normal (world, 0 on miss).
    Rays that graze a surface converge slowly; closed scenes, where every ray
    must hit, give a larger ``max_steps``.
    """
    n, h, w = len(cameras), cameras.height, cameras.width
    out = {
        "rgb": torch.zeros(n, h, w, 3), "alpha": torch.zeros(n, h, w),
        "depth": torch.zeros(n, h, w), "normal": torch.zeros(n, h, w, 3),
    }
    samples = len(SUBPIXEL_OFFSETS) + 1
    per_batch = max(1, rays_per_batch // (h * w * samples))
    with one_thread(), Counter(desc, n, enabled=progress, unit="view") as bar:
        for start in range(0, n, per_batch):
            views = torch.arange(start, min(start + per_batch, n))
            cam, px, py = _pixel_grid(cameras, views)
            # Sub-pixel rays for colour and coverage, then the centre ray for geometry.
            offsets = list(SUBPIXEL_OFFSETS) + [(0.0, 0.0)]
            rays = [cameras.rays_at(cam, px + dx, py + dy) for dx, dy in offsets]
            all_rays = Rays(*(torch.cat([getattr(r, f) for r in rays])
                              for f in ("origins", "directions", "z_scale")))
            res = render_rays(spec, all_rays, bound, light, max_steps)
            m = len(cam)
            shape = (len(views), h, w)
            hits = res["hit"][: -m].reshape(samples - 1, m).float()
            colors = res["rgb"][: -m].reshape(samples - 1, m, 3)
            out["rgb"][views] = (colors * hits[..., None]).mean(0).reshape(*shape, 3)
            out["alpha"][views] = hits.mean(0).reshape(shape)
            centre = rays[-1]
            out["depth"][views] = (res["t"][-m:] * centre.z_scale).reshape(shape)
            out["normal"][views] = res["normal"][-m:].reshape(*shape, 3)
            bar.update(len(views))
    return out
