"""Packed rendering (render.packed=true) is the padded rendering, computed differently:
the same pixels, extras and gradients on the same rays through the same field."""

import pytest
import torch

from fieldkd.platform.fields import build_field
from fieldkd.platform.fields.presets import TINY_CONFIGS
from fieldkd.platform.render import RenderConfig, Renderer
from fieldkd.platform.render.composite import composite
from fieldkd.platform.render.packed import composite_packed, exclusive_segment_cumsum
from fieldkd.platform.scenes.cameras import Rays

AABB = torch.tensor([[-1.0] * 3, [1.0] * 3])


class WithNormals(torch.nn.Module):
    """A tiny hash field (with the uncertainty head) that also returns a parameter-dependent
    "normal" extra, so that both kinds of extras are composited (one with detached weights)."""

    def __init__(self):
        super().__init__()
        self.inner = build_field("hash", AABB, uncertainty=True, density_bias=1.0, **TINY_CONFIGS["hash"])

    @property
    def extra_shapes(self):
        return {**self.inner.extra_shapes, "normal": (3,)}

    def forward(self, x, d):
        out = self.inner(x, d)
        out.extras["normal"] = torch.nn.functional.normalize(out.feature[:, 1:4], dim=-1)
        return out

    def density(self, x):
        return self.inner.density(x)


def rays(n=48, seed=0):
    """Rays from a sphere of radius 3 towards the box, a quarter aimed far off it (no live sample)."""
    g = torch.Generator().manual_seed(seed)
    origins = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1) * 3.0
    targets = (torch.rand(n, 3, generator=g) - 0.5)
    targets[: n // 4] = origins[: n // 4] * 2 + torch.tensor([0.0, 0.0, 10.0])  # pointing away: misses
    dirs = torch.nn.functional.normalize(targets - origins, dim=-1)
    return Rays(origins, dirs, torch.ones(n))


def renderers(**cfg):
    return [Renderer(AABB, 0.1, 10.0, torch.tensor([1.0, 0.5, 0.0]), RenderConfig(packed=p, **cfg))
            for p in (False, True)]


def grads(field):
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in field.parameters()]


def render_with_grads(renderer, field, batch, train):
    field.zero_grad(set_to_none=True)
    torch.manual_seed(3)  # the same jitter in both modes
    out = renderer.render_rays(field, batch, train=train, with_samples=True)
    loss = sum(out[k].square().sum() for k in ("rgb", "depth", "opacity", "normal", "uncertainty"))
    loss.backward()
    return out, grads(field)


@pytest.mark.parametrize("occupancy", [False, True])
def test_packed_equals_dense_with_extras_and_gradients(one_torch_thread, occupancy):
    torch.manual_seed(0)
    field = WithNormals()
    dense, packed = renderers(samples_per_ray=32, occupancy=occupancy, occupancy_resolution=16,
                              occupancy_warmup_steps=0)
    if occupancy:  # cull about half the cells, the same grid in both renderers
        grid = (torch.rand(16, 16, 16, generator=torch.Generator().manual_seed(1)) < 0.5)
        dense.grid.occupied.copy_(grid)
        packed.grid.occupied.copy_(grid)
    batch = rays()
    a, grads_a = render_with_grads(dense, field, batch, train=True)
    b, grads_b = render_with_grads(packed, field, batch, train=True)
    assert a["n_samples"] == b["n_samples"] > 0
    misses = a["weights"].sum(-1) == 0
    assert misses[:12].all() and (~misses).sum() > 20  # both kinds of rays are in the batch
    assert (b["opacity"][misses] == 0).all() and torch.allclose(b["rgb"][misses], torch.tensor([1.0, 0.5, 0.0]))
    for key in ("rgb", "depth", "opacity", "weights", "normal", "uncertainty"):
        assert a[key].shape == b[key].shape, key
        assert torch.allclose(a[key], b[key], atol=1e-5, rtol=1e-5), key
    # with_samples: the same samples, in the same order, for losses on individual samples.
    assert torch.equal(a["live"], b["live"]) and torch.equal(a["points"], b["points"])
    assert torch.equal(a["field_output"].density, b["field_output"].density)
    assert a["opacity"].max() > 0.5  # some rays are nearly opaque: the transmittance matters
    for ga, gb in zip(grads_a, grads_b):
        assert torch.allclose(ga, gb, atol=1e-5, rtol=1e-4)
    assert sum(g.abs().sum() for g in grads_b) > 0


def test_a_batch_without_any_live_sample(one_torch_thread):
    field = WithNormals()
    dense, packed = renderers(samples_per_ray=16, occupancy=False)
    batch = rays(8)[:2]  # both aimed away from the box
    a, b = dense.render_rays(field, batch), packed.render_rays(field, batch)
    assert b["n_samples"] == 0 and set(a) == set(b)
    for key in ("rgb", "depth", "opacity", "weights", "normal", "uncertainty"):
        assert torch.equal(a[key], b[key]), key


def test_exclusive_segment_cumsum_restarts_at_each_ray():
    values = torch.tensor([1.0, 2.0, 3.0, 10.0, 5.0, 7.0])
    ray_indices = torch.tensor([0, 0, 0, 2, 3, 3])  # ray 1 has no sample
    assert exclusive_segment_cumsum(values, ray_indices, 5).tolist() == [0, 1, 3, 0, 0, 5]


def test_long_batches_keep_the_transmittance_exact():
    # 512 nearly opaque rays: their log-transmittances add up to about -1e5 over the list,
    # where a float32 running sum would be off in the third digit for the last rays.
    n_rays, per_ray = 512, 16
    ray_indices = torch.arange(n_rays).repeat_interleave(per_ray)
    t = torch.linspace(0.0, 1.0, per_ray + 1).repeat(n_rays, 1)
    densities = torch.full((n_rays, per_ray), 200.0)
    densities[:, :4] = 0.5  # light passes the first samples, then the ray is opaque
    dense = composite(densities, t[:, :-1], t[:, 1:])
    packed = composite_packed(densities.reshape(-1), t[:, :-1].reshape(-1), t[:, 1:].reshape(-1),
                              ray_indices, n_rays)
    assert torch.allclose(packed["weights"].reshape(n_rays, per_ray), dense["weights"], atol=1e-6)
    assert torch.allclose(packed["depth"], dense["depth"], atol=1e-6)
