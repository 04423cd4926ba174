"""Every registered field honours the RadianceField contract."""

import pytest
import torch

from fieldkd.platform.errors import InputError
from fieldkd.platform.fields import FIELDS, FieldOutput, RadianceField, build_field
from fieldkd.platform.fields.presets import TINY_CONFIGS

AABB = torch.tensor([[-1.0, -2.0, -0.5], [1.0, 2.0, 1.5]])
NAMES = ["mlp", "hash", "kplanes", "vm", "grid"]


def inputs(n=257, seed=0, box=AABB):
    g = torch.Generator().manual_seed(seed)
    x = box[0] + torch.rand(n, 3, generator=g) * (box[1] - box[0])
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    return x, d


def make(name, **extra):
    torch.manual_seed(0)
    return build_field(name, AABB, **{**TINY_CONFIGS[name], **extra})


def test_registry_has_all_fields():
    assert set(NAMES) <= set(FIELDS)


@pytest.mark.parametrize("name", NAMES)
def test_forward_shapes_and_ranges(name):
    field = make(name)
    assert isinstance(field, RadianceField)
    x, d = inputs()
    out = field(x, d)
    assert isinstance(out, FieldOutput)
    assert out.raw_density.shape == (257,)
    assert out.density.shape == (257,)
    assert out.rgb.shape == (257, 3)
    assert (out.density >= 0).all()
    assert ((out.rgb >= 0) & (out.rgb <= 1)).all()
    if name == "grid":
        assert out.feature is None and not field.has_feature
    else:
        assert field.has_feature and field.feature_dim == 16
        assert out.feature.shape == (257, 16)
        # feature[..., 0] is the raw density the density head activates.
        torch.testing.assert_close(out.feature[:, 0], out.raw_density)
        torch.testing.assert_close(out.density, torch.exp(out.raw_density))


@pytest.mark.parametrize("name", NAMES)
def test_density_only_path_matches_forward(name):
    field = make(name)
    x, d = inputs()
    torch.testing.assert_close(field.density(x), field(x, d).density)


@pytest.mark.parametrize("name", NAMES)
def test_leading_dims_are_kept(name):
    field = make(name)
    x, d = inputs(24)
    out = field(x.reshape(2, 12, 3), d.reshape(2, 12, 3))
    assert out.density.shape == (2, 12) and out.rgb.shape == (2, 12, 3)
    assert field.density(x.reshape(4, 6, 3)).shape == (4, 6)


@pytest.mark.parametrize("name", NAMES)
def test_backward_gives_finite_nonzero_grads(name):
    field = make(name)
    x, d = inputs(2048)
    out = field(x, d)
    loss = out.density.mean() + out.rgb.mean() + field.regularization()
    loss.backward()
    for pname, p in field.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", NAMES)
def test_points_outside_aabb_have_zero_density(name):
    field = make(name)
    _, d = inputs(6)
    x = torch.tensor([
        [1.01, 0.0, 0.5],   # just past x max
        [0.0, -2.5, 0.5],   # below y min
        [0.0, 0.0, 1.6],    # above z max
        [5.0, 5.0, 5.0],
        [0.0, 0.0, 0.5],    # inside
        [1.0, 2.0, 1.5],    # on the max corner: inside
    ])
    dens = field(x, d).density
    assert (dens[:4] == 0).all()
    assert (dens[4:] > 0).all()
    assert (field.density(x)[:4] == 0).all()


@pytest.mark.parametrize("name", NAMES)
def test_param_groups_cover_every_parameter_once(name):
    field = make(name)
    groups = field.param_groups(1e-3)
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in field.parameters())
    by_name = {g["name"]: g for g in groups}
    if "network" in by_name:
        assert by_name["network"]["lr"] == 1e-3
    if "grid" in by_name:
        assert by_name["grid"]["lr"] == pytest.approx(1e-3 * field.grid_lr_scale)
    torch.optim.Adam(groups)  # a valid optimizer spec


def test_param_group_split_by_kind():
    names = {n: [g["name"] for g in make(n).param_groups(1e-2)] for n in NAMES}
    assert names["mlp"] == ["network"]
    assert names["grid"] == ["grid"]
    for n in ("hash", "kplanes", "vm"):
        assert names[n] == ["grid", "network"]
    assert make("vm").param_groups(1e-3)[0]["lr"] == pytest.approx(2e-2)


@pytest.mark.parametrize("name", NAMES)
def test_regularization(name):
    field = make(name)
    reg = field.regularization()
    assert reg.dim() == 0 and torch.isfinite(reg)
    if name in ("mlp", "hash"):
        assert reg == 0
    elif name == "grid":  # constant initial voxels: no variation yet
        assert reg == 0 and reg.requires_grad
    else:
        assert reg > 0 and reg.requires_grad


def test_regularization_weights_come_from_config():
    assert make("kplanes", tv_weight=0.0).regularization() == 0
    base = make("vm", l1_weight=1e-3).regularization()
    torch.testing.assert_close(make("vm", l1_weight=2e-3).regularization(), 2 * base)
    assert make("grid", tv_weight_density=0.0, tv_weight_sh=0.0).regularization() == 0
    # Zero-initialised SH coefficients have no variation; random density does.
    g = make("grid", tv_samples=None, tv_weight_sh=0.0)
    with torch.no_grad():
        g.density_grid.values.normal_()
    assert g.regularization() > 0


def test_build_field_config_errors_and_round_trip():
    with pytest.raises(InputError, match="unknown field"):
        build_field("nope", AABB)
    with pytest.raises(InputError, match="unknown config key"):
        build_field("hash", AABB, n_level=4)
    with pytest.raises(InputError, match="disagrees"):
        build_field("hash", AABB, name="vm")
    field = build_field("hash", AABB, name="hash", **TINY_CONFIGS["hash"])
    assert field.field_name == "hash" and field.backend == "torch"
    clone = build_field(field.field_name, field.aabb, **field.config)
    clone.load_state_dict(field.state_dict())
    x, d = inputs(64)
    torch.testing.assert_close(clone(x, d).rgb, field(x, d).rgb)


def test_common_keys_reach_the_base_class():
    field = make("mlp", density_activation="softplus", dir_encoding="frequency", dir_degree=4,
                 color_layers=2)
    x, d = inputs()
    out = field(x, d)
    torch.testing.assert_close(out.density, torch.nn.functional.softplus(out.raw_density))
    assert field.colour.dir_encoding.out_dim == 27


@pytest.mark.parametrize("name", NAMES)
def test_fields_survive_pickling(name):
    # Ray ships fields between processes by pickling them.
    import pickle

    field = make(name)
    clone = pickle.loads(pickle.dumps(field))
    x, d = inputs(32)
    torch.testing.assert_close(clone(x, d).rgb, field(x, d).rgb)


def test_bad_aabb_is_rejected():
    with pytest.raises(ValueError, match="max > min"):
        build_field("grid", [[0, 0, 0], [1, 0, 1]], resolution=4)
