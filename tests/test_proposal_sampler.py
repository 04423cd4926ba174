"""The proposal sampler (render.sampler=proposal): inverse-CDF resampling against closed forms,
a short training that learns (against an untrained control and against the same field with fresh
proposal networks), its checkpoint round trip, dense = packed, and DaC's interlevel term reaching
the student's proposal networks."""

import math

import numpy as np
import pytest
import torch

from fieldkd.platform.distill import (DistillationTask, DistillConfig, OnTheFlySource, SampleLayout, ScheduleConfig,
                                      Stage, Teacher, TrainingRayInquirer, teacher_from_state)
from fieldkd.platform.distill.losses import interval_edges
from fieldkd.platform.evaluate.image import mse_to_psnr
from fieldkd.platform.fields import build_field
from fieldkd.platform.render import RenderConfig, Renderer
from fieldkd.platform.render.proposal import (ProposalConfig, histogram_weights, resample_edges,
                                              uniform_edges)
from fieldkd.platform.scenes import load_scene
from fieldkd.platform.train.checkpoint import load_checkpoint
from fieldkd.platform.train.loop import Trainer, TrainerConfig
from fieldkd.platform.train.photometric import PhotometricTask

CPU = torch.device("cpu")
FIELD = dict(backend="torch", n_levels=4, log2_hashmap_size=12, max_resolution=64)
PROPOSAL = dict(sampler="proposal", proposal_samples=[32], proposal_final_samples=16, proposal_resolution=64,
                proposal_log2_hashmap_size=12)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- inverse-CDF resampling: closed forms ---------------------------------------------------

EDGES = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0]])


def test_all_mass_in_one_interval_puts_every_edge_there():
    weights = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    assert torch.allclose(resample_edges(EDGES, weights, 4), torch.linspace(2.0, 3.0, 5)[None])
    jittered = resample_edges(EDGES.expand(50, -1), weights.expand(50, -1), 8, jitter=True)
    assert bool(((jittered >= 2.0) & (jittered <= 3.0)).all())
    assert bool((jittered.diff(dim=-1) >= 0).all())


def test_uniform_density_gives_evenly_spread_edges():
    # Weights proportional to the lengths of uneven intervals: a constant density over [0, 6].
    edges = torch.tensor([[0.0, 1.0, 3.0, 6.0]])
    assert torch.allclose(resample_edges(edges, torch.tensor([[1.0, 2.0, 3.0]]), 12),
                          torch.linspace(0.0, 6.0, 13)[None], atol=1e-6)
    # A ray without mass is resampled evenly too.
    assert torch.allclose(resample_edges(EDGES, torch.zeros(1, 4), 8), torch.linspace(0.0, 4.0, 9)[None])


def test_every_new_interval_holds_an_equal_share_of_the_mass():
    g = torch.Generator().manual_seed(0)
    edges = torch.cumsum(torch.rand(3, 11, generator=g), dim=-1)
    weights = torch.rand(3, 10, generator=g) * (torch.rand(3, 10, generator=g) > 0.4)
    new = resample_edges(edges, weights, 7)
    for ray in range(3):
        cdf = np.concatenate([[0.0], np.cumsum(weights[ray].numpy()) / weights[ray].sum().item()])
        assert np.allclose(np.interp(new[ray].numpy(), edges[ray].numpy(), cdf), np.linspace(0, 1, 8), atol=1e-5)
    # [1, 0, 0, 3] over [0, 4]: a quarter of the mass in [0, 1], the rest in [3, 4].
    assert torch.allclose(resample_edges(EDGES, torch.tensor([[1.0, 0.0, 0.0, 3.0]]), 4),
                          torch.tensor([[0.0, 1.0, 10 / 3, 11 / 3, 4.0]]))


def test_padding_leaves_no_part_of_the_ray_out():
    new = resample_edges(EDGES, torch.tensor([[0.0, 0.0, 1.0, 0.0]]), 16, padding=0.05)
    assert new[0, 0] == 0.0 and new[0, -1] == 4.0
    # The padded histogram holds 0.1 / 1.2 of its mass before 2 and 0.05 / 1.2 after 3: the edges at
    # quantiles k / 16 lie in [2, 3] for k = 2 ... 15 (1/12 < k/16 < 1 - 1/24), the others outside.
    inside = ((new[0] >= 2.0) & (new[0] <= 3.0)).nonzero()[:, 0].tolist()
    assert inside == list(range(2, 16))


