"""The pure-PyTorch hash grid: tcnn's indexing rules, exact vertex values,
continuity, and gradients; plus tcnn parity where tinycudann and CUDA exist."""

import math
import os
import platform
import shutil
from pathlib import Path

import pytest
import torch

from fieldkd.platform.fields import build_field
from fieldkd.platform.fields.encodings.gather import weighted_gather
from fieldkd.platform.fields.encodings.hashgrid import (
    INIT_RANGE, HashGridConfig, TorchHashGrid, corner_indices,
)
from fieldkd.platform.fields.encodings.hashgrid_cpu import compiled_kernel_built
from fieldkd.platform.fields.encodings.hashgrid_math import (
    cell_position, dense_index, level_index, spatial_hash,
)

NOT_BUILT = "the compiled CPU kernel is not built (no C compiler at install)"
# The closed-form interpolation tests run on both CPU paths of the torch backend.
PATHS = pytest.mark.parametrize("compiled", [
    pytest.param(False, id="torch_ops"),
    pytest.param(True, id="compiled", marks=pytest.mark.skipif(not compiled_kernel_built(), reason=NOT_BUILT)),
])


def random_table(grid, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        grid.table.copy_(torch.rand(grid.table.shape, generator=g) * 2 - 1)
    return grid


# -- spatial hash and layout --------------------------------------------------

@pytest.mark.parametrize("coords, expected", [
    ((0, 0, 0), 0),
    ((1, 0, 0), 1),
    ((0, 1, 0), 2654435761),
    ((0, 0, 1), 805459861),
    ((0, 2, 0), 2 * 2654435761 - 2**32),  # 1013904226: wraps like uint32
    ((1, 1, 1), 0x9E3779B1 ^ 0x30025795 ^ 1),  # 2922720805
    ((3, 5, 7), 1191511397),  # 3 ^ (5*P1 mod 2^32 = 387276917) ^ (7*P2 mod 2^32 = 1343251731)
])
def test_spatial_hash_hand_computed(coords, expected):
    assert spatial_hash(torch.tensor(coords)).item() == expected


def test_spatial_hash_closed_form_on_many_coords():
    c = torch.randint(0, 5000, (1000, 3), generator=torch.Generator().manual_seed(0))
    expected = [(x * 1 ^ y * 2654435761 ^ z * 805459861) % 2**32 for x, y, z in c.tolist()]
    assert spatial_hash(c).tolist() == expected


def test_default_layout_matches_tcnn_rules():
    cfg = HashGridConfig()  # 16 levels, 2^17 table, base 16, max 512
    assert cfg.resolved_per_level_scale() == pytest.approx(math.exp(math.log(512 / 16) / 15))
    lay = cfg.layout()
    assert lay.resolutions[0] == 16  # scale 15 -> 16 vertices per axis
    for res, size, dense in zip(lay.resolutions, lay.sizes, lay.dense):
        assert dense == (res**3 <= 2**17)
        assert size == (-(-res**3 // 8) * 8 if dense else 2**17)  # next multiple of 8
    assert lay.dense[:5] == (True,) * 5 and not any(lay.dense[5:])
    assert lay.offsets == tuple(sum(lay.sizes[:i]) for i in range(16))
    grid = TorchHashGrid(cfg)
    assert grid.table.shape == (lay.n_entries, 2)
    assert grid.table.abs().max() <= INIT_RANGE


def test_explicit_per_level_scale_wins_and_goes_to_tcnn_config():
    cfg = HashGridConfig(per_level_scale=1.5, max_resolution=2048)
    assert cfg.resolved_per_level_scale() == 1.5
    tc = cfg.tcnn_config()
    assert tc["otype"] == "HashGrid" and tc["per_level_scale"] == 1.5
    assert tc["n_levels"] == 16 and tc["log2_hashmap_size"] == 17 and tc["base_resolution"] == 16


def test_coarse_levels_use_dense_indexing():
    cfg = HashGridConfig()
    lay = cfg.layout()
    grid = TorchHashGrid(cfg)
    u = torch.rand(500, 3, generator=torch.Generator().manual_seed(0))
    cell, _ = cell_position(u, grid.scales)
    idx = corner_indices(cell, lay).long()
    for level in range(lay.n_dense):
        res = lay.resolutions[level]
        x, y, z = cell[level].unbind(-1)
        expected = (x + y * res + z * res * res) % lay.sizes[level] + lay.offsets[level]
        assert torch.equal(idx[level, :, 0], expected)  # corner 0 = lower vertex
        upper = ((x + 1) + (y + 1) * res + (z + 1) * res * res) % lay.sizes[level] + lay.offsets[level]
        assert torch.equal(idx[level, :, 7], upper)


def test_vectorised_indices_match_per_corner_reference():
    cfg = HashGridConfig(n_levels=12, log2_hashmap_size=12, max_resolution=1024)
    lay = cfg.layout()
    grid = TorchHashGrid(cfg)
    u = torch.rand(300, 3, generator=torch.Generator().manual_seed(1))
    u[:5] = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.5], [0.0, 1.0, 1.0], [0.5, 0.5, 0.5]])
    cell, _ = cell_position(u, grid.scales)
    idx = corner_indices(cell, lay).long()
    for level in range(cfg.n_levels):
        for k in range(8):
            bits = torch.tensor([(k >> 2) & 1, (k >> 1) & 1, k & 1])
            ref = level_index(cell[level] + bits, lay, level) + lay.offsets[level]
            assert torch.equal(idx[level, :, k], ref), (level, k)
            assert (idx[level, :, k] < lay.offsets[level] + lay.sizes[level]).all()


