"""resume=RUN_ID: the run's logged config is the base, overrides are checked and recorded."""

import pytest
import yaml

from fieldkd.platform.cli import compose_config
from fieldkd.platform.errors import InputError
from fieldkd.platform.resume import RESUME_TAG, resume_config, resumed_config, split_resume
from fieldkd.platform.tracking import Run


@pytest.fixture(scope="module")
def logged():
    """A run started with its own budget and field settings, unlike today's defaults."""
    return compose_config(["trainer.steps=77", "trainer.max_seconds=30", "field.log2_hashmap_size=12",
                           "scene.generate=default", "eval.lpips=false"])


def test_a_plain_resume_keeps_the_runs_own_config(logged):
    cfg = resumed_config(logged, [], compose_config, "abc")
    assert cfg["trainer"]["steps"] == 77 and cfg["trainer"]["max_seconds"] == 30
    assert cfg["field"]["log2_hashmap_size"] == 12
    assert cfg["resume"] == "abc"
    assert {k: v for k, v in cfg.items() if k != "resume"} == {k: v for k, v in logged.items() if k != "resume"}


def test_budget_overrides_apply_on_top(logged):
    cfg = resumed_config(logged, ["trainer.steps=200", "eval.max_views=3", "compute.workers=2"], compose_config,
                         "abc")
    assert cfg["trainer"]["steps"] == 200 and cfg["eval"]["max_views"] == 3 and cfg["compute"]["workers"] == 2
    assert cfg["trainer"]["max_seconds"] == 30  # untouched keys stay as the run had them
    # the same value as the run's is no change, even for a key a resume keeps
    assert resumed_config(logged, ["field.log2_hashmap_size=12", "field=hash"], compose_config, "abc") \
        == resumed_config(logged, [], compose_config, "abc")


@pytest.mark.parametrize("override, key", [
    ("field=grid", "field"),
    ("field.log2_hashmap_size=14", "field.log2_hashmap_size"),
    ("method=pvd", "method"),
    ("scene.path=/elsewhere", "scene.path"),
    ("trainer.optimizer=adam", "trainer.optimizer"),
    ("render.occupancy_resolution=32", "render.occupancy_resolution"),
])
def test_an_incompatible_override_is_an_error_naming_its_key(logged, override, key):
    with pytest.raises(InputError) as error:
        resumed_config(logged, [override], compose_config, "abc")
    assert error.value.where == key
    assert "abc" in error.value.problem


def test_a_methods_own_settings_are_kept_but_its_stage_budgets_may_change():
    dac = compose_config(["method=dac", "dac.experts=2"])
    cfg = resumed_config(dac, ["dac.expert.trainer.steps=50"], compose_config, "abc")
    assert cfg["dac"]["expert"]["trainer"]["steps"] == 50
    with pytest.raises(InputError) as error:
        resumed_config(dac, ["dac.experts=3"], compose_config, "abc")
    assert error.value.where == "dac.experts"


def test_split_resume():
    assert split_resume(["a=1", "resume=xyz", "b=2"]) == ("xyz", ["a=1", "b=2"])
    assert split_resume(["a=1"]) == (None, ["a=1"])


def test_resume_reads_the_logged_config_and_records_the_overrides(mlflow_uri, logged, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = Run.start("resume", "first")
    run.log_text(yaml.safe_dump(logged, sort_keys=False), "config.yaml")
    (tmp_path / logged["output_dir"] / run.run_id).mkdir(parents=True)

    cfg = resume_config(run.run_id, ["trainer.steps=90"], compose_config)
    assert cfg["trainer"]["steps"] == 90 and cfg["field"]["log2_hashmap_size"] == 12
    assert run.get().data.tags[f"{RESUME_TAG}1"] == "trainer.steps=90"
    # the next plain resume starts from the config then in force
    again = resume_config(run.run_id, [], compose_config)
    assert again["trainer"]["steps"] == 90
    assert run.get().data.tags[f"{RESUME_TAG}2"] == ""

    with pytest.raises(InputError) as error:
        resume_config("0" * 32, [], compose_config)
    assert error.value.where == "resume"
    child = run.child("stage")
    with pytest.raises(InputError, match="resume that one"):
        resume_config(child.run_id, [], compose_config)
    monkeypatch.chdir(tmp_path / "outputs")
    with pytest.raises(InputError) as error:
        resume_config(run.run_id, [], compose_config)
    assert error.value.where == "output_dir"