def test_jittered_even_edges_stay_in_their_strata():
    t_near, t_far = torch.zeros(100), torch.full((100,), 2.0)
    edges = uniform_edges(t_near, t_far, 10, jitter=True)
    even = torch.linspace(0.0, 2.0, 11)
    assert bool((edges[:, 0] == 0).all() and (edges[:, -1] == 2).all())
    assert bool(((edges - even).abs() <= 0.1 + 1e-6).all())
    assert (edges - even).abs().max() > 0.05  # it does move


def test_histogram_weights_of_a_constant_slab():
    edges = torch.linspace(0.0, 2.0, 5)[None]
    weights = histogram_weights(torch.full((1, 4), 0.7), edges)
    expected = [math.exp(-0.7 * 0.5 * i) * (1 - math.exp(-0.7 * 0.5)) for i in range(4)]
    assert torch.allclose(weights[0], torch.tensor(expected), atol=1e-6)
    assert weights.sum().item() == pytest.approx(1 - math.exp(-1.4), abs=1e-6)


def test_config_refuses_three_levels_and_unknown_samplers(tiny_blender):
    with pytest.raises(ValueError, match="one or two levels"):
        ProposalConfig(samples=(64, 32, 16))
    box = torch.tensor([[-1.0] * 3, [1.0] * 3])
    with pytest.raises(ValueError, match="render.sampler must be one of occupancy, proposal"):
        Renderer(box, 0.0, 10.0, torch.ones(3), RenderConfig(sampler="grid"))
    renderer = Renderer(box, 0.0, 10.0, torch.ones(3), RenderConfig(**PROPOSAL))
    assert renderer.grid is None and [g["name"] for g in renderer.param_groups(1e-2)] == ["proposal"]
    assert Renderer(box, 0.0, 10.0, torch.ones(3)).param_groups(1e-2) == []


# --- training with the proposal sampler -----------------------------------------------------

def make_task(scene, **render):
    torch.manual_seed(0)
    field = build_field("hash", scene.aabb, **FIELD)
    renderer = Renderer(scene.aabb, scene.near, scene.far, scene.background, RenderConfig(**{**PROPOSAL, **render}))
    return PhotometricTask(field, renderer, scene.split("train"), 256, CPU)


def config(steps, **kw):
    return TrainerConfig(**{"steps": steps, "warmup_steps": 5, "progress": False, "log_every": 1, "checkpoint_every": 0, **kw})


def test_psnr(renderer, field, split):
    scores = []
    for i in range(len(split.cameras)):
        image = renderer.render_image(field, split.cameras, i)
        scores.append(mse_to_psnr(float(((image["rgb"] - split.images[i]) ** 2).mean())))
    return sum(scores) / len(scores)


test_psnr.__test__ = False  # a helper, not a test


@pytest.fixture(scope="module")
def trained(tiny_blender):
    scene = load_scene("blender", tiny_blender)
    task = make_task(scene)
    logged = []
    Trainer(config(150), log=lambda m, s: logged.append(m)).fit(task)
    return scene, task, logged


def test_training_with_proposals_beats_an_untrained_control(trained):
    scene, task, logged = trained
    control = make_task(scene)
    test = scene.split("test")
    before, after = test_psnr(control.renderer, control.field, test), test_psnr(task.renderer, task.field, test)
    assert after > before + 5.0, (before, after)
    assert all("train/proposal_loss" in m for m in logged)
    # The field's weights went to the proposal's parameters only: they moved, and the field has no gradient from it.
    fresh = make_task(scene).renderer.proposal.state_dict()
    moved = task.renderer.proposal.state_dict()
    assert any(not torch.equal(fresh[k], moved[k]) for k in fresh if k.endswith("table"))


def surface_rays(scene, task, n=400):
    """Rays of a test view whose trained render is solid."""
    rays = scene.split("test").cameras.image_rays(0)
    with torch.no_grad():
        solid = task.renderer.render_rays(task.field, rays)["opacity"] > 0.9
    return rays[solid.nonzero()[:n, 0]]


