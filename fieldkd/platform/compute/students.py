"""Students on many workers: Ray Train's TorchTrainer with DDP.

The stage's training rays are written once as Parquet shards; Ray Data reads
them and hands each worker its own stream. Gradients are averaged by
DistributedDataParallel (gloo on CPU, NCCL on GPU), so with the global batch
split evenly the workers take the same steps one process would. Checkpoints go
through ``ray.train.report`` into the run's storage path, and a killed worker
is replaced by Ray Train, which restarts the group from the last checkpoint.
Only rank 0 logs to MLflow, draws progress and evaluates.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from ..atomic import write_text
from ..stages import StageOutcome, StageRequest
from . import interrupts

LOCAL_SHUFFLE_ROWS = 8192


def fit_distributed(request: StageRequest) -> StageOutcome:
    """Train the request's model on ``compute.workers`` Ray Train workers, then evaluate it.

    Each worker runs the stage kind's ``worker`` body, or :func:`train_worker` (a field on the
    scene's rays) for kinds without one."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from .resources import training_resources
    from .session import largest_node

    compute = request.cfg["compute"]
    workers = int(compute["workers"])
    wanted = compute.get("gpus_per_training")
    use_gpu = request.cfg["device"] != "cpu" and (wanted > 0 if wanted is not None else largest_node("GPU") > 0)
    cpus, _ = training_resources(compute, workers)
    # Written by a task with a worker's resources: a teacher store needs the teacher (and its GPU).
    with interrupts.waiting():
        shards = ray.get(ray.remote(write_shards).options(num_cpus=cpus,
                                                       num_gpus=1 if use_gpu else 0).remote(request))
    datasets = {}
    if shards is not None:
        # Read before the workers take the CPUs: on a small machine no core would be left for reading.
        ray.data.DataContext.get_current().enable_progress_bars = False  # the training bar is the one to watch
        datasets["train"] = ray.data.read_parquet(str(shards)).materialize()
    from ..stage_kinds import stage_kind

    trainer = TorchTrainer(
        getattr(stage_kind(request.task), "worker", train_worker),
        train_loop_config={"request": request, "cpus_per_worker": cpus, "sharded": shards is not None},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": cpus, **({"GPU": 1} if use_gpu else {})}),
        datasets=datasets,
        run_config=RunConfig(name=f"{request.stage}-train", storage_path=str(Path(request.output_dir).resolve()),
                             failure_config=FailureConfig(max_failures=int(compute["max_restarts"])),
                             checkpoint_config=CheckpointConfig(num_to_keep=2),
                             logging_config=LoggingConfig(log_level="WARNING")),
    )
    with interrupts.waiting():  # Ctrl-C: the workers save a checkpoint and return
        interrupts.check()
        interrupts.call_aside(trainer.fit)
    return read_outcome(request)


def write_shards(request: StageRequest) -> str | None:
    """The Parquet shards the workers stream (the split's rays, the teacher's answers), as the stage's
    kind writes them; None when each worker draws its own batches."""
    from ..stage_kinds import stage_kind

    return stage_kind(request.task).shards(request)


OUTCOME = "outcome.json"


def write_outcome(outcome: StageOutcome, request: StageRequest) -> None:
    """Rank 0 leaves the stage's result next to its checkpoint, in storage."""
    import dataclasses
    import json

    path = request.checkpoint_dir / OUTCOME
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(dataclasses.asdict(outcome)))


def read_outcome(request: StageRequest) -> StageOutcome:
    import json

    return StageOutcome(**json.loads((request.checkpoint_dir / OUTCOME).read_text()))


class ShardRays:
    """A worker's endless stream of ray batches from its Ray Data shard."""

    def __init__(self, shard, batch_rays: int, device: torch.device):
        self.shard, self.batch_rays, self.device = shard, batch_rays, device
        self.batches = self._endless()

    def _endless(self):
        from ..train.ray_shards import batch_to_rays

        while True:
            for batch in self.shard.iter_torch_batches(batch_size=self.batch_rays, drop_last=True,
                                                       local_shuffle_buffer_size=LOCAL_SHUFFLE_ROWS):
                yield batch_to_rays(batch, self.device)

    def sample(self, n_rays: int):
        return next(self.batches)


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


