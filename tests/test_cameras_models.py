"""Lens models: closed forms, round trips, and rays through distorted cameras."""

import math

import pytest
import torch

from fieldkd.platform.scenes import lens
from fieldkd.platform.scenes.cameras import Cameras, look_at, project

KNOWN = {
    "opencv": [0.0578, -0.02, 0.004, -0.001, 0.001, -0.0005],
    "fisheye": [0.05, -0.01, 0.002, -0.0003],
    "mei": [0.9, -0.2, 0.05, 0.001, -0.001],
}
# Half-angle of the cone of directions where each model (with KNOWN) is one-to-one.
FIELD = {"opencv": 0.6, "fisheye": 1.4, "mei": 1.3, "pinhole": 0.7}


def _cone(half_angle: float, n: int = 2000) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    angle = torch.rand(n, generator=g, dtype=torch.float64) * half_angle
    phi = torch.rand(n, generator=g, dtype=torch.float64) * 2 * math.pi
    return torch.stack([angle.sin() * phi.cos(), angle.sin() * phi.sin(), angle.cos()], -1)


@pytest.mark.parametrize("model", ["pinhole", "opencv", "fisheye", "mei"])
def test_distort_then_undistort_round_trips(model):
    params = torch.tensor(KNOWN.get(model, []), dtype=torch.float64)
    dirs = _cone(FIELD[model])
    xd, yd = lens.distort_directions(model, params, dirs)
    back = lens.undistort(model, params, xd, yd)
    assert (back - dirs).abs().max().item() < 1e-6
    again = lens.distort_directions(model, params, back)
    assert max((again[0] - xd).abs().max().item(), (again[1] - yd).abs().max().item()) < 1e-6


def test_zero_coefficients_equal_pinhole():
    dirs = _cone(0.6)
    pin = lens.distort_directions("pinhole", torch.zeros(0, dtype=torch.float64), dirs)
    for model, params in (("opencv", torch.zeros(6)), ("mei", torch.zeros(5))):  # mei: xi = 0 is a pinhole
        got = lens.distort_directions(model, params.double(), dirs)
        assert torch.allclose(got[0], pin[0], atol=1e-12) and torch.allclose(got[1], pin[1], atol=1e-12)
        assert torch.allclose(lens.undistort(model, params.double(), *pin), dirs, atol=1e-12)
    assert lens.is_pinhole("opencv", torch.zeros(1, 6))
    assert not lens.is_pinhole("opencv", torch.tensor([[0.0578] + [0] * 5]))
    # Zero fisheye coefficients are the plain equidistant model: radius = angle.
    xd, yd = lens.distort_directions("fisheye", torch.zeros(4, dtype=torch.float64), dirs)
    assert torch.allclose(torch.hypot(xd, yd), torch.atan2(torch.hypot(dirs[:, 0], dirs[:, 1]), dirs[:, 2]))


def _camera(model, params, fx=100.0, fy=110.0, cx=64.0, cy=48.0, width=128, height=96):
    """One camera at the origin with identity pose: OpenCV point (x, y, z) is OpenGL world (x, -y, -z)."""
    t = lambda v: torch.tensor([float(v)])  # noqa: E731
    dist = None if params is None else torch.tensor([params], dtype=torch.float32)
    return Cameras(torch.eye(4)[None], t(fx), t(fy), t(cx), t(cy), width, height, model, dist)


def _world(x, y, z):
    return torch.tensor([[x, -y, -z]])