def proposal_fit(renderer, field, rays):
    """Against the field's weights on 256 even samples of each ray: the interlevel loss of the
    proposal histograms, and the share of the proposal's mass within 0.15 of the field's depth."""
    from fieldkd.platform.render import ray_bounds

    with torch.no_grad():
        t_near, t_far = ray_bounds(rays.origins, rays.directions, renderer.aabb, renderer.near, renderer.far)
        edges = uniform_edges(t_near, t_far, 256)
        mids = 0.5 * (edges[:, 1:] + edges[:, :-1])
        points = rays.origins[:, None, :] + rays.directions[:, None, :] * mids[..., None]
        reference = histogram_weights(field.density(points), edges)
        t_surface = (reference * mids).sum(-1) / reference.sum(-1)
        found = renderer.proposal.sample(rays.origins, rays.directions, t_near, t_far, jitter=False)
        loss = renderer.proposal.loss(found.levels, edges, reference).item()
        level_edges, weights = found.levels[-1]
        near = (0.5 * (level_edges[:, 1:] + level_edges[:, :-1]) - t_surface[:, None]).abs() < 0.15
        share = ((weights * near).sum(-1) / weights.sum(-1).clamp(min=1e-9)).mean().item()
    return loss, share


def test_the_proposal_mass_concentrates_at_the_surface(trained):
    scene, task, _ = trained
    rays = surface_rays(scene, task)
    assert len(rays) > 50
    fresh = make_task(scene).renderer  # the same trained field, sampled by untrained proposal networks
    fresh_loss, fresh_share = proposal_fit(fresh, task.field, rays)
    loss, share = proposal_fit(task.renderer, task.field, rays)
    print(f"interlevel loss {fresh_loss:.4f} -> {loss:.4f}; mass near the surface {fresh_share:.3f} -> {share:.3f}")
    assert loss < 0.5 * fresh_loss, (loss, fresh_loss)
    assert share > 2 * fresh_share, (share, fresh_share)


def test_dense_and_packed_compositing_agree_with_proposals(trained):
    scene, task, _ = trained
    rays = scene.split("test").cameras.image_rays(0)
    packed = Renderer(scene.aabb, scene.near, scene.far, scene.background,
                      RenderConfig(**{**PROPOSAL, "packed": True}))
    packed.load_state_dict(task.renderer.state_dict())
    with torch.no_grad():
        dense_out = task.renderer.render_rays(task.field, rays)
        packed_out = packed.render_rays(task.field, rays)
    for key in ("rgb", "depth", "opacity", "weights"):
        assert torch.allclose(dense_out[key], packed_out[key], atol=1e-5), key
    torch.manual_seed(3)
    loss = packed.render_rays(task.field, rays[:64], train=True)["proposal_loss"]
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in packed.proposal.parameters())