def replica_spread(module: torch.nn.Module) -> float:
    """Largest difference between the workers' parameter checksums: 0 when DDP kept them in step."""
    import torch.distributed as dist

    checksum = torch.stack([p.detach().double().sum() for p in module.parameters()]).sum().reshape(1).cpu()
    found = [torch.zeros_like(checksum) for _ in range(dist.get_world_size())]
    dist.all_gather(found, checksum)
    values = torch.cat(found)
    return float(values.max() - values.min())


def train_worker(config: dict) -> None:
    """One Ray Train worker: DDP over the shared field, rank 0 logs and evaluates."""
    import ray.train
    import ray.train.torch
    from torch.nn.parallel import DistributedDataParallel

    from ..stage_kinds import stage_kind
    from ..stages import (RunContext, TrainedField, budget_start, build_parts, evaluate_field, make_task,
                          periodic_validation, stage_tags, trainer_config)
    from ..tracking import Run
    from ..train.loop import Trainer
    from ..train.progress import activity
    from .session import pin_threads

    request: StageRequest = config["request"]
    cfg = request.cfg
    pin_threads(config["cpus_per_worker"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    parts = build_parts(request, device)
    scene, field, renderer, backend = parts.scene, parts.field, parts.renderer, parts.backend
    model = DistributedDataParallel(field, forward_sync_buffers=False) if world > 1 else field
    run = Run(request.run_id, request.tracking_uri).continuing() if rank == 0 else None
    if run and request.system_metrics and cfg["tracking"].get("system_metrics_s"):
        run.start_system_metrics(float(cfg["tracking"]["system_metrics_s"]))
    ctx = RunContext(cfg=cfg, run=run, device=device, output_dir=Path(request.output_dir))
    validate = periodic_validation(cfg, scene, renderer, field, device)

    def periodic(step: int) -> dict:
        return validate(step) if rank == 0 else {}

    per_worker = max(1, int(cfg["trainer"]["batch_rays"]) // world)
    shard = ray.train.get_dataset_shard("train") if config["sharded"] else None
    task = make_task(request, parts, device, evaluate=periodic, forward=model, batches=shard, batch_rays=per_worker,
                     rank=rank)
    if world > 1 and renderer.grid is not None and stage_kind(request.task).shares_grid:
        refresh_every = int(cfg["render"]["occupancy_update_every"])
        update = task.after_step

        def after_step(step: int) -> None:
            update(step)
            if step % refresh_every == 0:
                share_rank0_state(renderer.grid)

        task.after_step = after_step
    with interrupts.watching() as stopped:
        trainer = Trainer(trainer_config(cfg), log=run.log_metrics if run else None,
                          checkpoints=ReportedCheckpoints(rank, request.checkpoint_dir), device=device,
                          description=f"{request.stage} x{world}", show_progress=rank == 0,
                          clock=agreed_seconds if world > 1 else None, should_stop=stopped,
                          started_at=budget_start(run, request) if run else None,
                          any_rank=any_worker(device) if world > 1 else None)
        result = trainer.fit(task)
    if result.stopped_by == "stop":  # checkpoint saved; the driver raises the interrupt
        if run:
            run.stop_system_metrics()
        return
    spread = replica_spread(field) if world > 1 else 0.0
    if rank == 0:
        run.log_metrics({"train/steps": result.steps, "train/seconds": result.seconds,
                         "train/workers": world, "train/replica_spread": spread}, result.steps)
        run.set_tags(ctx.tags(field=cfg["field"]["name"], backend=backend, stage=request.stage,
                              workers=world, **stage_tags(request)))
        trained = TrainedField(field, renderer, result, backend, request.checkpoint_dir)
        metrics = {}
        if request.evaluate:
            with activity(request.stage, "evaluating", enabled=bool(cfg["trainer"].get("progress", True))):
                metrics = evaluate_field(ctx, trained, scene, run, request.eval_groups)
        write_outcome(StageOutcome(request.stage, metrics, str(request.checkpoint_dir / "last.pt"), backend,
                                   result.steps, result.seconds), request)
        run.stop_system_metrics()
