"""The per-process training loop, shared by every stage of every method.

What is trained is a *task*: an object that owns its models and data and
knows how to compute one step's loss. The loop owns everything around it:
optimiser, schedule, mixed precision, the step and time budgets, periodic
evaluation, atomic checkpoints, resume, progress and metric logging. The same
loop runs in-process or inside a Ray worker.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch

from ..errors import StageError
from .checkpoint import Checkpoints, DirectoryCheckpoints
from .progress import Progress
from .schedule import lr_factor
from .sparse_adam import SparseAdam

MetricsLogger = Callable[[dict, int], None]
Clock = Callable[[float], float]  # local elapsed seconds -> the elapsed time every process agrees on


class Task(Protocol):
    def param_groups(self, lr: float) -> list[dict]: ...

    def training_step(self, step: int) -> tuple[torch.Tensor, dict[str, float], int]:
        """Loss, scalar metrics and the number of field samples it evaluated."""

    def after_step(self, step: int) -> None: ...

    def evaluate(self, step: int) -> dict[str, float]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...

    # Optional: ``on_progress(fraction)`` each step; ``sync_gradients()`` after the backward pass
    # (data-parallel workers of a model that DDP does not wrap: :func:`..compute.ddp.average_gradients`).


@dataclass
class TrainerConfig:
    steps: int = 3000
    max_seconds: float | None = None
    lr: float = 1e-2
    optimizer: str = "adamw"
    fused: bool = True  # adam/adamw: torch's fused kernel where every parameter allows it
    weight_decay: float = 0.0
    betas: tuple = (0.9, 0.99)
    eps: float = 1e-15
    schedule: str = "cosine"
    warmup_steps: int = 100
    min_lr_ratio: float = 0.03
    grad_clip: float | None = None
    amp: bool = True
    log_every: int = 25
    eval_every: int = 0  # 0: evaluate only at the end
    eval_every_seconds: float = 0.0  # with eval_every: also when this much time passed since the last one
    checkpoint_every: int = 500
    progress: bool = True
    seed: int = 0
    max_nonfinite_steps: int = 20  # the stage fails after this many non-finite losses in a row

    @classmethod
    def from_dict(cls, values: dict) -> "TrainerConfig":
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        if "betas" in known:
            known["betas"] = tuple(known["betas"])
        return cls(**known)


@dataclass
class TrainResult:
    steps: int
    seconds: float
    stopped_by: str  # "steps", "time" or "stop" (the driver asked the stage to stop)
    last_eval: dict
    nonfinite_steps: int = 0  # steps whose loss was not finite (no update was made)


class NonFiniteLoss(StageError):
    """The loss stayed NaN or infinite for ``max_nonfinite_steps`` steps in a row."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


OPTIMIZERS = ("adam", "adamw", "sparse_adam")


def make_optimizer(groups: list[dict], cfg: TrainerConfig) -> torch.optim.Optimizer:
    # sparse_adam: AdamW that updates only the table rows a step touched (see sparse_adam.py).
    kinds = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sparse_adam": SparseAdam}
    if cfg.optimizer not in kinds:
        raise ValueError(f"trainer.optimizer must be one of {sorted(kinds)}, got {cfg.optimizer!r}")
    options = {"lr": cfg.lr, "betas": cfg.betas, "eps": cfg.eps, "weight_decay": cfg.weight_decay}
    if cfg.fused and cfg.optimizer in ("adam", "adamw") and _fusable(groups):
        # One kernel over each tensor instead of a chain of foreach ops: on CPU it moves a
        # default hash table 4x faster (the same update, to rounding).
        options["fused"] = True
    return kinds[cfg.optimizer](groups, **options)


def _fusable(groups: list[dict]) -> bool:
    params = [p for g in groups for p in g["params"]]
    return bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params) \
        and len({p.device for p in params}) == 1