# -- interpolation --------------------------------------------------------------

@PATHS
def test_vertex_returns_stored_embedding_exactly_dense(compiled):
    # base 17 -> scale 16: u = (2k - 1) / 32 lands exactly on vertex k.
    cfg = HashGridConfig(n_levels=1, base_resolution=17, max_resolution=None, log2_hashmap_size=14)
    grid = random_table(TorchHashGrid(cfg, compiled=compiled))
    assert grid.layout.dense == (True,) and grid.layout.resolutions == (17,)
    k = torch.randint(1, 17, (200, 3), generator=torch.Generator().manual_seed(0))
    out = grid((2 * k - 1).float() / 32)
    assert torch.equal(out, grid.table[dense_index(k, 17)])


@PATHS
def test_vertex_returns_stored_embedding_exactly_hashed(compiled):
    # base 33 -> scale 32, and 33^3 > 2^10 forces hashing.
    cfg = HashGridConfig(n_levels=1, base_resolution=33, max_resolution=None, log2_hashmap_size=10)
    grid = random_table(TorchHashGrid(cfg, compiled=compiled))
    assert grid.layout.dense == (False,)
    k = torch.randint(1, 33, (200, 3), generator=torch.Generator().manual_seed(0))
    out = grid((2 * k - 1).float() / 64)
    assert torch.equal(out, grid.table[spatial_hash(k) % 1024])


@PATHS
def test_vertices_of_every_level(compiled):
    cfg = HashGridConfig(n_levels=16, log2_hashmap_size=15, max_resolution=512)
    grid = random_table(TorchHashGrid(cfg, compiled=compiled))
    lay = grid.layout
    g = torch.Generator().manual_seed(2)
    for level, s in enumerate(lay.scales):
        k = torch.randint(1, int(s), (50, 3), generator=g)
        u = ((k.double() - 0.5) / s).float()  # pos = u * s + 0.5 = k, up to float rounding
        feats = grid(u)[:, 2 * level: 2 * level + 2]  # level-major output
        stored = grid.table[level_index(k, lay, level) + lay.offsets[level]]
        torch.testing.assert_close(feats, stored, atol=1e-4, rtol=0)


@PATHS
def test_interpolation_is_continuous_across_cell_boundaries(compiled):
    cfg = HashGridConfig(n_levels=16, log2_hashmap_size=15, max_resolution=512)
    grid = random_table(TorchHashGrid(cfg, compiled=compiled))  # entries in [-1, 1]
    g = torch.Generator().manual_seed(3)
    eps = 1e-5
    for level, s in enumerate(grid.layout.scales):
        u = torch.rand(200, 3, generator=g, dtype=torch.float64) * 0.8 + 0.1
        axis = level % 3
        k = torch.randint(2, int(s) - 1, (200,), generator=g)
        u[:, axis] = (k - 0.5) / s  # exactly on a cell face of this level
        lo, hi = u.clone(), u.clone()
        lo[:, axis] -= eps
        hi[:, axis] += eps
        jump = (grid(hi.float()) - grid(lo.float()))[:, 2 * level: 2 * level + 2].abs().max()
        # Lipschitz bound: slope <= s * (max - min of entries) = 2s per unit of u.
        assert jump <= 2 * s * 2 * eps * 1.5 + 1e-5, (level, jump.item())