def test_a_known_point_projects_where_the_model_says():
    # OpenCV: (0.2, -0.1, 1) has r^2 = 0.05; radial 1 + k1 r^2, tangential 2 p1 x y + p2 (r^2 + 2 x^2).
    k1, p1, p2 = 0.0578, 0.001, -0.002
    px, py, depth = project(_world(0.4, -0.2, 2.0), _camera("opencv", [k1, 0, 0, 0, p1, p2]))
    r2, x, y = 0.05, 0.2, -0.1
    xd = x * (1 + k1 * r2) + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * (1 + k1 * r2) + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    assert px.item() == pytest.approx(100 * xd + 64, abs=1e-4) and py.item() == pytest.approx(110 * yd + 48, abs=1e-4)
    assert depth.item() == pytest.approx(2.0)
    # Fisheye: a point 60 degrees off the axis lands at radius theta (1 + k1 theta^2).
    theta = math.radians(60)
    px, py, _ = project(_world(math.sin(theta), 0.0, math.cos(theta)), _camera("fisheye", [0.05, 0, 0, 0]))
    assert px.item() == pytest.approx(64 + 100 * theta * (1 + 0.05 * theta**2), abs=1e-4)
    assert py.item() == pytest.approx(48, abs=1e-5)
    # MEI (xi = 1): the unit-sphere point (s, 0, c) maps to s / (c + xi), then radial 1 + k1 r^2.
    xi, mk1 = 1.0, -0.2
    s, c = math.sin(math.radians(100)), math.cos(math.radians(100))  # beyond 90 degrees: still in view
    m = s / (c + xi)
    px, py, _ = project(_world(0.0, 3 * s, 3 * c), _camera("mei", [xi, mk1, 0, 0, 0]))
    assert py.item() == pytest.approx(48 + 110 * m * (1 + mk1 * m * m), abs=1e-3) and px.item() == pytest.approx(64)


@pytest.mark.parametrize("model", ["opencv", "fisheye", "mei"])
def test_rays_go_through_the_lens_and_back_to_their_pixel(model):
    cams = _camera(model, KNOWN[model], fx=60, fy=60, width=32, height=24, cx=16, cy=12)
    rays = cams.image_rays(0)
    points = rays.origins + rays.directions * 2.5
    px, py, depth = project(points, cams)
    ys, xs = torch.meshgrid(torch.arange(24.0), torch.arange(32.0), indexing="ij")
    assert (px[0] - (xs.reshape(-1) + 0.5)).abs().max().item() < 1e-3
    assert (py[0] - (ys.reshape(-1) + 0.5)).abs().max().item() < 1e-3
    assert torch.allclose(depth[0], 2.5 * rays.z_scale, atol=1e-5)
    # Not a pinhole: the corner ray differs from the pinhole ray of the same pixel.
    pin = Cameras(cams.c2w, cams.fx, cams.fy, cams.cx, cams.cy, 32, 24).image_rays(0)
    assert (pin.directions[0] - rays.directions[0]).norm().item() > 1e-3


def test_cached_pixel_grid_matches_direct_undistortion_and_dedups_intrinsics():
    c2w = torch.stack([look_at(torch.tensor([0.0, -4, 1]), torch.zeros(3)),
                       look_at(torch.tensor([4.0, 0, 1]), torch.zeros(3)),
                       look_at(torch.tensor([0.0, 4, 1]), torch.zeros(3))])
    dist = torch.tensor([KNOWN["opencv"]] * 3)
    dist[2, 0] = 0.1  # the third camera has its own lens
    cams = Cameras(c2w, torch.full((3,), 40.0), torch.full((3,), 40.0), torch.full((3,), 12.0),
                   torch.full((3,), 10.0), 24, 20, "opencv", dist)
    cam = torch.tensor([0, 1, 2, 2])
    px, py = torch.tensor([0.0, 5, 23, 7]), torch.tensor([0.0, 3, 19, 11])
    cached = cams.rays_at(cam, px, py)
    groups, grids = cams._pixel_grids()
    assert grids.shape == (2, 20, 24, 3) and groups[0] == groups[1] != groups[2]
    direct = cams.rays_at(cam, px + 1e-7, py)  # fractional pixels: computed directly
    assert torch.allclose(cached.directions, direct.directions, atol=1e-5)
    assert len(cams[[2]]) == 1 and cams[[2]].distortion[0, 0].item() == pytest.approx(0.1)


def test_bad_models_are_refused():
    with pytest.raises(ValueError, match="unknown camera model"):
        _camera("kannala", [0.1])
    with pytest.raises(ValueError, match="distortion must be"):
        _camera("fisheye", [0.1, 0.2])
    with pytest.raises(ValueError, match="needs distortion"):
        _camera("mei", None)
