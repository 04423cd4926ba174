"""Gradient averaging for data-parallel workers that DDP cannot wrap, on a real two-process gloo group."""

from __future__ import annotations

import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fieldkd.platform.compute.ddp import average_gradients


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank: int, port: int, out) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        both = torch.nn.Parameter(torch.zeros(2, 3))
        one = torch.nn.Parameter(torch.zeros(4))
        neither = torch.nn.Parameter(torch.zeros(1))
        both.grad = torch.full((2, 3), float(rank + 1))  # rank 0: 1, rank 1: 2
        if rank == 1:
            one.grad = torch.arange(4.0)
        average_gradients([both, one, neither])
        out.put((rank, both.grad.clone(), None if one.grad is None else one.grad.clone(), neither.grad))
    finally:
        dist.destroy_process_group()


def test_gradients_are_averaged_over_the_world_and_missing_ones_stay_missing():
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=worker, args=(rank, port, out)) for rank in range(2)]
    for p in procs:
        p.start()
    results = dict((r[0], r[1:]) for r in (out.get(timeout=120) for _ in procs))
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    for rank in (0, 1):
        both, one, neither = results[rank]
        torch.testing.assert_close(both, torch.full((2, 3), 1.5))  # (1 + 2) / 2
        torch.testing.assert_close(one, torch.arange(4.0) / 2)  # rank 0 had none: it counts as zero
        assert neither is None  # no worker had one: the optimizer still skips it
