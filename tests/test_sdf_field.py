"""The neural SDF field (VolSDF / MonoSDF): Laplace density, geometric
initialisation, normals and uncertainty as composited extras, eikonal and
smoothness regularisers, and a short fit to the bundled object scene."""

import math
from pathlib import Path

import pytest
import torch
import yaml

from fieldkd.platform.evaluate.image import psnr
from fieldkd.platform.evaluate.mesh import extract_mesh
from fieldkd.platform.fields import FieldOutput, build_field
from fieldkd.platform.fields.models.sdf_field import SDFField
from fieldkd.platform.fields.presets import TINY_CONFIGS
from fieldkd.platform.render import RenderConfig, Renderer, composite, composite_values, laplace_cdf, laplace_density
from fieldkd.platform.scenes import load_scene
from fieldkd.platform.scenes.cameras import look_at, rays_through_pixels
from fieldkd.platform.train.loop import Trainer, TrainerConfig
from fieldkd.platform.train.photometric import PhotometricTask

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONF = Path(__file__).resolve().parents[1] / "fieldkd" / "conf" / "field" / "sdf.yaml"
CUBE = torch.tensor([[-1.0] * 3, [1.0] * 3])
BOX = torch.tensor([[-1.0, -0.5, 0.0], [1.4, 1.5, 2.0]])  # not a cube, not centred on the origin


def sdf_config(**extra):
    cfg = yaml.safe_load(CONF.read_text())
    cfg.pop("name")
    return {**cfg, **extra}


def make(aabb=BOX, seed=0, **extra):
    torch.manual_seed(seed)
    return build_field("sdf", aabb, **sdf_config(**extra))


def points_in(aabb, n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return aabb[0] + torch.rand(n, 3, generator=g) * (aabb[1] - aabb[0])


def directions(n, seed=2):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)


# -- Laplace density ------------------------------------------------------------------------------


def test_laplace_density_closed_form():
    beta = 0.1
    s = torch.linspace(-2.0, 2.0, 401, dtype=torch.float64)
    # The surface has density 1 / (2 beta); deep inside 1 / beta; outside (1 / 2 beta) exp(-sdf / beta).
    assert laplace_density(torch.zeros(1, dtype=torch.float64), beta).item() == pytest.approx(1 / (2 * beta))
    torch.testing.assert_close(laplace_density(s[s > 0], beta), 0.5 * torch.exp(-s[s > 0] / beta) / beta)
    torch.testing.assert_close(laplace_density(s[s < 0], beta), (1 - 0.5 * torch.exp(s[s < 0] / beta)) / beta)
    assert laplace_density(torch.tensor([-50.0]), beta).item() == pytest.approx(1 / beta)
    # The CDF is that of a zero-mean Laplace distribution, symmetric about 0, increasing.
    reference = torch.distributions.Laplace(0.0, beta).cdf(s)
    torch.testing.assert_close(laplace_cdf(s, beta), reference)
    torch.testing.assert_close(laplace_cdf(s, beta) + laplace_cdf(-s, beta), torch.ones_like(s))
    assert (torch.diff(laplace_cdf(s, beta)) > 0).all()
    assert (torch.diff(laplace_density(s, beta)) < 0).all()  # denser the deeper inside
    # A learnable tensor beta; far from the surface nothing overflows or turns NaN.
    b = torch.tensor(0.01, requires_grad=True)
    far = torch.tensor([-1e4, -3.0, 0.0, 3.0, 1e4], requires_grad=True)
    laplace_density(far, b).sum().backward()
    assert torch.isfinite(b.grad) and torch.isfinite(far.grad).all()


def test_field_density_uses_beta_in_box_units():
    field = make()
    half = (BOX[1] - BOX[0]).max() / 2
    x = points_in(BOX, 64)
    sdf = field.sdf(x)
    torch.testing.assert_close(field.density(x), laplace_density(sdf, field.beta() * half))
    assert field.beta().item() == pytest.approx(0.1)


# -- geometric initialisation -----------------------------------------------------------------------


