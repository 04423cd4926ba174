"""The distillation task: a student trained from the store is the student trained on the
fly, a resumed distillation continues exactly, and a short distillation of a trained
hash teacher brings the student's renders close to the teacher's."""

import pytest
import torch

from fieldkd.platform.distill import (DistillationTask, DistillConfig, FrustumFilter, OnTheFlySource, SampleLayout,
                                      ScheduleConfig, SphereInquirer, Stage, StoreSource, Teacher,
                                      TrainingRayInquirer,
                                      occupancy_from_teacher, pvd_schedule, write_store)
from fieldkd.platform.evaluate.image import psnr
from fieldkd.platform.fields import build_field
from fieldkd.platform.fields.presets import TINY_CONFIGS
from fieldkd.platform.render import RenderConfig, Renderer
from fieldkd.platform.scenes import load_scene
from fieldkd.platform.train.loop import Trainer, TrainerConfig
from fieldkd.platform.train.photometric import PhotometricTask, PixelSampler

RENDER = {"samples_per_ray": 24, "occupancy_resolution": 16, "occupancy_warmup_steps": 8, "occupancy_update_every": 4}
STUDENT_MLP = TINY_CONFIGS["mlp"]
CPU = torch.device("cpu")

# Every term, so that both modes go through every loss.
ALL_TERMS = ScheduleConfig(
    stages=(Stage("feature", 0.2, ("feature",)),
            Stage("volume", 0.5, ("feature", "density", "colour", "alpha")),
            Stage("render", 1.0, ("density", "colour", "alpha", "rgb", "depth", "interlevel", "gt_rgb"))),
    weights={"feature": 0.01, "density": 0.01, "colour": 0.01, "alpha": 0.1, "rgb": 1.0, "depth": 0.01,
             "interlevel": 0.1, "gt_rgb": 0.5},
    decay={"feature": 0.99})


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def teacher_scene(tiny_blender):
    """A hash teacher trained briefly on the tiny scene."""
    scene = load_scene("blender", tiny_blender)
    torch.manual_seed(0)
    field = build_field("hash", scene.aabb, backend="torch", n_levels=4, log2_hashmap_size=12, max_resolution=64)
    renderer = Renderer(scene.aabb, scene.near, scene.far, scene.background, RenderConfig(**RENDER))
    task = PhotometricTask(field, renderer, scene.split("train"), 128, CPU)
    Trainer(TrainerConfig(steps=100, warmup_steps=5, progress=False, checkpoint_every=0)).fit(task)
    return Teacher(field, renderer), scene


def student_setup(scene, teacher, name="mlp", **cfg):
    torch.manual_seed(0)
    student = build_field(name, scene.aabb, **(cfg or STUDENT_MLP))
    renderer = Renderer(scene.aabb, scene.near, scene.far, scene.background, RenderConfig(**RENDER))
    occupancy_from_teacher(renderer, teacher)
    return student, renderer


def on_the_fly(scene, teacher, renderer, training_rays=False):
    if training_rays:  # real pixels, with their colours
        inquirer = TrainingRayInquirer(scene.split("train"), seed=11)
    else:
        inquirer = SphereInquirer(scene.split("train").cameras, scene.aabb, rays_per_pose=8, seed=11)
    return OnTheFlySource(inquirer, teacher, SampleLayout.from_renderer(renderer), seed=12)


def real_pixels(scene):
    g = torch.Generator()
    g.manual_seed(13)
    return PixelSampler(scene.split("train"), CPU, g)


def run(task, steps, log=None, checkpoint_dir=None, **trainer):
    losses = []

    def record(metrics, step):
        losses.append((step, metrics.get("train/loss"), metrics))
        if log:
            log(metrics, step)

    cfg = TrainerConfig(steps=steps, warmup_steps=2, progress=False, log_every=1, lr=1e-2, **trainer)
    Trainer(cfg, log=record, checkpoint_dir=checkpoint_dir).fit(task)
    return losses


