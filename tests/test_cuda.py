"""What must hold on a GPU: the same numbers as on the CPU. Marked ``cuda`` and skipped without one;
`benchmarks/gpu_check.sh` runs them (``pytest -m cuda``) on a GPU machine."""

from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_the_hash_field_gives_the_cpus_density_colour_and_gradients():
    from fieldkd.platform.fields import build_field

    torch.manual_seed(0)
    field = build_field("hash", [[-1.0] * 3, [1.0] * 3], backend="torch", log2_hashmap_size=14)
    x = torch.rand(4096, 3) * 2 - 1
    d = torch.nn.functional.normalize(torch.randn(4096, 3), dim=-1)
    on_cpu = field(x, d)
    (on_cpu.density.sum() + on_cpu.rgb.sum()).backward()
    grads = [p.grad.clone() for p in field.parameters()]
    field.zero_grad(set_to_none=True)
    gpu = field.cuda()
    on_gpu = gpu(x.cuda(), d.cuda())
    (on_gpu.density.sum() + on_gpu.rgb.sum()).backward()
    torch.testing.assert_close(on_gpu.density.cpu(), on_cpu.density, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(on_gpu.rgb.cpu(), on_cpu.rgb, rtol=1e-4, atol=1e-4)
    for cpu_grad, p in zip(grads, gpu.parameters()):
        torch.testing.assert_close(p.grad.cpu(), cpu_grad, rtol=1e-3, atol=1e-4)


def test_the_cascade_mvs_network_gives_the_cpus_depth():
    from fieldkd.platform.networks.mvs.network import build_cascade_mvs
    from fieldkd.platform.networks.mvs.synthetic import collate, plane_scene

    torch.manual_seed(0)
    net = build_cascade_mvs({"hypotheses": [8, 4, 4]}).eval()
    batch = collate([plane_scene(height=64, width=64)])
    args = [batch[k] for k in ("images", "intrinsics", "extrinsics", "depth_min", "depth_max")]
    with torch.no_grad():
        on_cpu = net(*args)
        on_gpu = net.cuda()(*[a.cuda() for a in args])
    torch.testing.assert_close(on_gpu.depth.cpu(), on_cpu.depth, rtol=1e-3, atol=1e-3)