def init_sample():
    """Points within the box's half-size of its centre, and the SDF of the initial sphere there."""
    centre, half = BOX.mean(0), (BOX[1] - BOX[0]).max() / 2
    g = torch.Generator().manual_seed(3)
    x = centre + torch.nn.functional.normalize(torch.randn(4000, 3, generator=g), dim=-1) * torch.rand(
        4000, 1, generator=g) * half
    return x, (x - centre).norm(dim=-1) - 0.6 * half, half  # init_radius 0.6 is in box half-sizes


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_geometric_init_is_a_sphere(seed):
    x, expected, half = init_sample()
    field = make(seed=seed)
    with torch.no_grad():
        sdf = field.sdf(x)
        error = (sdf - expected).abs() / half
        # SAL's initialisation is a sphere up to the random features' anisotropy (~15 % of |p|
        # at width 64): close on average, right about inside and outside away from the surface.
        assert error.mean() < 0.15, error.mean()
        clear = expected.abs() > 0.4 * half
        assert (torch.sign(sdf[clear]) == torch.sign(expected[clear])).float().mean() > 0.97
        # At the centre it is exact (the softplus offsets are compensated).
        assert field.sdf(BOX.mean(0)[None]).item() == pytest.approx(-0.6 * half.item(), abs=1e-4)
        assert field.regularizers()["eikonal"] < 0.06  # |grad sdf| ~ 1 from the start
        # inside_out flips it: free space (sdf > 0) inside the sphere, solid outside.
        flipped = make(seed=seed, inside_out=True).sdf(x)
        torch.testing.assert_close(flipped, -sdf, atol=2e-3 * half.item(), rtol=0)


def test_geometric_init_checks_fail_for_other_fields():
    # Controls for the test above: default-initialised weights are not the sphere,
    # and an SDF scaled by 2 is not a distance.
    x, expected, half = init_sample()
    field = make()
    with torch.no_grad():
        for m in field.trunk.modules():
            if isinstance(m, torch.nn.Linear):
                m.reset_parameters()
        assert ((field.sdf(x) - expected).abs() / half).mean() > 0.2
        field = make()
        field.trunk.out.weight[0] *= 2
        field.trunk.out.bias[0] *= 2
        assert field.regularizers()["eikonal"] > 0.5


# -- normals -------------------------------------------------------------------------------------


def test_normals_are_unit_gradients_of_the_sdf():
    field = make()
    x, d = points_in(BOX, 200), directions(200)
    normal = field(x, d).extras["normal"]
    torch.testing.assert_close(normal.norm(dim=-1), torch.ones(200))
    eps = 1e-3
    grad = torch.stack([(field.sdf(x + eps * e) - field.sdf(x - eps * e)) / (2 * eps) for e in torch.eye(3)], -1)
    assert torch.nn.functional.cosine_similarity(normal, grad, dim=-1).min() > 0.99


def test_normals_carry_grad_only_when_the_caller_records_it():
    field = make()
    x, d = points_in(BOX, 64), directions(64)
    with torch.no_grad():
        out = field(x, d)
    assert not out.extras["normal"].requires_grad
    assert not any(t.requires_grad for t in (out.rgb, out.density, out.raw_density, out.feature))
    out = field(x, d)
    assert out.extras["normal"].requires_grad
    out.extras["normal"][:, 2].sum().backward()  # a normal loss reaches the trunk (second order)
    # Every weight shapes the gradient; only the output bias (a constant shift) does not.
    grads = {n: p.grad for n, p in field.trunk.named_parameters()}
    assert grads.pop("out.bias") is None
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values())


# -- the RadianceField contract ---------------------------------------------------------------------


def test_forward_contract():
    field = make(uncertainty=True)
    x, d = points_in(BOX, 24), directions(24)
    out = field(x.reshape(2, 12, 3), d.reshape(2, 12, 3))
    assert isinstance(out, FieldOutput)
    assert out.density.shape == out.raw_density.shape == (2, 12) and out.rgb.shape == (2, 12, 3)
    assert out.feature.shape == (2, 12, 15) and field.has_feature and field.feature_dim == 15
    assert out.extras["normal"].shape == (2, 12, 3) and out.extras["uncertainty"].shape == (2, 12)
    assert (out.extras["uncertainty"] >= 0).all()
    assert set(out.extras) == set(field.extra_shapes)
    torch.testing.assert_close(out.raw_density.reshape(-1), -field.sdf(x))
    torch.testing.assert_close(field.density(x), out.density.reshape(-1))
    assert ((out.rgb >= 0) & (out.rgb <= 1)).all() and (out.density >= 0).all()
    outside = torch.tensor([[1.41, 0.0, 1.0], [0.0, -0.6, 1.0], [0.0, 0.0, 2.1], [0.2, 0.5, 1.0]])
    dens = field(outside, directions(4)).density
    assert (dens[:3] == 0).all() and dens[3] > 0