def test_a_resumed_run_continues_exactly(tiny_blender, tmp_path):
    scene = load_scene("blender", tiny_blender)
    straight = make_task(scene)
    Trainer(config(12, checkpoint_every=5), checkpoint_dir=tmp_path / "straight").fit(straight)

    class Crash(Exception):
        pass

    def crash_at_step_7(metrics, step):
        if step == 7:
            raise Crash

    with pytest.raises(Crash):
        Trainer(config(12, checkpoint_every=5), log=crash_at_step_7, checkpoint_dir=tmp_path / "resumed").fit(
            make_task(scene))
    saved = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)  # tensors and plain values only
    assert saved["step"] == 5 and saved["task"]["renderer"]["proposal"]["config"]["proposal_final_samples"] == 16
    second = make_task(scene)
    Trainer(config(12, checkpoint_every=5), checkpoint_dir=tmp_path / "resumed").fit(second)
    for a, b in zip(straight.renderer.proposal.parameters(), second.renderer.proposal.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    for a, b in zip(straight.field.parameters(), second.field.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    assert load_checkpoint(tmp_path / "straight")["step"] == 12


def test_a_teacher_samples_as_it_was_trained(trained):
    scene, task, _ = trained
    # This run's render config says occupancy; the checkpoint's proposal networks and sizes win.
    teacher = teacher_from_state(task.state_dict(), {"name": "hash", **FIELD}, near=scene.near, far=scene.far,
                                 background=scene.background, render_cfg={"samples_per_ray": 64})
    assert teacher.renderer.proposal is not None and teacher.renderer.cfg.proposal_final_samples == 16
    test = scene.split("test")
    expected = task.renderer.render_image(task.field, test.cameras, 0)["rgb"]
    assert torch.allclose(teacher.render_image(test.cameras, 0)["rgb"], expected, atol=1e-5)


# --- DaC: the expert's weights supervise the student's proposal networks ---------------------

def dac_task(scene, teacher, terms, weights):
    torch.manual_seed(0)
    student = build_field("hash", scene.aabb, **FIELD)
    renderer = Renderer(scene.aabb, scene.near, scene.far, scene.background,
                        RenderConfig(**{**PROPOSAL, "samples_per_ray": 24}))
    source = OnTheFlySource(TrainingRayInquirer(scene.split("train"), seed=5), teacher,
                            SampleLayout.from_renderer(renderer), seed=6)
    schedule = ScheduleConfig(stages=(Stage("experts", 1.0, terms),), weights=weights)
    return DistillationTask(student, renderer, teacher, source, schedule, DistillConfig(batch_rays=128, loss="mse"),
                            CPU)


def proposal_grad(task):
    loss, metrics, _ = task.training_step(0)
    loss.backward()
    return sum(p.grad.abs().sum().item() for p in task.renderer.proposal.parameters() if p.grad is not None), metrics


def test_dac_interlevel_term_supervises_the_students_proposal_networks(trained):
    scene, trained_task, _ = trained
    teacher = Teacher(trained_task.field, Renderer(scene.aabb, scene.near, scene.far, scene.background,
                                                   RenderConfig(samples_per_ray=24, occupancy=False)))
    only_interlevel = dac_task(scene, teacher, ("interlevel",), {"interlevel": 0.3})
    assert any(g["name"] == "proposal" for g in only_interlevel.param_groups(1e-2))
    grad, metrics = proposal_grad(only_interlevel)
    assert grad > 0 and metrics["distill/interlevel"] > 0
    assert "distill/proposal" not in metrics  # the teacher's weights replace the student's own
    # The term reaches nothing but the proposal networks: the student field gets no gradient from it.
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in only_interlevel.student.parameters())

    # Without the term the proposal networks learn the student's own weights, as in photometric training.
    colour_only = dac_task(scene, teacher, ("colour", "rgb"), {"colour": 0.2, "rgb": 0.3})
    grad, metrics = proposal_grad(colour_only)
    assert "distill/proposal" in metrics and "distill/interlevel" not in metrics


def test_interlevel_term_without_proposals_keeps_comparing_render_weights():
    from fieldkd.platform.distill.terms import TermContext, get_term

    t_starts = torch.tensor([[0.0, 1.0, 2.0]])
    t_ends = t_starts + 1.0
    live = torch.ones(1, 3, dtype=torch.bool)
    target = {"density": torch.tensor([0.0, 50.0, 0.0]), "t_starts": t_starts, "t_ends": t_ends, "live": live,
              "ray_keep": torch.ones(1, dtype=torch.bool)}
    student_w = torch.tensor([[0.0, 0.5, 0.0]], requires_grad=True)
    value = get_term("interlevel")({"render_weights": student_w, "proposal_levels": None}, target,
                                   TermContext("mse", DistillConfig()))
    assert value.item() == pytest.approx(0.25, rel=1e-4)  # (1 - 0.5)^2 / 1: the teacher's weight sits in one bin
    # With proposal levels the term reads them instead: a histogram that covers the teacher costs nothing.
    edges = interval_edges(t_starts, t_ends)
    covered = get_term("interlevel")({"render_weights": student_w, "proposal_levels": [(edges, torch.tensor(
        [[0.0, 1.0, 0.0]]))]}, target, TermContext("mse", DistillConfig()))
    assert covered.item() == pytest.approx(0.0, abs=1e-6)
