"""Volume rendering against closed-form answers."""

import math

import pytest
import torch

from fieldkd.platform.render import OccupancyGrid, Renderer, RenderConfig, composite, ray_aabb_intersect, stratified
from fieldkd.platform.render.renderer import MIN_REFRESH_CELLS
from fieldkd.platform.render.packed import composite_packed, visible_samples
from fieldkd.platform.scenes.cameras import look_at, rays_through_pixels

# Every rendering test runs on the padded (rays, samples) layout and on packed samples (render.packed).
LAYOUTS = pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])


def composite_in(packed, densities, t_starts, t_ends, colors=None, background=None):
    """composite() on (R, S) inputs, or composite_packed() on the same samples as a flat list."""
    if not packed:
        return composite(densities, t_starts, t_ends, colors, background)
    n_rays, n_samples = densities.shape
    ray_indices = torch.arange(n_rays).repeat_interleave(n_samples)
    flat_colors = None if colors is None else colors.reshape(n_rays * n_samples, -1)
    return composite_packed(densities.reshape(-1), t_starts.reshape(-1), t_ends.reshape(-1), ray_indices, n_rays,
                            flat_colors, background)


@LAYOUTS
def test_constant_density_slab_transmittance(packed):
    # A ray crossing a slab of density sigma and thickness L keeps exp(-sigma * L) of its light.
    sigma, thickness = 0.7, 2.5
    t = torch.linspace(0.0, thickness, 257)[None]
    densities = torch.full((1, 256), sigma)
    out = composite_in(packed, densities, t[:, :-1], t[:, 1:])
    assert math.isclose(1.0 - out["opacity"].item(), math.exp(-sigma * thickness), rel_tol=1e-5)


@LAYOUTS
def test_composite_onto_background(packed):
    t = torch.linspace(2.0, 4.0, 65)[None]
    densities = torch.full((1, 64), 0.3)
    colors = torch.tensor([1.0, 0.0, 0.0]).expand(1, 64, 3)
    out = composite_in(packed, densities, t[:, :-1], t[:, 1:], colors, background=torch.tensor([0.0, 0.0, 1.0]))
    keep = math.exp(-0.3 * 2.0)
    assert torch.allclose(out["rgb"], torch.tensor([[1 - keep, 0.0, keep]]), atol=1e-5)


AABB = torch.tensor([[-1.0] * 3, [1.0] * 3])


def test_ray_box_intersection():
    origins = torch.tensor([[-3.0, 0.0, 0.0], [-3.0, 5.0, 0.0]])
    dirs = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    t_in, t_out = ray_aabb_intersect(origins, dirs, torch.tensor([[-1.0] * 3, [1.0] * 3]))
    assert torch.allclose(t_in[0], torch.tensor(2.0)) and torch.allclose(t_out[0], torch.tensor(4.0))
    assert t_out[1] < t_in[1]  # the second ray misses


class SolidSphere(torch.nn.Module):
    """A field with a very dense ball of radius r at the origin, coloured by position."""

    def __init__(self, radius=0.5, sigma=1e4):
        super().__init__()
        self.radius, self.sigma = radius, sigma

    def density(self, x):
        return torch.where(x.norm(dim=-1) < self.radius, self.sigma, 0.0)

    def forward(self, x, d):
        class Out:
            pass

        out = Out()
        out.density = self.density(x)
        out.rgb = (x * 0.5 + 0.5).clamp(0, 1)
        return out


@LAYOUTS
def test_sphere_depth_matches_closed_form(packed):
    # Camera at distance 3 looking at a unit-density ball of radius 0.5: the centre
    # pixel's depth is 2.5, and an off-centre ray's distance solves |o + t d| = r.
    c2w = look_at(torch.tensor([3.0, 0.0, 0.0]), torch.zeros(3))[None]
    renderer = Renderer(torch.tensor([[-1.0] * 3, [1.0] * 3]), 0.1, 10.0, torch.ones(3),
                        RenderConfig(samples_per_ray=2048, occupancy=False, packed=packed))
    f = torch.tensor([100.0])
    px, py = torch.tensor([50.0 - 0.5, 60.0 - 0.5]), torch.tensor([50.0 - 0.5, 50.0 - 0.5])
    rays = rays_through_pixels(c2w.expand(2, 4, 4), f.expand(2), f.expand(2), torch.tensor([50.0] * 2),
                               torch.tensor([50.0] * 2), px, py)
    out = renderer.render_rays(SolidSphere(), rays)
    assert out["opacity"][0] > 0.999
    assert abs(out["depth"][0].item() - 2.5) < 2e-3
    # Off-centre: ray distance t solves |o + t d|^2 = r^2; depth is t * z_scale.
    o, d = rays.origins[1], rays.directions[1]
    b, c = 2 * (o @ d), o @ o - 0.25
    t_hit = (-b - torch.sqrt(b * b - 4 * c)) / 2
    assert abs(out["depth"][1].item() - (t_hit * rays.z_scale[1]).item()) < 2e-3