def test_every_parameter_learns_and_param_groups_cover_them():
    for cfg in (dict(uncertainty=True), dict(encoding="hash", **TINY_CONFIGS["hash"])):
        field = make(**cfg)
        x, d = points_in(BOX, 512), directions(512)
        opt = torch.optim.Adam(field.param_groups(1e-3))
        # Two steps: the grid's first-layer weights start at zero (geometric init), so the
        # hash table has a gradient from the second step on.
        for _ in range(2):
            opt.zero_grad()
            out = field(x, d)
            loss = out.rgb.mean() + out.density.mean() + out.extras["normal"][:, 0].mean() + field.regularization()
            loss = loss + out.extras.get("uncertainty", torch.zeros(1)).mean()
            loss.backward()
            opt.step()
        for name, p in field.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
        groups = {g["name"]: g for g in field.param_groups(1e-3)}
        ids = sorted(id(p) for g in groups.values() for p in g["params"])
        assert ids == sorted(id(p) for p in field.parameters())
        assert any(p is field.beta_param for p in groups["network"]["params"])
        if cfg.get("encoding") == "hash":
            assert [id(p) for p in groups["grid"]["params"]] == [id(p) for p in field.grid.parameters()]
        else:
            assert set(groups) == {"network"}


def test_build_from_yaml_round_trip():
    field = make()
    assert isinstance(field, SDFField) and field.field_name == "sdf"
    copy = build_field(field.field_name, field.aabb, **field.config)
    copy.load_state_dict(field.state_dict())
    x, d = points_in(BOX, 32), directions(32)
    a, b = field(x, d), copy(x, d)
    torch.testing.assert_close(a.rgb, b.rgb)
    torch.testing.assert_close(a.extras["normal"], b.extras["normal"])
    with pytest.raises(ValueError, match="encoding"):
        make(encoding="planes")


# -- regularisers ------------------------------------------------------------------------------------


def test_regularization_is_the_weighted_sum_and_grows_when_perturbed():
    field = make()
    torch.manual_seed(5)
    terms = {k: v.detach() for k, v in field.regularizers().items()}
    torch.manual_seed(5)
    reg = field.regularization()
    assert reg.requires_grad and reg.dim() == 0
    torch.testing.assert_close(reg.detach(), 0.1 * terms["eikonal"] + 0.005 * terms["smooth"])
    assert set(field.last_regularizers) == {"eikonal", "smooth"}
    with torch.no_grad():
        for p in field.trunk.parameters():
            p.add_(0.3 * torch.randn_like(p))
    torch.manual_seed(5)
    perturbed = field.regularizers()
    assert perturbed["eikonal"] > 5 * terms["eikonal"] and perturbed["smooth"] > 2 * terms["smooth"]
    field.regularization().backward()  # depends on gradients only: every trunk weight, not the output bias
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in field.trunk.named_parameters()
               if n != "out.bias")
    assert make(eikonal_weight=0.0, smooth_weight=0.0).regularization() == 0


# -- uncertainty head on the radiance fields ----------------------------------------------------------


def test_uncertainty_head_changes_nothing_else():
    def hash_field(**extra):
        torch.manual_seed(0)
        return build_field("hash", CUBE, **TINY_CONFIGS["hash"], **extra)

    plain, off, on = hash_field(), hash_field(uncertainty=False), hash_field(uncertainty=True)
    assert list(off.state_dict()) == list(plain.state_dict())
    for k, v in plain.state_dict().items():
        assert torch.equal(v, off.state_dict()[k]) and torch.equal(v, on.state_dict()[k]), k
    assert {k for k in on.state_dict() if k not in plain.state_dict()} == {
        k for k in on.state_dict() if k.startswith("uncertainty_head.")} != set()
    x, d = points_in(CUBE, 100), directions(100)
    a, b, c = plain(x, d), off(x, d), on(x, d)
    assert b.extras == {} and set(c.extras) == {"uncertainty"}
    for out in (b, c):
        assert torch.equal(a.rgb, out.rgb) and torch.equal(a.density, out.density)
    assert c.extras["uncertainty"].shape == (100,) and (c.extras["uncertainty"] >= 0).all()
    c.extras["uncertainty"].sum().backward()
    assert all(p.grad is not None for p in on.uncertainty_head.parameters())
    assert build_field("mlp", CUBE, **TINY_CONFIGS["mlp"], uncertainty=True).extra_shapes == {"uncertainty": ()}


