"""Models rebuild from their checkpoint alone: a stage's checkpoint records what model it holds,
and load_model answers exactly as the model the stage trained, with no scene and no config."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_run_overrides
from fieldkd.platform.cli import compose_config
from fieldkd.platform.distill.stage import TeacherRef
from fieldkd.platform.errors import InputError
from fieldkd.platform.models import load_model, model_record, recorded_field
from fieldkd.platform.stages import StageRequest, fit_stage, load_scene_from_config
from fieldkd.platform.tracking import Run
from fieldkd.platform.train.checkpoint import save_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def stage_checkpoint(tiny_blender, tmp_path_factory):
    """A photometric stage run by the stage body, as an actor runs it."""
    out = tmp_path_factory.mktemp("stage")
    uri = f"sqlite:///{out / 'mlflow.db'}"
    cfg = compose_config([*tiny_run_overrides(tiny_blender, out, steps=6), "field=hash", "field.n_levels=4",
                          "field.log2_hashmap_size=11", "trainer.progress=false", "tracking.system_metrics_s=0"])
    run = Run.start("models-tests", "photometric", tracking_uri=uri)
    outcome = fit_stage(StageRequest("teacher", run.run_id, uri, str(out), cfg, evaluate=False))
    return cfg, outcome.checkpoint


def test_a_field_stage_checkpoint_loads_without_its_scene(stage_checkpoint):
    cfg, checkpoint = stage_checkpoint
    record = model_record(checkpoint)
    assert record["kind"] == "field" and record["config"]["name"] == "hash" and record["config"]["n_levels"] == 4
    assert recorded_field(checkpoint) == record["config"]

    alone = load_model(checkpoint)
    scene = load_scene_from_config(cfg["scene"])
    with_scene = TeacherRef(checkpoint, cfg["field"]).load(scene, cfg, "cpu")  # the old way: scene and config
    g = torch.Generator().manual_seed(0)
    lo, hi = scene.aabb
    points = lo + torch.rand(300, 3, generator=g) * (hi - lo)
    dirs = torch.nn.functional.normalize(torch.randn(300, 3, generator=g), dim=-1)
    for name in ("density", "rgb", "feature"):
        assert torch.equal(getattr(alone.query(points, dirs), name), getattr(with_scene.query(points, dirs), name))
    rays = scene.split("val").cameras.image_rays(0)
    assert torch.equal(alone.render(rays, chunk=256)["rgb"], with_scene.render(rays, chunk=256)["rgb"])
    assert torch.equal(alone.renderer.grid.occupied, with_scene.renderer.grid.occupied)


def test_a_cascade_mvs_checkpoint_loads_as_its_network(tmp_path):
    from fieldkd.platform.networks.mvs import build_cascade_mvs

    torch.manual_seed(0)
    net = build_cascade_mvs({"hypotheses": [8, 4, 4], "base_channels": 4, "regularizer_channels": 4})
    save_checkpoint({"task": {"net": net.state_dict(), "config": dict(net.config)},
                     "model": {"kind": "cascade_mvs", "config": dict(net.config)}}, tmp_path)
    loaded = load_model(tmp_path / "last.pt")
    assert type(loaded) is type(net) and not loaded.training
    for (name, a), (_, b) in zip(net.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    with pytest.raises(InputError, match="not a radiance field"):
        recorded_field(tmp_path / "last.pt")


def test_a_checkpoint_without_a_record_is_named_in_one_line(tmp_path):
    save_checkpoint({"task": {"field": {}}}, tmp_path)
    with pytest.raises(InputError, match="does not say which model") as found:
        load_model(tmp_path / "last.pt")
    assert str(tmp_path / "last.pt") in str(found.value) and "\n" not in str(found.value)
    assert recorded_field(tmp_path / "last.pt") is None  # pvd then takes teacher.field (or its default)
    save_checkpoint({"task": {}, "model": {"kind": "hologram", "config": {}}}, tmp_path)
    with pytest.raises(InputError, match="unknown model kind 'hologram'"):
        load_model(tmp_path / "last.pt")
