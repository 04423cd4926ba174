"""Lens models: where a direction in the camera frame lands on the image, and back.

Pure functions on tensors, in the OpenCV camera frame (x right, y down, z
forward) and in normalised image coordinates ``(u - cx) / fx, (v - cy) / fy``
(the focal lengths and principal point are the camera's; for MEI they are
gamma1, gamma2, u0, v0). Models and their parameters, named as nerfstudio,
COLMAP and OpenCV name them:

- ``pinhole``: none.
- ``opencv`` (radial-tangential): k1 k2 k3 k4 p1 p2, with the radial factor
  ``1 + k1 r^2 + k2 r^4 + k3 r^6 + k4 r^8`` (nerfstudio's reading of k4).
- ``fisheye`` (OpenCV's equidistant fisheye): k1 k2 k3 k4 on the angle theta
  from the axis: ``theta_d = theta (1 + k1 theta^2 + ... + k4 theta^8)``.
- ``mei`` (unified omnidirectional model of Mei and Rives, KITTI-360's fisheye
  cameras): xi k1 k2 p1 p2; the point on the unit sphere is projected from
  ``(0, 0, -xi)``, then radial-tangential distortion with k1 k2 p1 p2.

:func:`undistort` inverts :func:`distort_directions` by Newton's method, in
float64; it is exact to about 1e-9 inside the field where the model is
one-to-one.
"""

from __future__ import annotations

import torch

MODELS = ("pinhole", "opencv", "fisheye", "mei")
PARAMS = {
    "pinhole": (),
    "opencv": ("k1", "k2", "k3", "k4", "p1", "p2"),
    "fisheye": ("k1", "k2", "k3", "k4"),
    "mei": ("xi", "k1", "k2", "p1", "p2"),
}
NEWTON_STEPS = 30


def radtan(x, y, k1, k2, k3, k4, p1, p2):
    """Radial-tangential distortion of normalised coordinates (OpenCV's formula)."""
    r2 = x * x + y * y
    d = 1 + r2 * (k1 + r2 * (k2 + r2 * (k3 + r2 * k4)))
    return (x * d + 2 * p1 * x * y + p2 * (r2 + 2 * x * x),
            y * d + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y)


def _radtan_jacobian(x, y, k1, k2, k3, k4, p1, p2):
    r2 = x * x + y * y
    d = 1 + r2 * (k1 + r2 * (k2 + r2 * (k3 + r2 * k4)))
    dd = k1 + r2 * (2 * k2 + r2 * (3 * k3 + r2 * 4 * k4))  # d(d)/d(r2)
    xx = d + 2 * x * x * dd + 2 * p1 * y + 6 * p2 * x
    xy = 2 * x * y * dd + 2 * p1 * x + 2 * p2 * y
    yy = d + 2 * y * y * dd + 2 * p2 * x + 6 * p1 * y
    return xx, xy, xy, yy


def undistort_radtan(xd, yd, k1, k2, k3, k4, p1, p2):
    """The (x, y) that :func:`radtan` maps to (xd, yd), by Newton's method from (xd, yd)."""
    x, y = xd.clone(), yd.clone()
    for _ in range(NEWTON_STEPS):
        fx, fy = radtan(x, y, k1, k2, k3, k4, p1, p2)
        ex, ey = fx - xd, fy - yd
        a, b, c, d = _radtan_jacobian(x, y, k1, k2, k3, k4, p1, p2)
        det = a * d - b * c
        det = torch.where(det.abs() < 1e-12, torch.full_like(det, 1e-12), det)
        x, y = x - (d * ex - b * ey) / det, y - (a * ey - c * ex) / det
    return x, y


def _equidistant(theta, k1, k2, k3, k4):
    t2 = theta * theta
    return theta * (1 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4))))


def _unpack(model: str, params: torch.Tensor):
    """The named parameters of ``model`` as (...,) tensors from ``params`` (..., D)."""
    if model not in MODELS:
        raise ValueError(f"unknown camera model {model!r} (known: {', '.join(MODELS)})")
    names = PARAMS[model]
    if params.shape[-1] != len(names):
        raise ValueError(f"{model} takes {len(names)} parameters ({' '.join(names)}), got {params.shape[-1]}")
    return params.unbind(-1)


def distort_directions(model: str, params: torch.Tensor, dirs: torch.Tensor):
    """Normalised distorted image coordinates (xd, yd) of directions (..., 3), OpenCV frame.

    ``params`` (..., D) broadcasts against the directions' batch shape.
    """
    p = _unpack(model, params)
    x, y, z = dirs.unbind(-1)
    if model == "pinhole":
        return x / z, y / z
    if model == "opencv":
        return radtan(x / z, y / z, *p)
    if model == "fisheye":
        r = torch.sqrt(x * x + y * y)
        theta = torch.atan2(r, z)
        scale = torch.where(r > 1e-12, _equidistant(theta, *p) / r.clamp(min=1e-12), 1 / z)
        return x * scale, y * scale
    xi, k1, k2, p1, p2 = p
    n = dirs.norm(dim=-1)
    zeros = torch.zeros_like(k1)
    s = z / n + xi
    return radtan(x / n / s, y / n / s, k1, k2, zeros, zeros, p1, p2)


def undistort(model: str, params: torch.Tensor, xd: torch.Tensor, yd: torch.Tensor) -> torch.Tensor:
    """Unit directions (..., 3) in the OpenCV camera frame of normalised distorted coordinates."""
    p = _unpack(model, params)
    if model == "pinhole":
        dirs = torch.stack([xd, yd, torch.ones_like(xd)], -1)
    elif model == "opencv":
        x, y = undistort_radtan(xd, yd, *p)
        dirs = torch.stack([x, y, torch.ones_like(x)], -1)
    elif model == "fisheye":
        theta_d = torch.sqrt(xd * xd + yd * yd)
        theta = theta_d.clone()
        k1, k2, k3, k4 = p
        for _ in range(NEWTON_STEPS):
            t2 = theta * theta
            slope = 1 + t2 * (3 * k1 + t2 * (5 * k2 + t2 * (7 * k3 + t2 * 9 * k4)))
            slope = torch.where(slope.abs() < 1e-12, torch.full_like(slope, 1e-12), slope)
            theta = theta - (_equidistant(theta, k1, k2, k3, k4) - theta_d) / slope
        ratio = torch.where(theta_d > 1e-12, torch.sin(theta) / theta_d.clamp(min=1e-12), torch.ones_like(theta))
        dirs = torch.stack([xd * ratio, yd * ratio, torch.cos(theta)], -1)
    else:
        xi, k1, k2, p1, p2 = p
        zeros = torch.zeros_like(k1)
        x, y = undistort_radtan(xd, yd, k1, k2, zeros, zeros, p1, p2)
        # Lift (x, y) back onto the unit sphere: the inverse of the projection from (0, 0, -xi).
        r2 = x * x + y * y
        lift = (xi + torch.sqrt((1 + (1 - xi * xi) * r2).clamp(min=0))) / (1 + r2)
        dirs = torch.stack([lift * x, lift * y, lift - xi], -1)
    return dirs / dirs.norm(dim=-1, keepdim=True)


def is_pinhole(model: str, params: torch.Tensor | None) -> bool:
    """True when the model casts pinhole rays (no model, pinhole, or all-zero OpenCV coefficients)."""
    if model == "pinhole" or params is None:
        return True
    return model == "opencv" and not bool(params.abs().gt(0).any())