def linear_table_grid(a, compiled=False):
    """One dense level (scale 8) whose vertex (x, y, z) stores a . (x, y, z)."""
    cfg = HashGridConfig(n_levels=1, base_resolution=9, max_resolution=None, log2_hashmap_size=12)
    grid = TorchHashGrid(cfg, compiled=compiled)
    zyx = torch.stack(torch.meshgrid(*[torch.arange(9)] * 3, indexing="ij"), -1).reshape(-1, 3)
    xyz = zyx.flip(-1)
    with torch.no_grad():
        grid.table.zero_()
        grid.table[dense_index(xyz, 9), 0] = xyz.float() @ a
    return grid


@PATHS
def test_trilinear_interpolation_reproduces_linear_functions(compiled):
    # Trilinear weights sum to one and are linear in position, so a table
    # holding a linear function of the vertex is interpolated exactly.
    a = torch.tensor([0.3, -0.7, 1.1])
    grid = linear_table_grid(a, compiled)
    u = torch.rand(100, 3, generator=torch.Generator().manual_seed(4)) * 0.85  # inside the grid
    torch.testing.assert_close(grid(u)[:, 0], (u * 8.0 + 0.5) @ a, atol=1e-5, rtol=0)


# -- gradients ------------------------------------------------------------------

def test_weighted_gather_gradcheck():
    g = torch.Generator().manual_seed(0)
    table = torch.randn(20, 3, dtype=torch.float64, generator=g, requires_grad=True)
    idx = torch.randint(0, 20, (15, 8), generator=g)
    w = torch.rand(15, 8, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(weighted_gather, (table, idx, w))


def test_input_gradient_of_linear_table():
    a = torch.tensor([0.3, -0.7, 1.1])
    grid = linear_table_grid(a)
    u = (torch.rand(50, 3, generator=torch.Generator().manual_seed(5)) * 0.85).requires_grad_()
    grid(u)[:, 0].sum().backward()
    torch.testing.assert_close(u.grad, (8.0 * a).expand(50, 3), atol=1e-4, rtol=0)


# -- the compiled CPU kernel ------------------------------------------------------

needs_kernel = pytest.mark.skipif(not compiled_kernel_built(), reason=NOT_BUILT)
# On x86 with AVX2, torch's embedding_bag (fbgemm) sums corner by corner with fused multiply-adds,
# as the kernel does: there the two paths give identical bits, so identical trainings.
FBGEMM_ROUNDING = platform.machine() in ("x86_64", "AMD64") and \
    torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


def test_compiled_kernel_is_built_where_a_compiler_is():
    if shutil.which(os.environ.get("CC", "cc")) is None:
        pytest.skip("no C compiler on this machine: the torch operations serve alone")
    assert compiled_kernel_built(), "pip install -e . builds fieldkd's hash-grid kernel where a C compiler is"


@needs_kernel
def test_shipped_code_without_the_kernel_finds_the_installed_one(tmp_path):
    # A Ray job's working_dir shadows the installed fieldkd and carries no compiled file.
    from fieldkd.platform.fields.encodings import hashgrid_cpu

    assert hashgrid_cpu.installed_copy([str(tmp_path)]) is None
    built = Path(hashgrid_cpu._hashgrid_cpu.__file__)
    folder = tmp_path.joinpath("fieldkd", "platform", "fields", "encodings")
    folder.mkdir(parents=True)
    shutil.copy(built, folder / built.name)
    copy = hashgrid_cpu.installed_copy([str(tmp_path)])
    assert copy is not None and Path(copy.__file__).parent == folder
    assert copy.VERSION == hashgrid_cpu.KERNEL_VERSION


def _forward_backward(grid, u, grad_out):
    grid.table.grad = None
    out = grid(u)
    (out * grad_out).sum().backward()
    return out.detach(), grid.table.grad.clone(), type(out.grad_fn).__name__


@needs_kernel
@pytest.mark.parametrize("cfg", [
    HashGridConfig(),  # the default: 5 dense levels, 11 hashed
    HashGridConfig(n_levels=6, n_features_per_level=4, log2_hashmap_size=11, base_resolution=5,
                   max_resolution=300),
])
def test_compiled_kernel_matches_torch_operations(cfg):
    g = torch.Generator().manual_seed(7)
    # Points beyond [0, 1] too: negative cells and indices that wrap must agree as well.
    u = torch.rand(4000, 3, generator=g) * 1.2 - 0.1
    u[:5] = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.5], [0.5, 0.5, 0.5], [-0.05, 1.05, 0.2]])
    grad_out = torch.randn(4000, cfg.out_dim, generator=g)
    ops = _forward_backward(random_table(TorchHashGrid(cfg, compiled=False)), u, grad_out)
    kernel = _forward_backward(random_table(TorchHashGrid(cfg, compiled=True)), u, grad_out)
    assert "EncodeOnCPU" in kernel[2] and "EncodeOnCPU" not in ops[2]
    assert kernel[1].abs().sum() > 0
    if FBGEMM_ROUNDING:  # the same fused multiply-adds in the same order: the same bits
        assert torch.equal(kernel[0], ops[0]) and torch.equal(kernel[1], ops[1])
    torch.testing.assert_close(kernel[0], ops[0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(kernel[1], ops[1], atol=1e-5, rtol=1e-6)


@needs_kernel
def test_compiled_kernel_gives_the_same_bits_on_any_thread_count():
    cfg = HashGridConfig(n_levels=8, log2_hashmap_size=12)
    grid = random_table(TorchHashGrid(cfg, compiled=True))
    g = torch.Generator().manual_seed(8)
    u, grad_out = torch.rand(30000, 3, generator=g), torch.randn(30000, cfg.out_dim, generator=g)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _forward_backward(grid, u, grad_out)
        torch.set_num_threads(3)  # levels split 3-2-3 ways: each thread writes its own levels' rows
        three = _forward_backward(grid, u, grad_out)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one[0], three[0]) and torch.equal(one[1], three[1])


@needs_kernel
def test_points_that_need_a_gradient_take_the_torch_operations():
    a = torch.tensor([0.3, -0.7, 1.1])
    grid = linear_table_grid(a, compiled=True)
    u = (torch.rand(50, 3, generator=torch.Generator().manual_seed(5)) * 0.85).requires_grad_()
    out = grid(u)
    assert "EncodeOnCPU" not in type(out.grad_fn).__name__
    out[:, 0].sum().backward()
    torch.testing.assert_close(u.grad, (8.0 * a).expand(50, 3), atol=1e-4, rtol=0)


def test_hash_field_option_picks_the_cpu_path():
    box = [[-1.0] * 3, [1.0] * 3]
    small = dict(backend="torch", n_levels=2, log2_hashmap_size=10, max_resolution=32)
    assert build_field("hash", box, hash_kernel="torch", **small).encoding.compiled is False
    assert build_field("hash", box, **small).encoding.compiled is compiled_kernel_built()
    with pytest.raises(ValueError, match="hash kernel"):
        build_field("hash", box, hash_kernel="fast", **small)


# -- tcnn parity (needs tinycudann and CUDA) --------------------------------------

def _tcnn_or_skip():
    tcnn = pytest.importorskip("tinycudann")
    if not torch.cuda.is_available():
        pytest.skip("tinycudann needs CUDA")
    return tcnn


@pytest.mark.cuda
@pytest.mark.parametrize("cfg", [
    HashGridConfig(),
    HashGridConfig(n_levels=8, n_features_per_level=4, log2_hashmap_size=15, base_resolution=8,
                   max_resolution=2048),
])
def test_tcnn_and_torch_backends_agree(cfg):
    _tcnn_or_skip()
    from fieldkd.platform.fields.encodings.hashgrid_tcnn import TcnnHashGrid

    ref = TcnnHashGrid(cfg)
    mine = TorchHashGrid(cfg).cuda()
    assert ref.flat_params().numel() == mine.flat_params().numel()
    with torch.no_grad():
        ref.load_flat_params(torch.rand_like(ref.flat_params()) * 2 - 1)
    mine.load_flat_params(ref.flat_params())
    u = torch.rand(20000, 3, device="cuda")
    u[:4] = torch.tensor([[0.0] * 3, [1.0] * 3, [0.0, 1.0, 0.5], [0.999, 0.001, 0.5]])
    out_ref, out_mine = ref(u), mine(u)
    torch.testing.assert_close(out_mine, out_ref, atol=1e-3, rtol=0)
    # Same upstream gradient -> same table gradient.
    g = torch.randn_like(out_ref)
    (out_ref * g).sum().backward()
    (out_mine * g).sum().backward()
    grad_ref = ref.encoding.params.grad
    torch.testing.assert_close(mine.table.grad.reshape(-1), grad_ref.float(), atol=1e-3, rtol=1e-3)


@pytest.mark.cuda
def test_hash_field_on_tcnn_backend():
    _tcnn_or_skip()
    field = build_field("hash", [[-1] * 3, [1] * 3], backend="tcnn").cuda()
    assert field.backend == "tcnn"
    x = torch.rand(1000, 3, device="cuda") * 2 - 1
    d = torch.nn.functional.normalize(torch.randn(1000, 3, device="cuda"), dim=-1)
    out = field(x, d)
    assert out.feature.shape == (1000, 16) and (out.density >= 0).all()