def test_stratified_samples_stay_in_their_bins():
    t_near, t_far = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 6.0])
    starts, ends, points = stratified(t_near, t_far, 16, jitter=True)
    assert torch.all(points >= starts) and torch.all(points <= ends)
    assert torch.allclose(starts[:, 0], t_near) and torch.allclose(ends[:, -1], t_far)


@LAYOUTS
def test_occupancy_grid_skips_empty_space_without_changing_the_image(packed):
    aabb = torch.tensor([[-1.0] * 3, [1.0] * 3])
    sphere = SolidSphere()
    c2w = look_at(torch.tensor([0.0, -3.0, 1.0]), torch.zeros(3))[None]
    n = 64
    rays = rays_through_pixels(c2w.expand(n, 4, 4), torch.full((n,), 40.0), torch.full((n,), 40.0),
                               torch.full((n,), 16.0), torch.full((n,), 16.0),
                               torch.arange(n).float() % 32, torch.arange(n).float() // 2)
    dense = Renderer(aabb, 0.1, 10.0, torch.ones(3), RenderConfig(samples_per_ray=256, occupancy=False,
                                                                  packed=packed))
    skip = Renderer(aabb, 0.1, 10.0, torch.ones(3), RenderConfig(samples_per_ray=256, occupancy=True,
                                                                 occupancy_resolution=32,
                                                                 occupancy_warmup_steps=0, packed=packed,
                                                                 occupancy_refresh_share=None))
    torch.manual_seed(0)  # the grid update samples cells at random
    skip.grid.density_ema.zero_()
    for step in range(4):
        skip.update_occupancy(sphere, step * skip.cfg.occupancy_update_every)
    a, b = dense.render_rays(sphere, rays), skip.render_rays(sphere, rays)
    assert b["n_samples"] < 0.25 * a["n_samples"]
    assert torch.allclose(a["rgb"], b["rgb"], atol=1e-4)
    assert torch.allclose(a["opacity"], b["opacity"], atol=1e-4)


def test_occupancy_grid_culls_nothing_during_warmup():
    grid = OccupancyGrid(torch.tensor([[-1.0] * 3, [1.0] * 3]), resolution=8, warmup_steps=10)
    ball = lambda x: torch.where(x.norm(dim=-1) < 0.5, 1.0, 0.0)  # noqa: E731
    grid.update(ball, step=0)
    assert grid.occupancy_fraction == 1.0
    grid.update(ball, step=10)
    assert 0.0 < grid.occupancy_fraction < 0.5
    assert grid.query(torch.zeros(1, 3)).item() and not grid.query(torch.tensor([[0.9, 0.9, 0.9]])).item()


class CountingBall(SolidSphere):
    """The ball, counting the points its density is asked for."""

    def __init__(self):
        super().__init__()
        self.asked = 0

    def density(self, x):
        self.asked += x.shape[0]
        return super().density(x)


def test_an_occupancy_refresh_after_warmup_costs_a_share_of_the_training_samples():
    aabb = torch.tensor([[-1.0] * 3, [1.0] * 3])
    renderer = Renderer(aabb, 0.1, 10.0, torch.ones(3), RenderConfig(
        occupancy_resolution=32, occupancy_warmup_steps=16, occupancy_refresh_share=0.25))
    ball = CountingBall()
    renderer.update_occupancy(ball, 0)  # warm-up: every cell, whatever was trained
    assert ball.asked == 32 ** 3
    renderer.samples_since_refresh = 40_000
    ball.asked = 0
    renderer.update_occupancy(ball, 16)
    assert ball.asked == 10_000 and renderer.samples_since_refresh == 0
    ball.asked = 0
    renderer.update_occupancy(ball, 32)  # nothing trained since: a floor of cells still explores
    assert ball.asked == MIN_REFRESH_CELLS
    uncapped = Renderer(aabb, 0.1, 10.0, torch.ones(3), RenderConfig(
        occupancy_resolution=32, occupancy_warmup_steps=0, occupancy_refresh_share=None))
    ball.asked = 0
    uncapped.update_occupancy(ball, 0)
    assert ball.asked == 32 ** 3  # every cell is occupied before the first look: all are candidates


def test_a_cell_is_culled_only_after_a_refresh_looked_at_it():
    grid = OccupancyGrid(torch.tensor([[-1.0] * 3, [1.0] * 3]), resolution=8, warmup_steps=0)
    nothing = lambda x: torch.zeros(x.shape[0])  # noqa: E731
    grid.update(nothing, step=0, max_cells=100)
    assert 80 <= grid.looked.sum() <= 100  # 100 cells drawn, a few twice
    assert not grid.occupied[grid.looked].any()  # empty where it looked
    assert grid.occupied[~grid.looked].all()  # the cells not looked at stay occupied


def test_training_renders_count_their_field_samples_for_the_next_refresh():
    aabb = torch.tensor([[-1.0] * 3, [1.0] * 3])
    renderer = Renderer(aabb, 0.1, 10.0, torch.ones(3), RenderConfig(samples_per_ray=32))
    c2w = look_at(torch.tensor([0.0, -3.0, 1.0]), torch.zeros(3))[None]
    n = 16
    rays = rays_through_pixels(c2w.expand(n, 4, 4), torch.full((n,), 40.0), torch.full((n,), 40.0),
                               torch.full((n,), 16.0), torch.full((n,), 16.0),
                               torch.arange(n).float(), torch.arange(n).float())
    out = renderer.render_rays(SolidSphere(), rays, train=True)
    renderer.render_rays(SolidSphere(), rays, train=False)  # a test render does not count
    assert out["n_samples"] > 0 and renderer.samples_since_refresh == out["n_samples"]


def test_visible_samples_by_hand():
    # Unit steps. Ray 0: empty, nearly empty (alpha 1e-6), a wall (alpha ~1), then what the wall hides.
    # Ray 1: a thin haze (alpha 0.01 each), all of it seen.
    densities = torch.tensor([0.0, 1e-6, 50.0, 1.0, 1.0, 0.01, 0.01, 0.01])
    t_starts = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 0.0, 1.0, 2.0])
    rays = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1])
    keep = visible_samples(densities, t_starts, t_starts + 1.0, rays, 2, min_alpha=1e-4, min_transmittance=1e-4)
    assert keep.tolist() == [False, False, True, False, False, True, True, True]
    # Transmittance alone keeps the transparent samples in front of the wall.
    keep = visible_samples(densities, t_starts, t_starts + 1.0, rays, 2, min_alpha=0.0, min_transmittance=1e-4)
    assert keep.tolist() == [True, True, True, False, False, True, True, True]


