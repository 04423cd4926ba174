"""The frozen teacher: loaded from a Trainer checkpoint or an MLflow run, it answers
exactly as the trained field did and never changes."""

from dataclasses import asdict

import pytest
import torch
import yaml

from fieldkd.platform.distill.teacher import Teacher, inherit_colour_head, load_teacher, teacher_from_run
from fieldkd.platform.fields import build_field
from fieldkd.platform.render import RenderConfig, Renderer
from fieldkd.platform.scenes import load_scene
from fieldkd.platform.tracking import Run
from fieldkd.platform.train.checkpoint import load_checkpoint, save_checkpoint
from fieldkd.platform.train.loop import Trainer, TrainerConfig
from fieldkd.platform.train.photometric import PhotometricTask

FIELD = {"name": "hash", "backend": "torch", "n_levels": 4, "log2_hashmap_size": 11, "max_resolution": 64}
RENDER = RenderConfig(samples_per_ray=16, occupancy_resolution=12, occupancy_warmup_steps=2, occupancy_update_every=2)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tiny_blender, tmp_path_factory):
    """A field trained a few steps, with its Trainer checkpoint."""
    scene = load_scene("blender", tiny_blender)
    torch.manual_seed(0)
    field = build_field("hash", scene.aabb, **{k: v for k, v in FIELD.items() if k != "name"})
    renderer = Renderer(scene.aabb, scene.near, scene.far, scene.background, RENDER)
    folder = tmp_path_factory.mktemp("teacher")
    task = PhotometricTask(field, renderer, scene.split("train"), 64, torch.device("cpu"))
    Trainer(TrainerConfig(steps=8, warmup_steps=1, progress=False, checkpoint_every=0), checkpoint_dir=folder).fit(task)
    # Eight steps cull nothing yet; mark half the box empty so that the grid has something to carry over.
    renderer.grid.occupied[: RENDER.occupancy_resolution // 2] = False
    state = load_checkpoint(folder)
    state["task"] = task.state_dict()
    save_checkpoint(state, folder)
    field.eval()
    return scene, field, renderer, folder / "last.pt"


def probe(scene, n=500):
    g = torch.Generator()
    g.manual_seed(1)
    lo, hi = scene.aabb
    points = lo + torch.rand(n, 3, generator=g) * (hi - lo)
    dirs = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    return points, dirs


def assert_same_answers(teacher: Teacher, field, renderer, scene):
    points, dirs = probe(scene)
    with torch.no_grad():
        want = field(points, dirs)
    got = teacher.query(points, dirs)
    for name in ("raw_density", "density", "rgb", "feature"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name
    assert torch.equal(teacher.renderer.grid.occupied, renderer.grid.occupied)
    rays = scene.split("val").cameras.image_rays(0)
    with torch.no_grad():
        want_render = renderer.render_rays(field, rays)
    got_render = teacher.render(rays, chunk=100)
    assert torch.allclose(got_render["rgb"], want_render["rgb"], atol=1e-6)
    assert torch.allclose(got_render["depth"], want_render["depth"], atol=1e-5)


def test_checkpoint_teacher_answers_as_the_trained_field_and_is_frozen(trained):
    scene, field, renderer, checkpoint = trained
    assert renderer.grid.occupancy_fraction == 0.5
    teacher = load_teacher(checkpoint, FIELD, near=scene.near, far=scene.far, background=scene.background,
                           render_cfg=asdict(RENDER))
    assert teacher.has_feature and teacher.name == "hash" and teacher.source == str(checkpoint)
    assert_same_answers(teacher, field, renderer, scene)

    assert not any(p.requires_grad for p in teacher.field.parameters())
    points, dirs = probe(scene, 64)
    teacher.field.train()  # even if someone flips it, a teacher answers in eval mode
    out = teacher.query(points, dirs)
    assert not teacher.field.training and not out.density.requires_grad
    # A student's loss against the teacher's answers leaves the teacher untouched.
    student = build_field("hash", scene.aabb, backend="torch", n_levels=2, log2_hashmap_size=10)
    before = [p.clone() for p in teacher.field.parameters()]
    optimizer = torch.optim.Adam(student.parameters(), lr=0.1)
    ((student(points, dirs).rgb - out.rgb) ** 2).mean().backward()
    optimizer.step()
    assert all(p.grad is None for p in teacher.field.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.field.parameters(), strict=True))


def test_a_student_that_inherits_the_colour_head_reproduces_the_teacher_from_its_feature(trained):
    scene, field, _, _ = trained
    teacher = Teacher(field)
    points, dirs = probe(scene, 200)
    want = teacher.query(points, dirs)
    torch.manual_seed(1)
    student = build_field("mlp", scene.aabb, n_frequencies=4, depth=2, width=32, skips=[])

    def taught():  # the student's colour head on the teacher's feature
        return student.colour(want.feature[:, 1:], dirs)

    assert not torch.allclose(taught(), want.rgb, atol=1e-3)  # a fresh head colours the feature otherwise
    assert inherit_colour_head(student, teacher)
    assert torch.allclose(taught(), want.rgb, atol=1e-6)
    assert all(p.requires_grad for p in student.colour.parameters())  # it goes on learning; the teacher's does not
    assert not any(p.requires_grad for p in teacher.field.colour.parameters())

    # Nothing to inherit: a grid has no colour head, and a head of another shape is left alone.
    grid = build_field("grid", scene.aabb, resolution=8)
    assert not inherit_colour_head(grid, teacher)
    wider = build_field("mlp", scene.aabb, n_frequencies=4, depth=2, width=32, skips=[], color_hidden=32)
    before = [p.clone() for p in wider.colour.parameters()]
    assert not inherit_colour_head(wider, teacher)
    assert all(torch.equal(a, b) for a, b in zip(before, wider.colour.parameters(), strict=True))


def test_checkpoint_teacher_rejects_another_scene_box(trained):
    scene, _, _, checkpoint = trained
    with pytest.raises(ValueError, match="aabb"):
        load_teacher(checkpoint, FIELD, aabb=scene.aabb * 2)
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_teacher(checkpoint, {**FIELD, "n_levels": 3})  # another architecture cannot take the weights


def test_teacher_from_an_mlflow_run_and_from_a_pipeline_stage(trained, mlflow_uri):
    scene, field, renderer, checkpoint = trained
    cfg = {"field": FIELD, "render": asdict(RENDER),
           "scene": {"background": scene.background.tolist(), "near": scene.near, "far": scene.far}}
    single = Run.start("distill-tests", "baseline")
    single.log_text(yaml.safe_dump(cfg), "config.yaml")
    single.log_artifact(checkpoint, "checkpoints")
    teacher = teacher_from_run(single.run_id)
    assert teacher.source == f"run:{single.run_id}"
    assert_same_answers(teacher, field, renderer, scene)

    # A pipeline: the config is on the parent run, the checkpoint on the teacher's child run.
    parent = Run.start("distill-tests", "pvd")
    parent.log_text(yaml.safe_dump(cfg), "config.yaml")
    child = parent.child("teacher")
    child.log_artifact(checkpoint, "checkpoints")
    assert_same_answers(teacher_from_run(child.run_id), field, renderer, scene)

    orphan = Run.start("distill-tests", "no-config")
    orphan.log_artifact(checkpoint, "checkpoints")
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        teacher_from_run(orphan.run_id)


@pytest.mark.parametrize("inherit", [True, False])
def test_a_distillation_stage_inherits_the_colour_head_when_asked(trained, tiny_blender, tmp_path, inherit):
    from fieldkd.platform.cli import compose_config
    from fieldkd.platform.distill.stage import TeacherRef
    from fieldkd.platform.stages import StageRequest, build_parts

    _, field, _, checkpoint = trained
    cfg = compose_config(["scene=blender", f"scene.path={tiny_blender}", "field=mlp", f"output_dir={tmp_path}",
                          f"distill.inherit_colour_head={str(inherit).lower()}"])
    request = StageRequest("student", "unused", "unused", str(tmp_path), cfg, task="distill",
                           teacher=TeacherRef(str(checkpoint), FIELD))
    parts = build_parts(request, torch.device("cpu"))
    same = [torch.equal(a, b) for a, b in zip(parts.field.colour.parameters(), field.colour.parameters(), strict=True)]
    assert all(same) if inherit else not any(same)