# -- compositing extras --------------------------------------------------------------------------------


def test_composite_values_by_hand():
    weights = torch.tensor([[0.2, 0.5, 0.1], [0.0, 1.0, 0.0]])
    beta = torch.tensor([[1.0, 2.0, 4.0], [9.0, 3.0, 9.0]])
    torch.testing.assert_close(composite_values(weights, beta), torch.tensor([0.2 + 1.0 + 0.4, 3.0]))
    normals = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]], [[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]]])
    torch.testing.assert_close(composite_values(weights, normals), torch.tensor([[0.2, 0.5, 0.1], [0.0, 0.0, -1.0]]))


class ConstantSlab(torch.nn.Module):
    """Density 2 in x > 0, with a constant normal and uncertainty everywhere."""

    def forward(self, x, d):
        density = torch.where(x[:, 0] > 0, 2.0, 0.0)
        extras = {"normal": torch.tensor([0.0, 0.6, 0.8]).expand(len(x), 3), "uncertainty": torch.full((len(x),), 0.25)}
        return FieldOutput(density, density, torch.full_like(x, 0.5), None, extras)


def test_renderer_composites_extras_with_the_colour_weights():
    renderer = Renderer(CUBE, 0.1, 10.0, torch.zeros(3), RenderConfig(samples_per_ray=64, occupancy=False))
    c2w = look_at(torch.tensor([3.0, 0.4, 0.2]), torch.zeros(3))[None]
    f = torch.tensor([20.0])
    rays = rays_through_pixels(c2w.expand(3, 4, 4), f.expand(3), f.expand(3), torch.full((3,), 8.0),
                               torch.full((3,), 8.0), torch.tensor([7.5, 2.0, 14.0]), torch.tensor([7.5, 9.0, 3.0]))
    out = renderer.render_rays(ConstantSlab(), rays, with_samples=True)
    opacity = out["opacity"]
    assert (opacity > 0.5).all() and (opacity < 1).all()
    torch.testing.assert_close(out["uncertainty"], 0.25 * opacity)
    torch.testing.assert_close(out["normal"], opacity[:, None] * torch.tensor([0.0, 0.6, 0.8]))
    # The same weights as the colour: rgb = 0.5 * opacity on a black background.
    torch.testing.assert_close(out["rgb"], 0.5 * opacity[:, None].expand(-1, 3))
    torch.testing.assert_close(out["weights"].sum(-1), opacity)


def test_fields_without_extras_render_as_before():
    torch.manual_seed(0)
    field = build_field("hash", CUBE, **TINY_CONFIGS["hash"])
    # The padded layout, bit for bit (packed compositing equals it to rounding: test_render_closed_form)
    renderer = Renderer(CUBE, 0.1, 10.0, torch.ones(3), RenderConfig(samples_per_ray=32, occupancy=False,
                                                                     packed=False))
    c2w = look_at(torch.tensor([2.5, 1.0, 0.5]), torch.zeros(3))[None]
    f = torch.tensor([10.0])
    rays = rays_through_pixels(c2w.expand(5, 4, 4), f.expand(5), f.expand(5), torch.full((5,), 4.0),
                               torch.full((5,), 4.0), torch.arange(5.0), torch.arange(5.0))
    out = renderer.render_rays(field, rays, with_samples=True)
    assert set(out) == {"weights", "opacity", "depth", "rgb", "n_samples", "points", "live", "field_output",
                        "t_starts", "t_ends"}
    fo = out["field_output"]
    dens = torch.zeros(out["live"].shape).masked_scatter(out["live"], fo.density)
    cols = torch.zeros(*out["live"].shape, 3).masked_scatter(out["live"][..., None].expand(-1, -1, 3), fo.rgb)
    ref = composite(dens, out["t_starts"], out["t_ends"], cols, torch.ones(3))
    assert torch.equal(out["rgb"], ref["rgb"]) and torch.equal(out["weights"], ref["weights"])


# -- an analytic sphere through the field and the renderer -------------------------------------------


class AnalyticSphere(SDFField):
    """The SDF field's machinery (autograd normals, Laplace density) on an exact sphere SDF."""

    radius = 0.5

    def _trunk(self, x):
        p = (x - self.aabb.mean(dim=0)) / self.half_size
        return x.norm(dim=-1) - self.radius, torch.zeros(len(x), self.feature_dim), p


