"""Students on many workers: Ray Train's TorchTrainer with DDP.

The stage's training rays (or a teacher-sample store) are written once as Parquet
shards; Ray Data streams them and hands each worker its own part. Gradients are averaged by
DistributedDataParallel (gloo on CPU, NCCL on GPU), so with the global batch
split evenly the workers take the same steps one process would. Checkpoints go
through ``ray.train.report`` into the run's storage path, and a killed worker
is replaced by Ray Train, which restarts the group from the last checkpoint.
Only rank 0 logs to MLflow, draws progress and evaluates.
"""

from __future__ import annotations

from pathlib import Path

from ..atomic import write_text
from ..stage_request import Place, StageOutcome, StageRequest
from . import interrupts


def fit_distributed(request: StageRequest, body) -> StageOutcome:
    """Train the request's model on ``compute.workers`` Ray Train workers, then evaluate it: every
    worker runs ``body(request, place)`` (the stage body, :func:`..stages.fit_stage`) at its place."""
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
        from ..data.row_groups import stream

        datasets["train"] = stream(shards)  # streamed: read as the workers consume it
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"request": request, "cpus_per_worker": cpus, "sharded": shards is not None, "body": body},
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


def train_worker(config: dict) -> None:
    """One Ray Train worker: the stage body (``config["body"]``, :func:`..stages.fit_stage`) at this
    worker's place; rank 0 leaves the outcome for the driver."""
    import ray.train
    import ray.train.torch

    from .ddp import ReportedCheckpoints
    from .session import pin_threads

    request: StageRequest = config["request"]
    pin_threads(config["cpus_per_worker"])
    context = ray.train.get_context()
    rank = context.get_world_rank()
    shard = ray.train.get_dataset_shard("train") if config["sharded"] else None
    place = Place(rank, context.get_world_size(), ray.train.torch.get_device(), shard,
                  ReportedCheckpoints(rank, request.checkpoint_dir))
    outcome = config["body"](request, place)
    if outcome is not None:
        write_outcome(outcome, request)
