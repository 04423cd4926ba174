"""Loading never runs code: a crafted ``last.pt`` whose unpickling would create a file is
refused, with one line naming it, through every path that reads a checkpoint; a sweep is
restored (Tune unpickles) only from a folder that is the user's own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import tiny_run_overrides
from fieldkd.platform.distill.stage import TeacherRef
from fieldkd.platform.distill.teacher import fetch_teacher, teacher_from_run
from fieldkd.platform.errors import InputError
from fieldkd.platform.fields import build_field
from fieldkd.platform.owned import require_own_folder
from fieldkd.platform.render import RenderConfig, Renderer
from fieldkd.platform.scenes import load_scene
from fieldkd.platform.stages import start_from
from fieldkd.platform.tracking import Run
from fieldkd.platform.train.checkpoint import load_checkpoint
from fieldkd.platform.train.loop import Trainer, TrainerConfig

FIELD = {"name": "hash", "backend": "torch", "n_levels": 4, "log2_hashmap_size": 11, "max_resolution": 64}


class Planted:
    """Unpickling this calls open(marker, "w"): the file appears iff the loader ran code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def craft(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"task": {"field": {"aabb": torch.zeros(2, 3)}, "renderer": {}, "payload": Planted(marker)},
             "step": 1, "elapsed": 0.0}
    torch.save(state, path)
    return path


@pytest.fixture
def crafted(tmp_path):
    marker = tmp_path / "ran_code"
    return craft(tmp_path / "crafted" / "last.pt", marker), marker


def assert_refused(caught, path: Path, marker: Path) -> None:
    message = str(caught.value)
    assert "\n" not in message
    assert caught.value.where == str(path) and "refused" in message, message
    assert not marker.exists(), "the checkpoint ran code"


def test_the_crafted_checkpoint_does_run_code_under_a_plain_load(crafted):
    path, marker = crafted
    torch.load(path, weights_only=False)  # what fieldkd did before: the test's checkpoint is live
    assert marker.exists()


def test_load_checkpoint_refuses_it(crafted):
    path, marker = crafted
    with pytest.raises(InputError) as caught:
        load_checkpoint(path)
    assert_refused(caught, path, marker)
    with pytest.raises(InputError) as caught:
        load_checkpoint(path.parent)  # the folder that holds last.pt
    assert_refused(caught, path, marker)


def test_a_checkpoint_written_by_training_loads_safely(tiny_blender, tmp_path):
    """What the Trainer writes (weights, optimiser, RNG states, occupancy grid) is all plain."""
    scene = load_scene("blender", tiny_blender)
    from fieldkd.platform.train.photometric import PhotometricTask

    field = build_field("hash", scene.aabb, **{k: v for k, v in FIELD.items() if k != "name"})
    renderer = Renderer(scene.aabb, scene.near, scene.far, scene.background,
                        RenderConfig(samples_per_ray=8, occupancy_resolution=8))
    task = PhotometricTask(field, renderer, scene.split("train"), 32, torch.device("cpu"))
    Trainer(TrainerConfig(steps=2, warmup_steps=1, progress=False), checkpoint_dir=tmp_path).fit(task)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["step"] == 2 and "grid" in state["task"]["renderer"]
    assert isinstance(state["rng"]["numpy"][1], torch.Tensor)


def test_teacher_checkpoint_refuses_it(crafted, tiny_blender):
    path, marker = crafted
    scene = load_scene("blender", tiny_blender)
    with pytest.raises(InputError) as caught:
        TeacherRef(str(path), FIELD).load(scene, {"render": {}}, "cpu")  # teacher.checkpoint=
    assert_refused(caught, path, marker)


def test_teacher_run_id_refuses_it(crafted, tiny_blender, tmp_path, mlflow_uri):
    path, marker = crafted
    cfg = {"field": FIELD, "render": {}, "scene": {}}
    logged = Run.start("safe-loading", "baseline")  # the checkpoint as an MLflow artifact
    logged.log_text(yaml.safe_dump(cfg), "config.yaml")
    logged.log_artifact(path, "checkpoints")
    with pytest.raises(InputError) as caught:
        teacher_from_run(logged.run_id)
    assert caught.value.where.endswith("last.pt") and "refused" in str(caught.value)
    fetched, _, _ = fetch_teacher(logged.run_id, tmp_path / "fetched")  # teacher.run_id= in pvd
    with pytest.raises(InputError) as caught:
        TeacherRef(str(fetched), FIELD).load(load_scene("blender", tiny_blender), {"render": {}}, "cpu")
    assert_refused(caught, fetched, marker)

    tagged = Run.start("safe-loading", "baseline")  # the checkpoint named by its storage path
    tagged.log_text(yaml.safe_dump(cfg), "config.yaml")
    tagged.set_tags({"fieldkd.checkpoint": str(path)})
    with pytest.raises(InputError) as caught:
        teacher_from_run(tagged.run_id)
    assert_refused(caught, path, marker)


