"""Bad input through the real CLI: exit 2, one line on stderr naming the file or key, nothing
written into the input folder, no MLflow run, and all of it in seconds (before Ray starts).

Each case is a row of ``CASES``: the command line (``{scene}`` is a fresh copy of a tiny scene),
an edit that breaks the copy, and what the line must name. Rows with ``sub=True`` run as a real
subprocess; the others call ``cli.main`` in this process, which is the same code path.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from fieldkd.platform import cli
from fieldkd.platform.scenes.generator import render_scene
from fieldkd.platform.scenes.registry import write_format

LIMIT_S = 15.0
TIMES: dict[str, float] = {}




@dataclass
class Case:
    name: str
    args: list[str]
    names: str  # the file or key the error line must name
    edit: Callable[[Path], None] | None = None
    fmt: str = "blender"
    sub: bool = False
    store: bool = False  # the MLflow store exists already (empty)


def run_args(*extra: str, fmt: str = "blender") -> list[str]:
    return ["run", f"scene={fmt if fmt != 'monosdf' else 'indoor'}", "scene.path={scene}", "trainer.steps=2",
            *extra]


def edit_json(name: str, change: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        meta = json.loads((root / name).read_text())
        change(meta)
        (root / name).write_text(json.dumps(meta))
    return apply


def set_matrix(matrix) -> Callable[[Path], None]:
    return edit_json("transforms_train.json", lambda m: m["frames"][1].update(transform_matrix=matrix))


def edit_cameras(key: str, value) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        data = dict(np.load(root / "cameras.npz"))
        data[key] = value
        np.savez(root / "cameras.npz", **data)
    return apply


def rotated(scale=1.0, flip=False) -> list:
    m = np.eye(4)
    m[:3, :3] = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]) * scale
    if flip:
        m[:3, 0] *= -1
    m[:3, 3] = [0.0, 0.0, 3.0]
    return m.tolist()


def write_bytes(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda root: (root / name).write_bytes(data)


def unlink(name: str) -> Callable[[Path], None]:
    return lambda root: (root / name).unlink()


CASES = [
    # -- config values and keys -----------------------------------------------------------------
    Case("steps_not_int", run_args("trainer.steps=abc"), "trainer.steps", sub=True),
    Case("lr_not_number", run_args("trainer.lr=fast"), "trainer.lr"),
    Case("batch_rays_zero", run_args("trainer.batch_rays=0"), "trainer.batch_rays"),
    Case("steps_negative", run_args("trainer.steps=-5"), "trainer.steps"),
    Case("optimizer_unknown", run_args("trainer.optimizer=sgd"), "trainer.optimizer"),
    Case("max_seconds_negative", run_args("trainer.max_seconds=-1"), "trainer.max_seconds"),
    Case("misspelt_key_with_plus", run_args("+trainer.max_secnds=5"), "did you mean trainer.max_seconds", sub=True),
    Case("misspelt_key", run_args("trainer.max_secnds=5"), "did you mean trainer.max_seconds"),
    Case("misspelt_section", run_args("trainr.steps=5"), "did you mean trainer.steps"),
    Case("stage_trainer_key", run_args("method=pvd", "+teacher.trainer.max_secnds=5"), "teacher.trainer.max_secnds"),
    Case("stage_trainer_value", run_args("method=dac", "dac.expert.trainer.lr=fast"), "dac.expert.trainer.lr"),
    Case("student_field_unknown", run_args("method=pvd", "student.field=nerf"), "student.field"),
    Case("unikd_stream_key", run_args("method=unikd", "+unikd.streams={s1: {unikd.treshold: 0.1}}"),
         "unikd.streams.s1"),
    Case("method_unknown", run_args("method=distil"), "method", sub=True),
    Case("field_unknown", run_args("field=hsh"), "did you mean hash"),
    Case("scene_format_unknown", run_args("scene.format=colmap"), "scene.format"),
    Case("eval_split_unknown", run_args("eval.split=training"), "eval.split"),
    Case("delete_key", run_args("~trainer.lr"), "trainer.lr"),
    Case("unparsable_override", run_args("trainer.steps=[1"), "trainer.steps=[1"),
    Case("scene_path_missing", ["run", "scene=blender"], "scene.path", sub=True),
    Case("resume_unknown_run", run_args("resume=0123456789abcdef0123456789abcdef"), "resume"),
    Case("resume_unknown_run_in_store", run_args("resume=0123456789abcdef0123456789abcdef"), "resume", store=True),
    # -- scene files ------------------------------------------------------------------------------
    Case("scene_dir_missing", ["run", "scene=blender", "scene.path={scene}/nowhere"], "nowhere"),
    Case("camera_angle_zero", run_args(), "camera_angle_x",
         edit_json("transforms_train.json", lambda m: m.update(camera_angle_x=0))),
    Case("camera_angle_pi", run_args(), "camera_angle_x",
         edit_json("transforms_test.json", lambda m: m.update(camera_angle_x=3.2))),
    Case("camera_angle_missing", run_args(), "transforms_train.json",
         edit_json("transforms_train.json", lambda m: m.pop("camera_angle_x"))),
    Case("rotation_singular", run_args(), "frame 1", set_matrix(np.diag([0.0, 0.0, 0.0, 1.0]).tolist())),
    Case("rotation_scaled", run_args(), "frame 1", set_matrix(rotated(scale=2.0))),
    Case("rotation_mirrored", run_args(), "frame 1", set_matrix(rotated(flip=True))),
    Case("matrix_3x4", run_args(), "frame 1", set_matrix(np.eye(4)[:3].tolist())),
    # -- files a dataset names stay in it; sizes are checked before decoding -----------------------
    Case("file_path_absolute", run_args(), "absolute path",
         edit_json("transforms_train.json", lambda m: m["frames"][0].update(file_path="/etc/hostname"))),
    Case("file_path_climbs_out", run_args(), "leads out of the dataset folder",
         edit_json("transforms_train.json", lambda m: m["frames"][0].update(file_path="../../r_0"))),
    Case("image_too_many_pixels", run_args("scene.max_pixels=10"), "max_pixels"),
    Case("scene_too_many_bytes", run_args("scene.max_total_bytes=1000"), "max_total_bytes"),
    Case("transforms_missing", run_args(), "transforms_train.json", unlink("transforms_train.json")),
    Case("json_invalid", run_args(), "transforms_val.json", write_bytes("transforms_val.json", b'{"frames": [oops')),
    Case("image_missing", run_args("scene.missing_frames=error"), "r_1.png", unlink("train/r_1.png")),
    Case("image_unreadable", run_args(), "r_0.png", write_bytes("val/r_0.png", b"not a png")),
    Case("image_size_differs", run_args(), "r_2.png",
         lambda root: Image.new("RGBA", (6, 8)).save(root / "train" / "r_2.png")),
    Case("ns_width_differs", run_args(fmt="nerfstudio"), "train_0000.png",
         edit_json("transforms.json", lambda m: m.update(w=10)), fmt="nerfstudio"),
    Case("ns_focal_missing", run_args(fmt="nerfstudio"), "transforms.json",
         edit_json("transforms.json", lambda m: m.pop("fl_x")), fmt="nerfstudio"),
    Case("ns_split_ghost", run_args(fmt="nerfstudio"), "ghost.png",
         edit_json("transforms.json", lambda m: m["test_filenames"].append("images/ghost.png")), fmt="nerfstudio"),
    Case("monosdf_cameras_missing", run_args(fmt="monosdf"), "cameras.npz", unlink("cameras.npz"), fmt="monosdf"),
    Case("monosdf_singular_camera", run_args(fmt="monosdf"), "world_mat_1",
         edit_cameras("world_mat_1", np.zeros((4, 4))), fmt="monosdf"),
    Case("monosdf_splits_invalid", run_args(fmt="monosdf"), "splits.json", write_bytes("splits.json", b"{"),
         fmt="monosdf"),
    # -- other commands ---------------------------------------------------------------------------
    Case("make_width_not_int", ["scenes", "make", "default", "out={scene}/new", "width=abc"], "width", sub=True),
    Case("make_height_zero", ["scenes", "make", "default", "out={scene}/new", "height=0"], "height"),
    Case("make_n_train_huge", ["scenes", "make", "default", "out={scene}/new", "n_train=1000000"], "n_train"),
    Case("make_elevations_one", ["scenes", "make", "default", "out={scene}/new", "elevation_range=10"],
         "elevation_range"),
    Case("make_radius_inside_box", ["scenes", "make", "default", "out={scene}/new", "camera_radius=1"],
         "camera_radius"),
    Case("sweep_space_unknown", ["sweep", "tune_space=nope", "scene=blender", "scene.path={scene}"], "tune_space"),
    Case("sweep_resume_unknown", ["sweep", "resume=0123456789abcdef0123456789abcdef"], "resume"),
]


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad_input_templates")
    scene = render_scene("sphere", width=8, height=8, n_train=3, n_val=1, n_test=1)
    found = {fmt: write_format(fmt, scene, base / fmt) for fmt in ("blender", "nerfstudio", "monosdf")}
    return found


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def mlflow_runs(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as con:
        if not con.execute("select name from sqlite_master where name='runs'").fetchall():
            return 0
        return con.execute("select count(*) from runs").fetchone()[0]


def run_cli(case: Case, argv: list[str], cwd: Path, env: dict, capfd, monkeypatch) -> tuple[int, str]:
    if case.sub:
        proc = subprocess.run([sys.executable, "-m", "fieldkd.platform.cli", *argv], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=120)
        return proc.returncode, proc.stderr
    for key, value in env.items():
        if os.environ.get(key) != value:
            monkeypatch.setenv(key, value)
    monkeypatch.chdir(cwd)
    capfd.readouterr()
    code = cli.main(argv)
    return code, capfd.readouterr().err


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_fails_fast_in_one_line(case, templates, tmp_path, capfd, monkeypatch):
    scene = shutil.copytree(templates[case.fmt], tmp_path / "scene")
    if case.edit:
        case.edit(scene)
    before = snapshot(scene)
    work = tmp_path / "work"
    work.mkdir()
    db = tmp_path / "mlflow.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{db}"}
    argv = [a.replace("{scene}", str(scene)) for a in case.args]
    if case.store:
        from mlflow.tracking import MlflowClient

        MlflowClient(env["MLFLOW_TRACKING_URI"]).search_experiments()  # creates the tables

    started = time.perf_counter()
    code, err = run_cli(case, argv, work, env, capfd, monkeypatch)
    TIMES[case.name] = seconds = time.perf_counter() - started

    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("fieldkd: error: "), err
    assert case.names in lines[0], lines[0]
    assert snapshot(scene) == before
    assert mlflow_runs(db) == 0
    assert not (work / "outputs").exists()
    assert seconds < LIMIT_S, f"{case.name} took {seconds:.1f} s (load {os.getloadavg()[0]:.1f})"


def test_enough_cases():
    assert len(CASES) >= 30 and sum(c.sub for c in CASES) >= 5


def test_report_the_slowest(capsys):
    if TIMES:
        slowest = sorted(TIMES.items(), key=lambda kv: -kv[1])[:5]
        with capsys.disabled():
            print("\nslowest bad-input cases: " + ", ".join(f"{k} {v:.2f} s" for k, v in slowest)
                  + f" (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