@LAYOUTS
def test_a_density_pass_evaluates_only_visible_samples_and_keeps_the_image(packed):
    sphere = SolidSphere()
    c2w = look_at(torch.tensor([0.0, -3.0, 1.0]), torch.zeros(3))[None]
    n = 64  # an 8 x 8 grid of pixels over the whole 32 x 32 image
    rays = rays_through_pixels(c2w.expand(n, 4, 4), torch.full((n,), 40.0), torch.full((n,), 40.0),
                               torch.full((n,), 16.0), torch.full((n,), 16.0),
                               torch.arange(n).float() % 8 * 4 + 2, torch.arange(n).float() // 8 * 4 + 2)
    config = dict(samples_per_ray=256, occupancy=False, packed=packed)
    every = Renderer(AABB, 0.1, 10.0, torch.ones(3), RenderConfig(**config))
    visible = Renderer(AABB, 0.1, 10.0, torch.ones(3), RenderConfig(**config, min_alpha=1e-4, min_transmittance=1e-4))
    a, b = every.render_rays(sphere, rays), visible.render_rays(sphere, rays)
    hits = int((a["opacity"] > 0.5).sum())
    assert 0 < hits < n
    assert b["n_samples"] == hits  # the ball is opaque within one step: one sample per ray that meets it
    for key in ("rgb", "opacity", "depth"):
        assert torch.allclose(a[key], b[key], atol=1e-4), key
    # Per-sample losses see every sample.
    assert visible.render_rays(sphere, rays, with_samples=True)["n_samples"] == a["n_samples"]