def sphere_rays(n_off=1):
    c2w = look_at(torch.tensor([3.0, 0.0, 0.0]), torch.zeros(3))[None]
    f = torch.tensor([100.0])
    px = torch.tensor([50.0 - 0.5, 60.0 - 0.5, 50.0 - 0.5])
    py = torch.tensor([50.0 - 0.5, 50.0 - 0.5, 35.0 - 0.5])
    return rays_through_pixels(c2w.expand(3, 4, 4), f.expand(3), f.expand(3), torch.full((3,), 50.0),
                               torch.full((3,), 50.0), px, py)


def test_sphere_sdf_renders_its_depth_and_normals():
    field = AnalyticSphere(CUBE, beta_init=0.002, beta_min=1e-4)
    renderer = Renderer(CUBE, 0.1, 10.0, torch.ones(3), RenderConfig(samples_per_ray=2048, occupancy=False))
    rays = sphere_rays()
    with torch.no_grad():
        out = renderer.render_rays(field, rays)
    o, d = rays.origins, rays.directions
    b, c = 2 * (o * d).sum(-1), (o * o).sum(-1) - AnalyticSphere.radius**2
    t_hit = (-b - torch.sqrt(b * b - 4 * c)) / 2
    assert out["opacity"].min() > 0.999
    assert out["depth"][0].item() == pytest.approx(2.5, abs=5e-3)  # the centre ray: distance - r
    torch.testing.assert_close(out["depth"], t_hit * rays.z_scale, atol=5e-3, rtol=0)
    true_normals = (o + t_hit[:, None] * d) / AnalyticSphere.radius
    torch.testing.assert_close(out["normal"], true_normals, atol=2e-2, rtol=0)
    # The surface function and marching cubes: solid is f > level, the zero set is the sphere.
    fn, level = field.surface()
    verts, faces = extract_mesh(fn, CUBE, resolution=24, level=level)
    assert verts.shape[0] > 100
    assert abs(torch.from_numpy(verts).norm(dim=-1) - AnalyticSphere.radius).max() < 0.02


def test_render_image_returns_extras_and_batches_without_samples_keep_their_keys():
    field = AnalyticSphere(CUBE, uncertainty=True)
    renderer = Renderer(CUBE, 0.1, 10.0, torch.ones(3), RenderConfig(samples_per_ray=64, occupancy=False, chunk=50))
    cams = sphere_cameras()
    image = renderer.render_image(field, cams, 0)
    assert image["normal"].shape == (12, 10, 3) and image["uncertainty"].shape == (12, 10)
    centre = image["normal"][6, 5]
    assert centre[0] > 0.9  # the camera on +x sees the sphere's +x side
    # Rays that miss the box: no field call, but the extras are still there, as zeros.
    rays = sphere_rays()
    rays.origins[:] = torch.tensor([0.0, 5.0, 5.0])
    out = renderer.render_rays(field, rays)
    assert out["n_samples"] == 0
    assert out["normal"].shape == (3, 3) and (out["normal"] == 0).all() and out["uncertainty"].shape == (3,)


def test_the_trunk_activation_is_softplus_with_its_first_and_second_derivatives():
    from fieldkd.platform.fields.nets import SmoothRelu

    wide = torch.linspace(-2.0, 2.0, 401).double()
    # torch's softplus returns x itself beyond beta x = 20, 2e-11 from the exact value there
    torch.testing.assert_close(SmoothRelu(100.0)(wide), torch.nn.functional.softplus(wide, beta=100.0),
                               atol=1e-10, rtol=0)
    x = torch.linspace(-0.19, 0.19, 381).double().requires_grad_()  # below that threshold
    ours, reference = SmoothRelu(100.0)(x), torch.nn.functional.softplus(x, beta=100.0)
    (d_ours,) = torch.autograd.grad(ours.sum(), x, create_graph=True)
    (d_ref,) = torch.autograd.grad(reference.sum(), x, create_graph=True)
    torch.testing.assert_close(d_ours, d_ref)
    (dd_ours,) = torch.autograd.grad(d_ours.sum(), x)
    (dd_ref,) = torch.autograd.grad(d_ref.sum(), x)
    torch.testing.assert_close(dd_ours, dd_ref)
    small = torch.randn(6, 4, dtype=torch.float64) * 0.02
    assert torch.autograd.gradgradcheck(SmoothRelu(100.0), (small.requires_grad_(),))


