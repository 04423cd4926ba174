"""Periodic evaluation by wall time: a run cut short by its time budget still has val/psnr
against step and time, at least every ``trainer.eval_every_seconds``."""

import time

import pytest
import torch

from fieldkd.platform.train.loop import Trainer, TrainerConfig


class SlowLine:
    """Fit y = 2x with one weight; each step takes ``step_s`` seconds (as a real field's step would)."""

    def __init__(self, step_s: float, eval_s: float = 0.0):
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.step_s, self.eval_s = step_s, eval_s
        self.evaluated_at: list[int] = []

    def param_groups(self, lr):
        return [{"params": [self.w], "lr": lr}]

    def training_step(self, step):
        time.sleep(self.step_s)
        x = torch.linspace(-1, 1, 16)
        return ((self.w * x - 2 * x) ** 2).mean(), {}, 16

    def after_step(self, step):
        pass

    def evaluate(self, step):
        self.evaluated_at.append(step)
        time.sleep(self.eval_s)
        return {"val/psnr": -10 * torch.log10(((self.w - 2) ** 2).mean() + 1e-12).item()}

    def state_dict(self):
        return {"w": self.w.detach().clone()}

    def load_state_dict(self, state):
        self.w.data.copy_(state["w"])


def run(eval_every: int, eval_every_seconds: float, max_seconds: float = 1.2, eval_s: float = 0.0):
    task, logged = SlowLine(step_s=0.02, eval_s=eval_s), []
    cfg = TrainerConfig(steps=10**6, max_seconds=max_seconds, eval_every=eval_every,
                        eval_every_seconds=eval_every_seconds, progress=False, checkpoint_every=0, log_every=10**6)
    result = Trainer(cfg, log=lambda metrics, step: logged.append((step, dict(metrics)))).fit(task)
    return result, task, [(s, m) for s, m in logged if "val/psnr" in m]


def test_a_time_budget_run_is_evaluated_every_few_seconds_not_only_every_n_steps():
    # 1.2 s at about 0.02 s a step: some 60 steps, far fewer than eval_every=10_000
    result, task, val = run(eval_every=10_000, eval_every_seconds=0.3)
    assert result.stopped_by == "time"
    assert 2 <= len(val) <= 5  # about every 0.3 s of 1.2 s
    seconds = [m["train/seconds"] for _, m in val]
    assert all(b - a >= 0.3 for a, b in zip(seconds, seconds[1:]))  # each point with its time
    assert [s for s, _ in val] == task.evaluated_at and sorted(task.evaluated_at) == task.evaluated_at


def test_without_the_time_interval_only_steps_count():
    _, task, val = run(eval_every=10_000, eval_every_seconds=0.0)
    assert val == [] and task.evaluated_at == []


def test_eval_every_zero_still_means_only_at_the_end():
    _, task, val = run(eval_every=0, eval_every_seconds=0.3)
    assert val == [] and task.evaluated_at == []


def test_a_slow_evaluation_is_spaced_out_to_a_quarter_of_the_training_time():
    # each evaluation takes 0.25 s; asked for every 0.05 s, they come every 4 x 0.25 s of training instead
    result, task, val = run(eval_every=10_000, eval_every_seconds=0.05, max_seconds=2.6, eval_s=0.25)
    assert 1 <= len(val) <= 3
    assert len(val) * 0.25 <= 0.3 * result.seconds


def test_validation_pauses_the_stage_clock():
    # A 2.6 s budget is 2.6 s of training: slow evaluations along the way lengthen the wall time
    # instead of taking steps away (counted, they would take 2 x 0.25 s of the 2.6 s).
    started = time.perf_counter()
    result, _, val = run(eval_every=10_000, eval_every_seconds=0.05, max_seconds=2.6, eval_s=0.25)
    wall = time.perf_counter() - started
    assert len(val) >= 2 and result.stopped_by == "time"
    assert result.seconds == pytest.approx(2.6, abs=0.15)
    assert wall >= result.seconds + 0.25 * len(val) - 0.05


def test_validation_time_is_logged_beside_the_training_time():
    # val/seconds: the periodic validation so far, which train/seconds leaves out (each takes 0.25 s)
    _, _, val = run(eval_every=10_000, eval_every_seconds=0.05, max_seconds=2.6, eval_s=0.25)
    spent = [m["val/seconds"] for _, m in val]
    assert len(spent) >= 2
    assert spent == pytest.approx([0.25 * (k + 1) for k in range(len(spent))], abs=0.05)
