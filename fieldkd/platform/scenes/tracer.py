"""Sphere-tracing renderer for analytic SDF scenes (batched torch on CPU).

Per pixel it returns premultiplied RGB and alpha averaged over a 2x2 grid of
sub-pixel rays (anti-aliased edges), plus z-depth and world normal of the ray
through the pixel centre, so ``origin + depth / z_scale * direction`` lies on
the surface exactly (to the trace tolerance). Shading: Lambertian with one
directional light and ambient, plus a small Blinn-Phong highlight.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from tqdm import tqdm

from . import sdf
from .cameras import Cameras, Rays
from .sdf import SceneSpec

LIGHT_DIR = torch.nn.functional.normalize(torch.tensor([0.35, 0.25, 0.9]), dim=0)
AMBIENT = 0.3
SHININESS = 40.0
SUBPIXEL_OFFSETS = ((-0.25, -0.25), (0.25, -0.25), (-0.25, 0.25), (0.25, 0.25))
HIT_EPS = 1e-4  # a ray has hit once the SDF is below this
MAX_STEPS = 256


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


def ray_box(origins, dirs, half: float):
    """Entry and exit distances of rays through the cube [-half, half]^3 (slab test)."""
    safe = torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12), dirs)
    t0 = (-half - origins) / safe
    t1 = (half - origins) / safe
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


def shade(spec: SceneSpec, points, dirs, normal, index):
    """Lambert + ambient + Blinn-Phong highlight, clamped to [0, 1]."""
    base = sdf.albedo(spec, points, index)
    light = LIGHT_DIR.to(points)
    diffuse = (normal @ light).clamp(min=0.0)
    half = torch.nn.functional.normalize(light - dirs, dim=-1)
    highlight = (normal * half).sum(-1).clamp(min=0.0) ** SHININESS
    rgb = base * (AMBIENT + (1 - AMBIENT) * diffuse[:, None])
    rgb = rgb + (sdf.specular(spec, index) * highlight)[:, None]
    return rgb.clamp(0.0, 1.0)


@torch.no_grad()
def render_rays(spec: SceneSpec, rays: Rays, bound: float):
    """Trace rays against the scene inside [-bound, bound]^3.

    Returns dict with hit (M,), t (M,), rgb (M, 3) and normal (M, 3); zeros on misses.
    """
    t_near, t_far = ray_box(rays.origins, rays.directions, bound)
    t, hit = sphere_trace(lambda p: sdf.union_distance(spec, p), rays.origins, rays.directions, t_near, t_far)
    rgb = torch.zeros_like(rays.origins)
    normal = torch.zeros_like(rays.origins)
    if hit.any():
        points = rays.origins[hit] + t[hit, None] * rays.directions[hit]
        _, index = sdf.union(spec, points)
        normal[hit] = sdf.normals(spec, points)
        rgb[hit] = shade(spec, points, rays.directions[hit], normal[hit], index)
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
def render_views(spec: SceneSpec, cameras: Cameras, bound: float, progress: bool = False,
                 rays_per_batch: int = 1 << 18, desc: str = "render"):
    """Render every camera. Returns dict of (N, H, W, ...) tensors:

    rgb (premultiplied by coverage), alpha (coverage of the 2x2 sub-pixels),
    depth (camera z of the centre ray, 0 on miss), normal (world, 0 on miss).
    """
    n, h, w = len(cameras), cameras.height, cameras.width
    out = {
        "rgb": torch.zeros(n, h, w, 3), "alpha": torch.zeros(n, h, w),
        "depth": torch.zeros(n, h, w), "normal": torch.zeros(n, h, w, 3),
    }
    samples = len(SUBPIXEL_OFFSETS) + 1
    per_batch = max(1, rays_per_batch // (h * w * samples))
    with one_thread(), tqdm(total=n, desc=desc, unit="view", disable=not progress, leave=False) as bar:
        for start in range(0, n, per_batch):
            views = torch.arange(start, min(start + per_batch, n))
            cam, px, py = _pixel_grid(cameras, views)
            # Sub-pixel rays for colour and coverage, then the centre ray for geometry.
            offsets = list(SUBPIXEL_OFFSETS) + [(0.0, 0.0)]
            rays = [cameras.rays_at(cam, px + dx, py + dy) for dx, dy in offsets]
            all_rays = Rays(*(torch.cat([getattr(r, f) for r in rays])
                              for f in ("origins", "directions", "z_scale")))
            res = render_rays(spec, all_rays, bound)
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
