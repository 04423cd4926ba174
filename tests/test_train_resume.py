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