class OneParameter:
    """The least a Trainer needs before it reads the checkpoint to resume from."""

    def __init__(self):
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def param_groups(self, lr):
        return [{"params": [self.weight], "lr": lr}]


def test_resume_refuses_it(crafted):
    path, marker = crafted
    trainer = Trainer(TrainerConfig(steps=1, progress=False), checkpoint_dir=path.parent)
    with pytest.raises(InputError) as caught:
        trainer.fit(OneParameter())  # the stage's own folder, as resume=RUN_ID reads it
    assert_refused(caught, path, marker)


def test_init_refuses_it(crafted, tiny_blender):
    path, marker = crafted
    scene = load_scene("blender", tiny_blender)
    field = build_field("hash", scene.aabb, **{k: v for k, v in FIELD.items() if k != "name"})
    renderer = Renderer(scene.aabb, scene.near, scene.far, scene.background, RenderConfig(samples_per_ray=8))
    with pytest.raises(InputError) as caught:
        start_from(str(path), field, renderer)  # a stage's init=
    assert_refused(caught, path, marker)


def fieldkd(args, cwd, uri):
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    return subprocess.run([sys.executable, "-m", "fieldkd.platform.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_fieldkd_run_refuses_it_with_one_line_and_exit_2(crafted, tiny_blender, tmp_path):
    """The real CLI, on Ray: pvd's ``teacher.checkpoint=`` is read in the teacher stage's actor."""
    path, marker = crafted
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "out"
    common = [*tiny_run_overrides(tiny_blender, out, steps=5), "trainer.progress=false",
              "tracking.system_metrics_s=0"]
    proc = fieldkd(["run", "method=pvd", f"teacher.checkpoint={path}", *common], tmp_path, uri)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("fieldkd: error:") and "refused" in lines[-1], lines[-1]
    assert "last.pt" in lines[-1]
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not marker.exists()


# -- a sweep is restored only from the user's own folder ----------------------------------------------

def test_a_folder_of_ones_own_passes(tmp_path):
    folder = tmp_path / "tune"
    (folder / "trial").mkdir(parents=True)
    (folder / "trial" / "state.pkl").write_bytes(b"x")
    os.chmod(folder, 0o755)
    os.chmod(folder / "trial", 0o755)
    os.chmod(folder / "trial" / "state.pkl", 0o644)
    require_own_folder(folder, "restore")


@pytest.mark.parametrize("mode", [0o664, 0o646])
def test_a_file_others_could_write_is_refused(tmp_path, mode):
    folder = tmp_path / "tune"
    folder.mkdir(mode=0o755)
    pickled = folder / "tuner.pkl"
    pickled.write_bytes(b"x")
    os.chmod(pickled, mode)
    with pytest.raises(InputError) as caught:
        require_own_folder(folder, "restore a Tune experiment")
    assert caught.value.where == str(pickled) and "writable by group or others" in str(caught.value)


def test_a_folder_others_could_write_is_refused(tmp_path):
    folder = tmp_path / "tune"
    folder.mkdir()
    os.chmod(folder, 0o777)
    with pytest.raises(InputError, match="writable by group or others"):
        require_own_folder(folder, "restore")


@pytest.mark.skipif(os.getuid() != 0, reason="giving a file to another user needs root")
def test_a_file_of_another_user_is_refused(tmp_path):
    folder = tmp_path / "tune"
    folder.mkdir(mode=0o755)
    foreign = folder / "tuner.pkl"
    foreign.write_bytes(b"x")
    os.chmod(foreign, 0o644)
    os.chown(foreign, 12345, 12345)
    with pytest.raises(InputError) as caught:
        require_own_folder(folder, "restore")
    assert caught.value.where == str(foreign) and "uid 12345" in str(caught.value)