class Trainer:
    def __init__(self, cfg: TrainerConfig, log: MetricsLogger | None = None,
                 checkpoint_dir: str | Path | None = None, device: str | torch.device = "cpu",
                 description: str = "train", checkpoints: Checkpoints | None = None,
                 clock: Clock | None = None, show_progress: bool = True,
                 should_stop: Callable[[], bool] | None = None, started_at: float | None = None,
                 any_rank: Callable[[list[bool]], list[bool]] | None = None):
        """``checkpoints`` replaces the default directory store (Ray Train reports
        them instead); ``clock`` lets data-parallel workers agree on the time
        budget, so that they stop at the same step with the same learning rate.
        ``should_stop``: checked every step; when True the loop saves a checkpoint and
        returns (stopped_by "stop"). ``started_at``: wall time of the stage's first
        start, so that a restart without a checkpoint keeps its time budget.
        ``any_rank``: data-parallel workers agree on per-step flags (True if any is)."""
        self.cfg = cfg
        self.log = log or (lambda metrics, step: None)
        self.checkpoints = checkpoints or (DirectoryCheckpoints(checkpoint_dir) if checkpoint_dir else None)
        self.device = torch.device(device)
        self.description = description
        self.clock = clock or (lambda seconds: seconds)
        self.show_progress = show_progress
        self.should_stop = should_stop or (lambda: False)
        self.started_at = started_at
        self.any_rank = any_rank or (lambda flags: flags)

    def fit(self, task: Task, resume: bool = True) -> TrainResult:
        cfg = self.cfg
        optimizer = make_optimizer(task.param_groups(cfg.lr), cfg)
        base_lrs = [g["lr"] for g in optimizer.param_groups]
        step, elapsed_before = 0, 0.0
        state = self.checkpoints.load(self.device) if resume and self.checkpoints else None
        if state is not None:
            task.load_state_dict(state["task"])
            optimizer.load_state_dict(state["optimizer"])
            step, elapsed_before = state["step"], state["elapsed"]
            _restore_rng(state["rng"])
            self.log({"train/resumed_from_step": step}, step)
        else:
            seed_everything(cfg.seed)
            if self.started_at is not None:  # a restart before the first checkpoint: the clock runs on
                elapsed_before = max(0.0, time.time() - self.started_at)

        use_amp = cfg.amp and self.device.type == "cuda"
        amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

        # The stage's clock counts training only: periodic validation pauses it, so that a time
        # budget buys the same steps whether or not curves are drawn along the way.
        started, paused = time.perf_counter(), 0.0
        local_elapsed = lambda: elapsed_before + time.perf_counter() - started - paused  # noqa: E731 (no collective)
        elapsed = lambda: self.clock(local_elapsed())  # noqa: E731
        window_samples, window_start = 0, time.perf_counter()
        last_eval: dict = {}
        last_eval_at, eval_cost = elapsed(), 0.0
        stopped_by = "steps"
        reporter = Progress(self.description, cfg.steps, cfg.max_seconds, enabled=cfg.progress and self.show_progress)
        on_progress = getattr(task, "on_progress", None)  # tasks whose schedule follows the budget
        sync_gradients = getattr(task, "sync_gradients", None)
        nonfinite_run = nonfinite_total = 0
        while step < cfg.steps:
            now_elapsed = elapsed() if cfg.max_seconds is not None else 0.0
            if cfg.max_seconds is not None and now_elapsed >= cfg.max_seconds:
                stopped_by = "time"
                break
            if self.any_rank([self.should_stop()])[0]:  # before drawing the step's rays: an exact resume
                stopped_by = "stop"
                break
            progress = step / cfg.steps
            if cfg.max_seconds:
                progress = max(progress, now_elapsed / cfg.max_seconds)
            factor = lr_factor(step, progress, cfg.warmup_steps, cfg.schedule, cfg.min_lr_ratio)
            if on_progress is not None:
                on_progress(progress)
            for group, base in zip(optimizer.param_groups, base_lrs):
                group["lr"] = base * factor

            with torch.autocast(self.device.type, dtype=amp_dtype, enabled=use_amp):
                loss, metrics, n_samples = task.training_step(step)
            # One check per step (a device sync): a non-finite loss makes no update, on every
            # data-parallel worker alike.
            nonfinite = self.any_rank([not bool(torch.isfinite(loss.detach()).all())])[0]
            optimizer.zero_grad(set_to_none=True)
            if nonfinite:
                nonfinite_run, nonfinite_total = nonfinite_run + 1, nonfinite_total + 1
                if nonfinite_run >= cfg.max_nonfinite_steps:
                    self.log({"train/nonfinite_steps": nonfinite_total}, step)
                    raise NonFiniteLoss(f"{self.description}: the loss was not finite for {nonfinite_run} steps "
                                        f"in a row (steps {step - nonfinite_run + 1}-{step}); lower trainer.lr, "
                                        f"or raise trainer.max_nonfinite_steps")
            else:
                nonfinite_run = 0
                scaler.scale(loss).backward()
                if sync_gradients is not None:  # data-parallel workers that DDP does not wrap
                    sync_gradients()
                if cfg.grad_clip:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]],
                                                   cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
            task.after_step(step)
            step += 1
            window_samples += n_samples
            reporter.update(step, local_elapsed())

            if step % cfg.log_every == 0 or step == cfg.steps:
                now = time.perf_counter()
                metrics = {"train/loss": float(loss.detach()), **metrics,
                           "train/samples_per_second": window_samples / max(now - window_start, 1e-9),
                           "train/lr": base_lrs[0] * factor, "train/seconds": elapsed()}
                if nonfinite_total:
                    metrics["train/nonfinite_steps"] = nonfinite_total
                self.log(metrics, step)
                reporter.update(step, local_elapsed(), metrics)
                window_samples, window_start = 0, time.perf_counter()
            if step < cfg.steps and _due(step, lambda: elapsed() - last_eval_at, eval_cost, cfg):
                eval_started = time.perf_counter()
                with reporter.during("validating"):
                    last_eval = task.evaluate(step)
                eval_cost = time.perf_counter() - eval_started
                paused += eval_cost
                window_start += eval_cost  # samples/s of training alone
                last_eval_at = elapsed()
                # val/seconds: the periodic validation so far (since this process took the stage up),
                # which train/seconds leaves out
                self.log({**last_eval, "train/seconds": last_eval_at, "val/seconds": paused}, step)
            if self.checkpoints and cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                self._save(task, optimizer, step, elapsed())
        seconds = elapsed()
        reporter.update(step, local_elapsed())
        reporter.close(stopped_by)
        if self.checkpoints:
            self._save(task, optimizer, step, seconds)
        return TrainResult(steps=step, seconds=seconds, stopped_by=stopped_by, last_eval=last_eval,
                           nonfinite_steps=nonfinite_total)

    def _save(self, task: Task, optimizer, step: int, elapsed: float) -> None:
        state = {"task": task.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "elapsed": elapsed,
                 "rng": _rng_state()}
        record = getattr(task, "model_record", None)
        if record:  # what the model is (kind, config): it rebuilds from the file alone (platform/models.py)
            state["model"] = record
        self.checkpoints.save(state, step)


def _due(step: int, since_eval_s: Callable[[], float], eval_cost_s: float, cfg: TrainerConfig) -> bool:
    """Evaluate every ``eval_every`` steps (0: never during training) and, so that a run cut short
    by its time budget has a curve against time too, whenever ``eval_every_seconds`` of training
    have passed, but at most one evaluation per 4 of its durations (a slow evaluation spaces out
    the next ones, so that a run's wall time grows by a quarter at most)."""
    if not cfg.eval_every:
        return False
    if step % cfg.eval_every == 0:
        return True
    return bool(cfg.eval_every_seconds) and since_eval_s() >= max(cfg.eval_every_seconds, 4 * eval_cost_s)


def _rng_state() -> dict:
    # Plain values and tensors only, so that the checkpoint loads with weights_only=True.
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)]
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