def test_student_from_the_store_matches_the_student_trained_on_the_fly(teacher_scene, tmp_path):
    teacher, scene = teacher_scene
    steps, batch = 12, 32
    config = DistillConfig(batch_rays=batch, total_steps=steps, loss="mse", real_batch_rays=16, real_weight=0.5)

    def make(source_of):
        student, renderer = student_setup(scene, teacher)
        return DistillationTask(student, renderer, teacher, source_of(renderer), ALL_TERMS, config, CPU,
                                filters=[FrustumFilter(scene.split("train").cameras)], real=real_pixels(scene))

    live = make(lambda r: on_the_fly(scene, teacher, r, training_rays=True))
    live_losses = run(live, steps)

    store_dir = tmp_path / "store"
    stored = make(lambda r: StoreSource(write_store(store_dir, on_the_fly(scene, teacher, r, True), steps, batch),
                                        SampleLayout.from_renderer(r)))
    stored_losses = run(stored, steps)

    assert [s for s, _, _ in stored_losses] == list(range(1, steps + 1))
    stages = [m["distill/stage"] for _, _, m in live_losses]
    assert stages[0] == 1 and stages[-1] == 3  # every stage, hence every term, took part
    assert {"distill/interlevel", "distill/depth", "distill/gt_rgb", "train/psnr_real"} <= set(live_losses[-1][2])
    # Not merely close: the same batches give bit-for-bit the same steps.
    assert [loss for _, loss, _ in stored_losses] == [loss for _, loss, _ in live_losses]
    for (_, _, ma), (_, _, mb) in zip(live_losses, stored_losses, strict=True):
        ma, mb = dict(ma), dict(mb)
        for clock in ("train/samples_per_second", "train/seconds"):  # wall-clock, the only difference
            ma.pop(clock), mb.pop(clock)
        assert ma == mb
    for p, q in zip(live.student.parameters(), stored.student.parameters(), strict=True):
        assert torch.equal(p, q)


def test_resumed_distillation_continues_exactly(teacher_scene, tmp_path):
    teacher, scene = teacher_scene
    config = DistillConfig(batch_rays=32, total_steps=12)

    def make():
        student, renderer = student_setup(scene, teacher, "hash", backend="torch", n_levels=2, log2_hashmap_size=10)
        return DistillationTask(student, renderer, teacher, on_the_fly(scene, teacher, renderer), pvd_schedule(),
                                config, CPU)

    straight = make()
    run(straight, 12)

    class Crash(Exception):
        pass

    def crash(metrics, step):
        if step == 8:
            raise Crash

    with pytest.raises(Crash):
        run(make(), 12, log=crash, checkpoint_every=5, checkpoint_dir=tmp_path / "run")
    resumed = make()
    run(resumed, 12, checkpoint_every=5, checkpoint_dir=tmp_path / "run")
    for p, q in zip(straight.student.parameters(), resumed.student.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6)


def test_grid_student_skips_the_feature_stage(teacher_scene):
    teacher, scene = teacher_scene
    student, renderer = student_setup(scene, teacher, "grid", resolution=12)
    task = DistillationTask(student, renderer, teacher, on_the_fly(scene, teacher, renderer), pvd_schedule(),
                            DistillConfig(batch_rays=32, total_steps=30), CPU)
    assert task.skip_feature_stage
    logged = run(task, 3)
    assert logged[0][2]["distill/stage"] == 1 and "distill/feature" not in logged[0][2]
    assert logged[0][2]["distill/density"] > 0


def view_psnr(renderer, field, scene, target):
    return psnr(renderer.render_image(field, scene.split("val").cameras, 0)["rgb"].clamp(0, 1), target)


def test_short_distillation_brings_the_student_close_to_its_teacher(teacher_scene):
    teacher, scene = teacher_scene
    target = teacher.render_image(scene.split("val").cameras, 0)["rgb"].clamp(0, 1)
    student, renderer = student_setup(scene, teacher)
    steps = 200
    task = DistillationTask(student, renderer, teacher, on_the_fly(scene, teacher, renderer), pvd_schedule(),
                            DistillConfig(batch_rays=64, total_steps=steps), CPU)
    before = view_psnr(renderer, student, scene, target)
    logged = run(task, steps)
    after = view_psnr(renderer, student, scene, target)

    rgb = [m["distill/rgb"] for _, _, m in logged if "distill/rgb" in m]
    assert sum(rgb[-20:]) / 20 < 0.6 * sum(rgb[:20]) / 20  # the distillation loss falls
    feature = [m["distill/feature"] for _, _, m in logged[:12]]
    assert feature[-1] < feature[0]
    assert after > before + 7.0, (before, after)
    assert after > 20.0, after  # the student renders what the teacher renders


def test_a_batch_without_live_samples_still_steps(teacher_scene):
    teacher, scene = teacher_scene
    student, renderer = student_setup(scene, teacher, "hash", backend="torch", n_levels=2, log2_hashmap_size=10)
    renderer.grid.occupied.zero_()  # everything culled: no sample reaches either field
    task = DistillationTask(student, renderer, teacher, on_the_fly(scene, teacher, renderer), pvd_schedule(),
                            DistillConfig(batch_rays=16, total_steps=4, regularize=False), CPU)
    logged = run(task, 4)
    assert [m["train/loss"] for _, _, m in logged] == [0.0] * 4
    assert logged[-1][2]["distill/rgb"] == pytest.approx(0.0, abs=1e-6)  # both render the background
