"""Time every field's forward and forward+backward on a batch of points.

    python benchmarks/field_speed.py --points 65536 --threads 2

Uses each field's default (CPU-sized) config unless ``--tiny``; prints one
line per field, and for the hash field one per CPU path of its torch backend
(torch operations, and the compiled kernel where it is built). Best of
``--repeats`` runs after one warm-up.
"""

from __future__ import annotations

import argparse
import time

import torch

from fieldkd.platform.fields import FIELDS, build_field
from fieldkd.platform.fields.encodings.hashgrid_cpu import compiled_kernel_built
from fieldkd.platform.fields.presets import TINY_CONFIGS


def best_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_field(name: str, cfg: dict, n_points: int, repeats: int) -> dict:
    torch.manual_seed(0)
    field = build_field(name, [[-1.0] * 3, [1.0] * 3], **cfg)
    x = torch.rand(n_points, 3) * 2 - 1
    d = torch.nn.functional.normalize(torch.randn(n_points, 3), dim=-1)

    def forward():
        with torch.no_grad():
            field(x, d)

    def density():
        with torch.no_grad():
            field.density(x)

    def forward_backward():
        field.zero_grad(set_to_none=True)
        out = field(x, d)
        (out.density.mean() + out.rgb.mean()).backward()

    return {
        "params": sum(p.numel() for p in field.parameters()),
        "forward_s": best_time(forward, repeats),
        "fwd_bwd_s": best_time(forward_backward, repeats),
        "density_s": best_time(density, repeats),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=65536)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="use the tiny test configs")
    parser.add_argument("fields", nargs="*", default=sorted(FIELDS))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{args.points} points, {torch.get_num_threads()} threads")
    for name in args.fields:
        cfg = dict(TINY_CONFIGS[name]) if args.tiny else {}
        variants = [(name, cfg)]
        if name == "hash":
            cfg.setdefault("backend", "torch")
            variants = [("hash/ops", {**cfg, "hash_kernel": "torch"})]
            if compiled_kernel_built():
                variants.append(("hash/c", {**cfg, "hash_kernel": "compiled"}))
        for label, options in variants:
            r = bench_field(name, options, args.points, args.repeats)
            print(f"{label:8s} params={r['params']:>10,d}  forward={r['forward_s']:.3f}s  "
                  f"fwd+bwd={r['fwd_bwd_s']:.3f}s  density={r['density_s']:.3f}s")


if __name__ == "__main__":
    main()
