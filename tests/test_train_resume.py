"""Training loop: the loss falls, and a resumed run continues exactly where it stopped."""

import pytest
import torch

from fieldkd.platform.fields import build_field
from fieldkd.platform.render import RenderConfig, Renderer
from fieldkd.platform.scenes import load_scene
from fieldkd.platform.train.checkpoint import load_checkpoint
from fieldkd.platform.train.loop import Trainer, TrainerConfig
from fieldkd.platform.train.photometric import PhotometricTask


def make_task(scene):
    torch.manual_seed(0)
    field = build_field("hash", scene.aabb, log2_hashmap_size=12, n_levels=4, max_resolution=64)
    renderer = Renderer(scene.aabb, scene.near, scene.far, scene.background,
                        RenderConfig(samples_per_ray=32, occupancy_resolution=16, occupancy_warmup_steps=4,
                                     occupancy_update_every=2))
    return PhotometricTask(field, renderer, scene.split("train"), 128, torch.device("cpu"))


def config(steps, **kw):
    return TrainerConfig(steps=steps, warmup_steps=2, checkpoint_every=5, progress=False, log_every=1, **kw)


def test_resume_continues_at_the_same_step_and_matches_an_uninterrupted_run(tiny_blender, tmp_path):
    scene = load_scene("blender", tiny_blender)

    straight = make_task(scene)
    Trainer(config(12), checkpoint_dir=tmp_path / "straight").fit(straight)

    class Crash(Exception):
        pass

    def crash_at_step_7(metrics, step):
        if step == 7:
            raise Crash

    first = make_task(scene)
    with pytest.raises(Crash):
        Trainer(config(12), log=crash_at_step_7, checkpoint_dir=tmp_path / "resumed").fit(first)
    assert load_checkpoint(tmp_path / "resumed")["step"] == 5  # the last periodic checkpoint

    logged = []
    second = make_task(scene)  # a fresh process rebuilds everything from scratch
    result = Trainer(config(12), log=lambda m, s: logged.append(s),
                     checkpoint_dir=tmp_path / "resumed").fit(second)
    assert result.steps == 12
    assert logged[:2] == [5, 6]  # "resumed from step 5", then training continues with the next step
    for a, b in zip(straight.field.parameters(), second.field.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_time_budget_stops_training(tiny_blender):
    scene = load_scene("blender", tiny_blender)
    result = Trainer(TrainerConfig(steps=10**6, max_seconds=1.0, progress=False)).fit(make_task(scene))
    assert result.stopped_by == "time"
    assert 0 < result.steps < 10**6
    assert result.seconds < 5.0


def test_training_lowers_the_loss(tiny_blender):
    scene = load_scene("blender", tiny_blender)
    losses = []
    Trainer(config(120), log=lambda m, s: losses.append(m["train/loss"])).fit(make_task(scene))
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10


class NaNAt:
    """A real task whose loss is NaN at the given steps (a bad batch, a diverged model)."""

    def __init__(self, task, steps):
        self.task, self.steps = task, set(steps)

    def __getattr__(self, name):
        return getattr(self.task, name)

    def training_step(self, step):
        loss, metrics, n = self.task.training_step(step)
        return (loss * float("nan") if step in self.steps else loss), metrics, n


def test_a_few_non_finite_steps_are_skipped_and_counted(tiny_blender):
    scene = load_scene("blender", tiny_blender)
    logged = {}
    task = NaNAt(make_task(scene), range(3, 6))
    result = Trainer(config(10, max_nonfinite_steps=4), log=lambda m, s: logged.update({s: m})).fit(task)
    assert result.steps == 10 and result.nonfinite_steps == 3
    assert logged[10]["train/nonfinite_steps"] == 3
    assert all(torch.isfinite(p).all() for p in task.field.parameters())  # no NaN reached the weights


def test_a_loss_that_stays_non_finite_fails_the_stage(tiny_blender):
    from fieldkd.platform.train.loop import NonFiniteLoss

    scene = load_scene("blender", tiny_blender)
    with pytest.raises(NonFiniteLoss, match=r"not finite for 4 steps in a row \(steps 5-8\)"):
        Trainer(config(50, max_nonfinite_steps=4)).fit(NaNAt(make_task(scene), range(5, 50)))


def test_a_stop_request_saves_a_checkpoint_and_returns(tiny_blender, tmp_path):
    scene = load_scene("blender", tiny_blender)
    asked = iter([False] * 7 + [True] * 100)  # the driver raises its flag after the 7th step
    result = Trainer(config(12), checkpoint_dir=tmp_path / "stopped",
                     should_stop=lambda: next(asked)).fit(make_task(scene))
    assert result.stopped_by == "stop" and result.steps == 7
    assert load_checkpoint(tmp_path / "stopped")["step"] == 7

    resumed = make_task(scene)  # and the resume goes on exactly as if nothing had happened
    assert Trainer(config(12), checkpoint_dir=tmp_path / "stopped").fit(resumed).steps == 12
    straight = make_task(scene)
    Trainer(config(12)).fit(straight)
    for a, b in zip(straight.field.parameters(), resumed.field.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_a_restart_without_checkpoint_keeps_the_time_budget(tiny_blender):
    import time

    scene = load_scene("blender", tiny_blender)
    started = time.time() - 100.0  # the stage first started 100 s ago, then its process died
    result = Trainer(TrainerConfig(steps=10**6, max_seconds=101.0, progress=False),
                     started_at=started).fit(make_task(scene))
    assert result.stopped_by == "time" and result.seconds >= 101.0
    assert time.time() - started < 101.0 + 20  # about 1 s of training left, not 101


def test_the_budget_counts_from_the_stages_first_start_by_its_request(mlflow_uri):
    import dataclasses
    import time

    from fieldkd.platform.stages import StageRequest, budget_start
    from fieldkd.platform.tracking import Run

    run = Run.start("budget", "stage")
    request = StageRequest(stage="s", run_id=run.run_id, tracking_uri=mlflow_uri, output_dir="out", cfg={})
    before = time.time()
    assert budget_start(run, request) is None  # the first start: the loop's own clock
    time.sleep(0.05)
    first = budget_start(Run(run.run_id), request)  # a restart: the first start, from the tag
    assert before <= first < before + 0.05
    assert budget_start(run, dataclasses.replace(request)) == pytest.approx(first, abs=1e-3)
    new_driver = StageRequest(**{**dataclasses.asdict(request), "launch": "new-driver"})
    assert budget_start(run, new_driver) is None  # a new driver (resume=): its own start
    assert budget_start(run, new_driver) > first + 0.04