def test_skipping_invisible_samples_keeps_the_training_gradient():
    # A fresh SDF (a sphere of radius 0.6): the samples it skips are far from the surface or behind
    # it, and the pixels and the parameters' gradient are those of evaluating every sample.
    field = make(CUBE, uncertainty=True, beta_init=0.03)
    c2w = look_at(torch.tensor([2.5, 1.0, 0.5]), torch.zeros(3))[None]
    f, n = torch.tensor([10.0]), 64
    rays = rays_through_pixels(c2w.expand(n, 4, 4), f.expand(n), f.expand(n), torch.full((n,), 4.0),
                               torch.full((n,), 4.0), torch.arange(n).float() % 8, torch.arange(n).float() // 8)
    results = []
    for skip in (0.0, 1e-4):
        renderer = Renderer(CUBE, 0.1, 10.0, torch.ones(3), RenderConfig(
            samples_per_ray=128, occupancy=False, min_alpha=skip, min_transmittance=skip))
        field.zero_grad(set_to_none=True)
        torch.manual_seed(3)  # the same jitter
        out = renderer.render_rays(field, rays, train=True)
        (out["rgb"].sum() + out["normal"].sum() + out["uncertainty"].sum()).backward()
        grad = torch.cat([p.grad.reshape(-1) for p in field.parameters() if p.grad is not None])
        results.append((out, grad))
    (every, grad_every), (visible, grad_visible) = results
    assert visible["n_samples"] < 0.75 * every["n_samples"]
    for key in ("rgb", "opacity", "normal", "uncertainty"):
        torch.testing.assert_close(visible[key], every[key], atol=2e-3, rtol=0)
    assert torch.nn.functional.cosine_similarity(grad_visible, grad_every, dim=0) > 0.999
    assert (grad_visible.norm() / grad_every.norm() - 1).abs() < 0.01


def sphere_cameras():
    from fieldkd.platform.scenes.cameras import Cameras

    c2w = look_at(torch.tensor([3.0, 0.0, 0.0]), torch.zeros(3))[None]
    full = lambda v: torch.tensor([float(v)])  # noqa: E731
    return Cameras(c2w, full(12.0), full(12.0), full(5.0), full(6.0), 10, 12)


# -- occupancy and a short fit -----------------------------------------------------------------------------


def test_fresh_inside_out_sdf_is_not_culled_by_the_occupancy_grid():
    field = make(CUBE, inside_out=True)
    renderer = Renderer(CUBE, 0.05, 10.0, torch.ones(3),
                        RenderConfig(occupancy_resolution=16, occupancy_update_every=1, occupancy_warmup_steps=2))
    for step in range(4):
        renderer.update_occupancy(field, step)
    grid = renderer.grid
    centres = (grid.cell_index.float() + 0.5) / grid.resolution * 2 - 1
    radius = centres.norm(dim=-1)
    occupied = grid.occupied.reshape(-1)
    shell = (radius > 0.55) & (radius < 0.75)
    assert occupied[shell].float().mean() > 0.9  # the room's initial wall stays
    assert occupied[radius > 0.75].all()  # the solid beyond it too
    assert 0.5 < grid.occupancy_fraction < 1.0  # only free space near the centre is skipped


def test_short_fit_to_the_object_scene_improves_psnr(tiny_blender):
    scene = load_scene("blender", tiny_blender)
    torch.manual_seed(0)
    field = build_field("sdf", scene.aabb, **sdf_config())
    renderer = Renderer(scene.aabb, scene.near, scene.far, scene.background,
                        RenderConfig(samples_per_ray=32, occupancy=False))
    val = scene.split("val")

    def view_psnr():
        return psnr(renderer.render_image(field, val.cameras, 0)["rgb"].clamp(0, 1), val.images[0])

    before = view_psnr()
    task = PhotometricTask(field, renderer, scene.split("train"), 256, torch.device("cpu"))
    Trainer(TrainerConfig(steps=150, lr=5e-3, warmup_steps=10, progress=False, checkpoint_every=0)).fit(task)
    after = view_psnr()
    assert after > before + 5.0, (before, after)
    assert field.beta().item() < 0.05  # the surface sharpened
    image = renderer.render_image(field, val.cameras, 0)
    assert image["normal"].shape == (*val.images[0].shape[:2], 3)
    assert math.isfinite(float(field.last_regularizers["eikonal"]))
