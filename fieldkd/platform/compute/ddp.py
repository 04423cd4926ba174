"""What data-parallel workers of one stage agree on, over torch.distributed: the clock, per-step
flags, rank 0's buffers, gradients (for models that DDP cannot wrap), the replicas' checksums, and
checkpoints that travel through Ray Train."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch


class ReportedCheckpoints:
    """Trainer checkpoints that travel through ``ray.train.report``.

    Every rank reports at the same steps (Ray Train expects it); rank 0
    attaches the state. Without a reported checkpoint (a fresh Train run), a
    ``last.pt`` in the stage's storage folder, left by an earlier attempt of
    the same MLflow run, is resumed instead.
    """

    def __init__(self, rank: int, fallback_dir: Path):
        self.rank, self.fallback_dir = rank, fallback_dir

    def load(self, map_location) -> dict | None:
        import ray.train

        from ..train.checkpoint import DirectoryCheckpoints, load_checkpoint

        reported = ray.train.get_checkpoint()
        if reported is None:
            return DirectoryCheckpoints(self.fallback_dir).load(map_location)
        with reported.as_directory() as folder:
            return load_checkpoint(Path(folder), map_location)

    def save(self, state: dict, step: int) -> None:
        import ray.train

        from ..train.checkpoint import save_checkpoint

        if self.rank != 0:
            ray.train.report({"step": step})
            return
        with tempfile.TemporaryDirectory() as folder:
            save_checkpoint(state, folder)
            ray.train.report({"step": step}, checkpoint=ray.train.Checkpoint.from_directory(folder))
        save_checkpoint(state, self.fallback_dir)


def agreed_seconds(local: float) -> float:
    """The slowest worker's clock: all stop at the same step with the same learning rate."""
    import torch.distributed as dist

    value = torch.tensor([local], dtype=torch.float64)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return float(value.item())


def any_worker(device: torch.device):
    """Per-step flags the workers agree on: True on all when True on any."""
    import torch.distributed as dist

    def agree(flags: list[bool]) -> list[bool]:
        values = torch.tensor([float(f) for f in flags], device=device)
        dist.all_reduce(values, op=dist.ReduceOp.MAX)
        return [bool(v) for v in values.tolist()]

    return agree


def share_rank0_state(module: torch.nn.Module) -> None:
    """Copy rank 0's buffers (e.g. the occupancy grid) to every worker."""
    import torch.distributed as dist

    for buffer in module.buffers():
        if buffer.dtype == torch.bool:  # gloo does not broadcast bools
            as_bytes = buffer.to(torch.uint8)
            dist.broadcast(as_bytes, src=0)
            buffer.copy_(as_bytes.bool())
        else:
            dist.broadcast(buffer, src=0)


def average_gradients(params: list[torch.nn.Parameter]) -> None:
    """Average the workers' gradients in one all-reduce, after the backward pass.

    For models that a step calls part by part (an encoder, then a head at sampled points): DDP
    hooks into one call of the whole model. A parameter that has no gradient on any worker keeps
    none, so the optimizer skips it as one process would; one that has a gradient on some workers
    gets their sum over the world size (the others count as zero, as in DDP)."""
    import torch.distributed as dist

    if not params:
        return
    world = dist.get_world_size()
    grads = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in params]
    present = torch.tensor([float(p.grad is not None) for p in params], device=grads[0].device)
    flat = torch.cat([*grads, present])
    dist.all_reduce(flat)
    offset = 0
    for p, found in zip(params, flat[-len(params):].tolist()):
        n = p.numel()
        p.grad = (flat[offset:offset + n] / world).view_as(p).to(p.dtype) if found > 0 else None
        offset += n


def replica_spread(module: torch.nn.Module) -> float:
    """Largest difference between the workers' parameter checksums: 0 when DDP kept them in step."""
    import torch.distributed as dist

    checksum = torch.stack([p.detach().double().sum() for p in module.parameters()]).sum().reshape(1).cpu()
    found = [torch.zeros_like(checksum) for _ in range(dist.get_world_size())]
    dist.all_gather(found, checksum)
    values = torch.cat(found)
    return float(values.max() - values.min())
