"""The torch hash grid's compiled CPU path (``hashgrid_cpu.c``, built at install when a C compiler is there).

It computes what the torch operations compute, without their (levels, points, 8) index,
weight and product arrays: on one core the hash field's forward 3.9x and forward+backward 3.3x
faster on 65 536 points (``benchmarks/results/hash_kernel.md``). It serves the common case, CPU float32 points that need no gradient of their own; a
point gradient (an SDF's normals, the eikonal term) takes the torch operations, which have it.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sysconfig
from pathlib import Path

import torch
from torch.autograd.function import once_differentiable

from .hashgrid_math import LevelLayout

KERNEL_VERSION = 2  # hashgrid_cpu.c's KERNEL_VERSION: the arguments and arithmetic this file expects
_NAME = __name__.rsplit(".", 1)[0] + "._hashgrid_cpu"


def installed_copy(site_dirs: list[str] | None = None):
    """The kernel of an installed fieldkd, or None. A Ray job's shipped code (its working_dir)
    shadows the installed package but carries no compiled file; the node's own install has one."""
    dirs = site_dirs or sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    for site in dirs:
        folder = Path(site, *_NAME.split(".")[:-1])
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = folder / f"_hashgrid_cpu{suffix}"
            if path.is_file():
                spec = importlib.util.spec_from_file_location(_NAME, path)
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                return module
    return None


def _load():
    try:
        module = importlib.import_module(_NAME)
    except ImportError:  # not built here: installed without a C compiler, or shipped code
        module = installed_copy()
    return module if getattr(module, "VERSION", None) == KERNEL_VERSION else None


_hashgrid_cpu = _load()

# Below this many (point, level) pairs, one thread: starting threads would cost more than it saves.
_THREADED_FROM = 1 << 14


def compiled_kernel_built() -> bool:
    return _hashgrid_cpu is not None


def level_table(layout: LevelLayout) -> torch.Tensor:
    """(levels, 4) int64 rows of resolution, entries, first entry, dense (0/1): the kernel's layout."""
    rows = zip(layout.resolutions, layout.sizes, layout.offsets, layout.dense)
    return torch.tensor([[r, s, o, int(d)] for r, s, o, d in rows], dtype=torch.int64)


def kernel_applies(u: torch.Tensor, table: torch.Tensor) -> bool:
    return (_hashgrid_cpu is not None and u.device.type == "cpu" and table.device.type == "cpu"
            and table.dtype == torch.float32 and table.is_contiguous() and not u.requires_grad)


def _threads(n_points: int, n_levels: int) -> int:
    return torch.get_num_threads() if n_points * n_levels >= _THREADED_FROM else 1


class _EncodeOnCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, table, scales, levels):
        u = u.float().contiguous()
        n, n_levels, n_features = u.shape[0], levels.shape[0], table.shape[1]
        out = torch.empty(n, n_levels * n_features)
        _hashgrid_cpu.forward(u.data_ptr(), table.data_ptr(), out.data_ptr(), scales.data_ptr(),
                              levels.data_ptr(), n, n_levels, n_features, _threads(n, n_levels))
        ctx.save_for_backward(u, scales, levels)
        ctx.table_shape = table.shape
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        u, scales, levels = ctx.saved_tensors
        grad = grad.float().contiguous()
        grad_table = torch.zeros(ctx.table_shape)
        n, n_levels = u.shape[0], levels.shape[0]
        _hashgrid_cpu.backward(u.data_ptr(), grad.data_ptr(), grad_table.data_ptr(), scales.data_ptr(),
                               levels.data_ptr(), n, n_levels, ctx.table_shape[1], _threads(n, n_levels))
        return None, grad_table, None, None


def encode_on_cpu(u: torch.Tensor, table: torch.Tensor, scales: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """(N, 3) points in [0, 1] -> (N, levels * F) features, level-major, as TorchHashGrid's torch path."""
    return _EncodeOnCPU.apply(u, table, scales.contiguous(), levels.contiguous())
