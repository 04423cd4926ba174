"""Run names and params: what tells runs apart in the MLflow UI, and only the config a run uses."""

from fieldkd.platform.cli import compose_config
from fieldkd.platform.run_info import run_name, short_value, trial_name, used_config
from fieldkd.platform.runner import field_label
from fieldkd.methods import baseline, pvd

NOON = 1796299200.0  # 2026-12-03 12:00 UTC


def test_a_run_name_says_method_fields_scene_and_time():
    cfg = compose_config(["method=pvd", "teacher.field=hash", "student.field=mlp"])
    assert run_name(cfg, field_label(pvd.run, cfg), now=NOON) == "pvd hash→mlp default 2026-12-03 12:00"
    base = compose_config(["method=baseline", "field=kplanes", "scene=blender", "scene.path=/data/lego/"])
    assert field_label(baseline.run, base) is None
    assert run_name(base, None, now=NOON) == "baseline kplanes lego 2026-12-03 12:00"


def test_a_given_run_name_wins():
    cfg = compose_config(["method=pvd", "run_name=my try"])
    assert run_name(cfg, field_label(pvd.run, cfg), now=NOON) == "my try"


def test_trial_names_carry_the_number_and_the_sampled_values():
    assert trial_name("4b7c2_00007", {"trainer.lr": 0.003, "unikd.threshold": 0.02}) == \
        "trial_07 lr=3e-3 threshold=0.02"
    assert trial_name("4b7c2_00012", {"trainer.batch_rays": 512.0}) == "trial_12 batch_rays=512"
    assert [short_value(v) for v in (1e-4, 0.25, 2.5e5, "hash", 3)] == ["1e-4", "0.25", "250000", "hash", "3"]


def test_params_hold_only_the_groups_the_method_uses():
    base = used_config(compose_config(["method=baseline"]))
    assert "distill" not in base and "tune" not in base
    assert {"field", "scene", "trainer", "render", "eval", "supervision", "method"} <= set(base)
    for method in ("pvd", "dac", "unikd"):
        used = used_config(compose_config([f"method={method}"]))
        assert "distill" in used and "tune" not in used, method
    sweep = used_config(compose_config(["method=baseline"]), also=("tune",))
    assert "tune" in sweep and "distill" not in sweep
