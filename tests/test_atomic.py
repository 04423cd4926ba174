"""Files on shared storage: a killed write leaves the old file whole, its temporary file is
cleaned at the next start, written files and the scene cache folder follow the umask, and a
stage's checkpoint is logged to MLflow only where output_dir will not last."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from fieldkd.platform import atomic
from fieldkd.platform.atomic import atomic_open, clean_stale, is_stale, write_text
from fieldkd.platform.errors import InputError
from fieldkd.platform.scenes import cache, default_scene_dir, write_scene
from fieldkd.platform.stages import keeps_checkpoint_artifact

KILLED_WRITE = """
import os, signal, sys
from fieldkd.platform.atomic import atomic_open
with atomic_open(sys.argv[1]) as fh:
    fh.write(b"NEW" * 1000)
    fh.flush()
    os.kill(os.getpid(), signal.SIGKILL)  # killed mid-write, before the rename
"""


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if atomic.TEMP.match(p.name)]


def test_a_write_killed_midway_leaves_the_old_file_and_its_temporary_is_cleaned(tmp_path):
    target = tmp_path / "last.pt"
    write_text(target, "old content")
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITE, str(target)], env={**os.environ})
    assert proc.returncode == -9
    assert target.read_text() == "old content"
    left = temporaries(tmp_path)
    assert len(left) == 1 and left[0].stat().st_size == 3000  # the half-done write is there ...
    assert is_stale(left[0])  # ... and its writer is gone
    assert clean_stale(tmp_path) == left
    assert temporaries(tmp_path) == [] and target.read_text() == "old content"


def test_an_error_inside_the_write_keeps_the_old_file_and_leaves_nothing(tmp_path):
    target = tmp_path / "record.json"
    write_text(target, "{}")
    with pytest.raises(RuntimeError):
        with atomic_open(target) as fh:
            fh.write(b"{\"half")
            raise RuntimeError("disk full")
    assert target.read_text() == "{}" and temporaries(tmp_path) == []


def test_a_finished_write_replaces_the_file_with_umask_permissions(tmp_path):
    before = os.umask(0o022)
    try:
        target = write_text(tmp_path / "sub" / "views.tsv", "0\t31.2\n")
    finally:
        os.umask(before)
    assert target.read_text() == "0\t31.2\n"
    assert target.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
    assert temporaries(target.parent) == []


def test_only_temporaries_of_dead_writers_are_cleaned(tmp_path):
    host = atomic._host()
    live = tmp_path / f".a.pt~{host}~{os.getpid()}~x1~tmp.pt"  # this process: a write in progress
    dead = tmp_path / f".b.pt~{host}~{dead_pid()}~x2~tmp.pt"
    remote_new = tmp_path / ".c.pt~other-node~123~x3~tmp.pt"  # another host: kept while recent
    remote_old = tmp_path / ".d.pt~other-node~123~x4~tmp.pt"
    unrelated = [tmp_path / ".e.pt.lock", tmp_path / "f~x~1~y~tmp.pt", tmp_path / "last.pt"]
    nested = tmp_path / "stage" / f".g.parquet~{host}~{dead_pid()}~x5~tmp.parquet"
    nested.parent.mkdir()
    for path in (live, dead, remote_new, remote_old, nested, *unrelated):
        path.write_bytes(b"x")
    day_ago = time.time() - atomic.OTHER_HOST_STALE_S - 60
    os.utime(remote_old, (day_ago, day_ago))
    assert sorted(clean_stale(tmp_path)) == sorted([dead, remote_old, nested])
    assert all(p.exists() for p in (live, remote_new, *unrelated))
    assert clean_stale(tmp_path / "missing") == []


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("umask,mode", [(0o022, 0o755), (0o002, 0o775)])
def test_the_scene_cache_folder_follows_the_umask(tmp_path, monkeypatch, umask, mode):
    monkeypatch.setenv("FIELDKD_CACHE", str(tmp_path))

    def small(name, out, fmt, progress):  # the real writer, at a size that takes a second
        return write_scene(name, out, fmt=fmt, width=8, height=8, n_train=2, n_val=1, n_test=1,
                           mesh_resolution=16, progress=progress)

    monkeypatch.setattr(cache, "write_scene", small)
    before = os.umask(umask)
    try:
        path = default_scene_dir("sphere", "blender")
    finally:
        os.umask(before)
    assert path.stat().st_mode & 0o777 == mode  # mkdtemp alone gives 0700
    assert (path / "transforms_train.json").stat().st_mode & 0o777 == mode & 0o666
    assert not [p for p in path.rglob("*") if atomic.TEMP.match(p.name)]


def test_the_checkpoint_artifact_is_kept_only_where_output_dir_will_not_last(tmp_path):
    temporary = Path(tempfile.gettempdir()) / "outputs" / "run" / "teacher" / "last.pt"
    durable = Path.home() / "outputs" / "run" / "teacher" / "last.pt"
    assert keeps_checkpoint_artifact("auto", temporary)
    assert keeps_checkpoint_artifact("auto", Path("/dev/shm/outputs/last.pt"))
    assert not keeps_checkpoint_artifact("auto", durable)
    assert not keeps_checkpoint_artifact("auto", Path("/mnt/fieldkd/outputs/run/student/last.pt"))
    assert keeps_checkpoint_artifact(True, durable) and not keeps_checkpoint_artifact(False, temporary)
    with pytest.raises(InputError, match="tracking.log_checkpoint"):
        keeps_checkpoint_artifact("sometimes", durable)


def test_mlflow_artifacts_go_through_the_atomic_writer(tmp_path, mlflow_uri):
    """The client's own helpers (log_image, log_table) write through its log_artifact, which in
    a local artifact store is copy_file (tested above against a killed write)."""
    import numpy as np

    from fieldkd.platform.tracking import Run
    from fieldkd.platform.tracking.store import AtomicClient

    run = Run.start("atomic", "artifacts")
    source = tmp_path / "table.txt"
    source.write_text("first")
    run.client.log_artifact(run.run_id, str(source), "notes")
    folder = run._local_artifacts()
    assert isinstance(run.client, AtomicClient)
    source.write_text("second")
    run.client.log_artifact(run.run_id, str(source), "notes")
    assert (folder / "notes" / "table.txt").read_text() == "second"
    run.log_image(np.zeros((4, 4, 3), dtype=np.uint8), key="test/view_000", step=3)
    written = [p for p in folder.rglob("*") if p.is_file()]
    assert any(p.suffix == ".png" for p in written)
    assert not [p for p in written if p.name.startswith(".")]  # no temp file left behind
