"""Real spherical harmonics and the frequency encoding."""

import math

import numpy as np
import pytest
import torch

from fieldkd.platform.fields.encodings.frequency import frequency_dim, frequency_encode
from fieldkd.platform.fields.encodings.sh import sh_basis, sh_dim


def sphere_quadrature(n_theta=16, n_phi=32):
    """Gauss-Legendre in cos(theta) x uniform in phi: exact for polynomials of
    degree < 2 * n_theta on the sphere, so SH products up to band 8 integrate exactly."""
    ct, wt = np.polynomial.legendre.leggauss(n_theta)
    phi = (np.arange(n_phi) + 0.5) * 2 * np.pi / n_phi
    c, p = np.meshgrid(ct, phi, indexing="ij")
    s = np.sqrt(1 - c**2)
    dirs = np.stack([s * np.cos(p), s * np.sin(p), c], -1).reshape(-1, 3)
    weights = np.broadcast_to(wt[:, None] * (2 * np.pi / n_phi), c.shape).reshape(-1)
    return torch.tensor(dirs), torch.tensor(weights)


def test_degree_zero_is_constant():
    d = torch.nn.functional.normalize(torch.randn(100, 3), dim=-1)
    y = sh_basis(d, 0)
    assert y.shape == (100, 1)
    torch.testing.assert_close(y, torch.full((100, 1), 0.28209479))


@pytest.mark.parametrize("degree", [0, 1, 2, 3, 4])
def test_dims(degree):
    assert sh_dim(degree) == (degree + 1) ** 2
    assert sh_basis(torch.tensor([[0.0, 0.0, 1.0]]), degree).shape == (1, (degree + 1) ** 2)


def test_orthonormal_up_to_degree_4_by_quadrature():
    dirs, w = sphere_quadrature()
    y = sh_basis(dirs, 4)  # float64 in, float64 out
    gram = (y * w[:, None]).T @ y
    torch.testing.assert_close(gram, torch.eye(25, dtype=torch.float64), atol=1e-10, rtol=0)


def test_orthonormal_by_monte_carlo():
    g = torch.Generator().manual_seed(0)
    d = torch.nn.functional.normalize(torch.randn(400_000, 3, generator=g, dtype=torch.float64), dim=-1)
    y = sh_basis(d, 4)
    gram = 4 * math.pi * (y.T @ y) / d.shape[0]
    assert (gram - torch.eye(25, dtype=torch.float64)).abs().max() < 0.05


def test_band_one_is_linear_in_direction():
    d = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    c1 = math.sqrt(3 / (4 * math.pi))
    torch.testing.assert_close(sh_basis(d, 1)[:, 1:], torch.tensor([
        [0.0, 0.0, -c1], [-c1, 0.0, 0.0], [0.0, c1, 0.0]]))


def test_rejects_unsupported_degree():
    with pytest.raises(ValueError):
        sh_basis(torch.zeros(1, 3), 5)


def test_frequency_encoding_layout():
    x = torch.tensor([[0.5, -0.25, 1.0]])
    out = frequency_encode(x, 3)
    assert out.shape == (1, frequency_dim(3, 3)) == (1, 21)
    torch.testing.assert_close(out[:, :3], x)
    scaled = torch.tensor([[0.5, -0.25, 1.0, 1.0, -0.5, 2.0, 2.0, -1.0, 4.0]])
    torch.testing.assert_close(out[:, 3:12], torch.sin(scaled))
    torch.testing.assert_close(out[:, 12:], torch.cos(scaled))
    assert frequency_dim(3, 10) == 63
