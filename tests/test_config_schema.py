"""The config's typed schema: specs, derived keys, declared types that agree with the code."""

import importlib

import pytest

from fieldkd.platform.config import Schema, _compose, compose_config, declared_types, groups
from fieldkd.platform.errors import InputError
from fieldkd.platform.schema import check, infer, parse


def test_specs_parse_and_check():
    spec = parse("float > 0, <= 1 | null")
    assert check(0.5, spec, "k") == 0.5 and check(None, spec, "k") is None and check(1, spec, "k") == 1
    for bad in (0, 1.5, "x", True, float("nan")):
        with pytest.raises(InputError, match=r"^k: must be a number > 0 and <= 1 or null"):
            check(bad, spec, "k")
    assert check(1000.0, parse("int >= 1"), "k") == 1000 and isinstance(check(1000.0, parse("int"), "k"), int)
    with pytest.raises(InputError, match="integer"):
        check(2.5, parse("int"), "k")
    assert check([1, 2.5], parse("list of float"), "k") == [1, 2.5]
    with pytest.raises(InputError, match="list"):
        check(["a"], parse("list of float"), "k")
    assert check({"a": 1.0}, parse("map of float >= 0"), "k") == {"a": 1.0}
    with pytest.raises(InputError, match=r"^k\.a: "):
        check({"a": -1.0}, parse("map of float >= 0"), "k")
    assert parse("one of a, b").choices == ("a", "b")
    assert infer(3).kind == "int" and infer(True).kind == "bool" and infer([1, 2.0]).item.kind == "float"
    assert infer(None) is None and infer({"a": 1}) is None


def test_every_method_and_field_composes_and_every_null_default_is_declared():
    declared = declared_types()
    for method in groups()["method"]:
        for field in groups()["field"]:
            reference = _compose([f"method={method}", f"field={field}"], resolve=False)
            schema = Schema(reference, declared)
            undeclared = [k for k in schema.keys() if not isinstance(schema.locate(k), dict)
                          and schema.locate(k) is None]
            assert undeclared == [], f"declare these null defaults in conf/types.yaml: {undeclared}"
    known = {k for m in groups()["method"] for k in Schema(_compose([f"method={m}"], resolve=False), declared).keys()}
    known |= {k for s in groups()["scene"] for k in Schema(_compose([f"scene={s}"], resolve=False), declared).keys()}
    assert set(declared) - known == set(), "conf/types.yaml declares keys that no config has"


CODE_LISTS = {  # written out in conf/types.yaml so that checking a config does not import torch
    "scene.format": ("fieldkd.platform.scenes.registry", "FORMATS"),
    "field.backend": ("fieldkd.platform.fields.backend", "HASH_BACKENDS"),
    "field.density_activation": ("fieldkd.platform.fields.activations", "DENSITY_ACTIVATIONS"),
    "field.encoding": ("fieldkd.platform.fields.models.sdf_field", "ENCODINGS"),
    "distill.inquirer": ("fieldkd.platform.distill.stage", "INQUIRERS"),
    "distill.loss": ("fieldkd.platform.distill.losses", "KINDS"),
    "distill.kd_ramp": ("fieldkd.platform.distill.incremental", "RAMPS"),
    "supervision.rgb": ("fieldkd.platform.train.supervision", "RGB_LOSSES"),
    "supervision.depth_mode": ("fieldkd.platform.train.supervision", "DEPTH_MODES"),
    "tune.search": ("fieldkd.platform.compute.search_space", "SEARCHES"),
    "tune.mode": ("fieldkd.platform.compute.search_space", "MODES"),
    "tune.scheduler": ("fieldkd.platform.compute.search_space", "SCHEDULERS"),
    "dac.partition": ("fieldkd.platform.scenes.partition", "METHODS"),
    "dac.graph": ("fieldkd.platform.scenes.partition", "GRAPHS"),
    "field.name": ("fieldkd.platform.fields.registry", "FIELDS"),
    "render.sampler": ("fieldkd.platform.render.renderer", "SAMPLERS"),
}


@pytest.mark.parametrize("key", sorted(CODE_LISTS))
def test_declared_choices_agree_with_the_code(key):
    module, name = CODE_LISTS[key]
    assert set(declared_types()[key].choices) == set(getattr(importlib.import_module(module), name))


def test_stage_trainer_sections_take_the_root_trainer_keys():
    cfg = compose_config(["method=pvd", "teacher.trainer.eval_every=0", "+student.trainer.warmup_steps=3",
                          "+student.lr_by_field.hash=0.02", "trainer.steps=1e3"])
    assert cfg["teacher"]["trainer"]["eval_every"] == 0 and cfg["student"]["trainer"]["warmup_steps"] == 3
    assert cfg["student"]["lr_by_field"]["hash"] == 0.02 and cfg["trainer"]["steps"] == 1000
    with pytest.raises(InputError, match=r"^dac\.finetune\.trainer\.optimizer: must be one of adam, adamw, sparse_adam or null"):
        compose_config(["method=dac", "dac.finetune.trainer.optimizer=sgd"])
    with pytest.raises(InputError, match=r"^student\.trainer\.warmup: no such config key "
                                         r"\(did you mean student\.trainer\.warmup_steps\?\)"):
        compose_config(["method=pvd", "+student.trainer.warmup=3"])


def test_streams_are_checked_key_by_key():
    cfg = compose_config(["method=unikd", "+unikd.streams={s1: {seed: 1, unikd.threshold: 0.01}}"])
    assert cfg["unikd"]["streams"] == {"s1": {"seed": 1, "unikd.threshold": 0.01}}
    with pytest.raises(InputError, match=r"^unikd\.streams\.s1: unikd\.threshold: must be a number"):
        compose_config(["method=unikd", "+unikd.streams={s1: {unikd.threshold: abc}}"])
    with pytest.raises(InputError, match=r"^unikd\.streams\.s1: no such config key unikd\.treshold"):
        compose_config(["method=unikd", "+unikd.streams={s1: {unikd.treshold: 0.1}}"])
