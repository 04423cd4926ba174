"""An MVS stage on Ray Train workers: DDP over the cascade network, each rank on its own shard.

Every worker builds the stage's data module from config and draws batches of its rank's disjoint
shard of the samples (images are read lazily, batch by batch); the global ``mvs.batch_size`` is
split among the workers, so N workers take the steps one process would take at the same global
batch. Checkpoints travel through ``ray.train.report``; rank 0 logs, scores the test scans and
leaves the stage's outcome next to its checkpoint.
"""

from __future__ import annotations

from pathlib import Path


def mvs_train_worker(config: dict) -> None:
    """One Ray Train worker of an ``mvs_*`` stage (the body :func:`~...compute.students.fit_distributed` runs)."""
    import ray.train
    import ray.train.torch
    from torch.nn.parallel import DistributedDataParallel

    from ...compute import interrupts
    from ...compute.session import pin_threads, placement
    from ...compute.students import (
        ReportedCheckpoints,
        agreed_seconds,
        any_worker,
        replica_spread,
        write_outcome,
    )
    from ...stages import RunContext, StageOutcome, budget_start, trainer_config
    from ...tracking import Run
    from ...train.loop import Trainer
    from .stage import KINDS, MODEL_KIND, TrainedNet

    request = config["request"]
    cfg, kind = request.cfg, KINDS[request.task]
    pin_threads(config["cpus_per_worker"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    parts = kind.build(request, device)
    model = DistributedDataParallel(parts.net) if world > 1 else parts.net
    run = Run(request.run_id, request.tracking_uri).continuing() if rank == 0 else None
    per_worker = kind.batch_size(cfg) // world
    if per_worker < 1:
        from ...errors import InputError

        raise InputError("mvs.batch_size", f"{kind.batch_size(cfg)} samples cannot be split among {world} workers")
    task = kind.task(request, parts, device, batch_size=per_worker, rank=rank, world=world, forward=model,
                     evaluate=kind.validation(request, parts, device))
    with interrupts.watching() as stopped:
        trainer = Trainer(trainer_config(cfg), log=run.log_metrics if run else None,
                          checkpoints=ReportedCheckpoints(rank, request.checkpoint_dir), device=device,
                          description=f"{request.stage} x{world}", show_progress=rank == 0,
                          clock=agreed_seconds if world > 1 else None, should_stop=stopped,
                          started_at=budget_start(run, request) if run else None,
                          any_rank=any_worker(device) if world > 1 else None)
        result = trainer.fit(task)
    if result.stopped_by == "stop":  # checkpoint saved; the driver raises the interrupt
        return
    spread = replica_spread(parts.net) if world > 1 else 0.0
    if rank != 0:
        return
    run.log_metrics({"train/steps": result.steps, "train/seconds": result.seconds, "train/workers": world,
                     "train/replica_spread": spread}, result.steps)
    ctx = RunContext(cfg=cfg, run=run, device=device, output_dir=Path(request.output_dir))
    run.set_tags(ctx.tags(field=MODEL_KIND, backend="torch", stage=request.stage, workers=world,
                          **kind.tags(request), **placement()))
    metrics = {}
    if request.evaluate:
        metrics = kind.evaluate(ctx, TrainedNet(parts.net, result, device, request.checkpoint_dir), run, request)
        run.log_metrics(metrics, result.steps)
    write_outcome(StageOutcome(request.stage, metrics, str(request.checkpoint_dir / "last.pt"), "torch",
                               result.steps, result.seconds), request)
