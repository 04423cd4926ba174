"""The teacher-sample store: Parquet shards that replay the on-the-fly batches exactly,
read back with pyarrow and with Ray Data."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from fieldkd.platform.compute.session import start_local
from fieldkd.platform.distill.inquirers import SphereInquirer, TrainingRayInquirer
from fieldkd.platform.distill.samples import OnTheFlySource, SampleLayout
from fieldkd.platform.distill.store import (MARKER, StoreSource, TeacherStore, columns_to_batch,
                                            store_schema, table_columns, write_store)
from fieldkd.platform.distill.teacher import Teacher
from fieldkd.platform.fields import build_field
from fieldkd.platform.render.occupancy import OccupancyGrid
from fieldkd.platform.scenes import load_scene

S, BATCH, N_BATCHES = 12, 32, 6


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def setup(tiny_blender):
    scene = load_scene("blender", tiny_blender)
    torch.manual_seed(0)
    teacher = Teacher(build_field("hash", scene.aabb, backend="torch", n_levels=2, log2_hashmap_size=10))
    grid = OccupancyGrid(scene.aabb, resolution=8)
    grid.occupied[:, :4] = False  # half the box is empty: dead samples inside the box too
    layout = SampleLayout(scene.aabb, scene.near, scene.far, S, scene.background, grid)
    return scene, teacher, layout


def fresh_source(scene, teacher, layout):
    return OnTheFlySource(SphereInquirer(scene.split("train").cameras, scene.aabb, rays_per_pose=4, seed=3),
                          teacher, layout, seed=4)


def assert_same_batch(a, b):
    for name in ("t_near", "t_far", "t_starts", "t_ends", "t_points", "positions", "live", "teacher_rgb",
                 "teacher_depth", "teacher_opacity", "row", "pose"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    for name in ("origins", "directions", "z_scale"):
        assert torch.equal(getattr(a.rays, name), getattr(b.rays, name)), name
    for name in ("raw_density", "density", "rgb", "feature"):
        x, y = getattr(a.teacher, name), getattr(b.teacher, name)
        assert (x is None and y is None) or torch.equal(x, y), name
    assert (a.colours is None and b.colours is None) or torch.equal(a.colours, b.colours)


@pytest.fixture(scope="module")
def store(setup, tmp_path_factory):
    scene, teacher, layout = setup
    directory = tmp_path_factory.mktemp("store") / "samples"
    # Tiny row groups and shards, so that reading crosses both.
    write_store(directory, fresh_source(scene, teacher, layout), N_BATCHES, BATCH, rows_per_shard=2 * BATCH,
                row_group_bytes=1)
    return directory


def test_shards_have_the_explicit_schema_whole_batch_row_groups_and_a_marker(store, setup):
    meta = json.loads((store / MARKER).read_text())
    assert meta["n_rows"] == N_BATCHES * BATCH and meta["feature_dim"] == 16 and not meta["with_colours"]
    assert meta["layout"]["samples_per_ray"] == S and meta["row_group_rows"] == BATCH
    shards = sorted(store.glob("shard-*.parquet"))
    assert len(shards) == 3 and not list(store.glob(".*"))  # no temporary file left behind
    expected = store_schema(S, 16, False)
    for path in shards:
        f = pq.ParquetFile(path)
        assert f.schema_arrow.remove_metadata().equals(expected.remove_metadata())
        assert json.loads(f.schema_arrow.metadata[b"fieldkd"])["layout"] == meta["layout"]
        assert all(f.metadata.row_group(g).num_rows == BATCH for g in range(f.metadata.num_row_groups))
    assert expected.field("feature").type == pa.list_(pa.float32(), 16 * S)
    assert expected.field("live").type == pa.list_(pa.bool_(), S)
    table = pq.read_table(shards[0])
    assert table.column("row").to_pylist() == list(range(2 * BATCH))


def test_store_replays_the_on_the_fly_batches_and_resumes(store, setup):
    scene, teacher, layout = setup
    live = fresh_source(scene, teacher, layout)
    stored = StoreSource(store, layout)
    batches = []
    for _ in range(N_BATCHES):
        want, got = live.next(BATCH), stored.next(BATCH)
        assert_same_batch(got, want)
        batches.append(want)
    assert 0 < float(batches[0].live.float().mean()) < 1
    # The store repeats: another epoch starts with the first batch.
    assert_same_batch(stored.next(BATCH), batches[0])
    # Resume in the middle, across a shard boundary, at an odd row.
    resumed = StoreSource(store, layout)
    resumed.load_state_dict({"rows": 2 * BATCH - 5})
    part = resumed.next(10)
    assert part.row.tolist() == list(range(2 * BATCH - 5, 2 * BATCH + 5))
    assert torch.equal(part.positions[:5], batches[1].positions[-5:])
    assert torch.equal(part.positions[5:], batches[2].positions[:5])


def test_store_refuses_another_layout_and_is_reused_or_rewritten(store, setup, tmp_path):
    scene, teacher, layout = setup
    other = SampleLayout(scene.aabb, scene.near, scene.far, S + 1, scene.background)
    with pytest.raises(ValueError, match="layout"):
        StoreSource(store, other)
    # The same request reuses the complete store without drawing a batch.
    before = {p: p.stat().st_mtime_ns for p in store.iterdir()}
    source = fresh_source(scene, teacher, layout)
    write_store(store, source, N_BATCHES, BATCH, rows_per_shard=2 * BATCH, row_group_bytes=1)
    assert source.rows == 0 and before == {p: p.stat().st_mtime_ns for p in store.iterdir()}
    with pytest.raises(ValueError, match="different"):
        write_store(store, fresh_source(scene, teacher, layout), N_BATCHES + 1, BATCH)
    # Another seed, or another teacher of the same architecture, would draw other batches.
    reseeded = fresh_source(scene, teacher, layout)
    reseeded.generator.manual_seed(5)
    with pytest.raises(ValueError, match="different"):
        write_store(store, reseeded, N_BATCHES, BATCH, rows_per_shard=2 * BATCH, row_group_bytes=1)
    torch.manual_seed(1)
    other = Teacher(build_field("hash", scene.aabb, backend="torch", n_levels=2, log2_hashmap_size=10))
    assert other.fingerprint() != teacher.fingerprint()
    with pytest.raises(ValueError, match="different"):
        write_store(store, fresh_source(scene, other, layout), N_BATCHES, BATCH, rows_per_shard=2 * BATCH,
                    row_group_bytes=1)
    # An unfinished store (no marker) is written again; a foreign folder is left alone.
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / ".shard-00000.parquet").write_text("half a shard")
    write_store(unfinished, fresh_source(scene, teacher, layout), 2, BATCH)
    assert TeacherStore(unfinished).n_rows == 2 * BATCH
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a teacher-sample store"):
        write_store(foreign, fresh_source(scene, teacher, layout), 2, BATCH)
    with pytest.raises(FileNotFoundError):
        TeacherStore(tmp_path / "nothing")


def test_grid_teacher_and_ground_truth_colours(setup, tmp_path):
    scene, _, layout = setup
    torch.manual_seed(0)
    grid_teacher = Teacher(build_field("grid", scene.aabb, resolution=8))
    source = OnTheFlySource(TrainingRayInquirer(scene.split("train"), seed=0), grid_teacher, layout, seed=0)
    directory = write_store(tmp_path / "grid", source, 2, BATCH)
    store = TeacherStore(directory)
    assert "feature" not in store.schema.names and {"r", "g", "b"} <= set(store.schema.names)
    again = OnTheFlySource(TrainingRayInquirer(scene.split("train"), seed=0), grid_teacher, layout, seed=0)
    reader = StoreSource(directory)
    for _ in range(2):
        assert_same_batch(reader.next(BATCH), again.next(BATCH))


def test_ray_data_reads_the_same_rows(store):
    import ray

    ray.shutdown()
    start_local(num_cpus=1, namespace="fieldkd-distill-tests")
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    keep_order = context.execution_options.preserve_order
    context.execution_options.preserve_order = True  # a worker's stream in stored order
    try:
        dataset = ray.data.read_parquet(str(store))
        on_disk = TeacherStore(store)
        reader = StoreSource(store)
        seen = 0
        for k, columns in enumerate(dataset.iter_torch_batches(batch_size=BATCH)):
            want = table_columns(on_disk.read(k * BATCH, BATCH))
            assert set(columns) == set(want)
            for name, value in want.items():  # fixed-size lists arrive as (batch, size) tensors
                assert columns[name].dtype == value.dtype and torch.equal(columns[name], value), name
            assert_same_batch(columns_to_batch(columns, S), reader.next(BATCH))
            seen += len(columns["row"])
        assert seen == N_BATCHES * BATCH
    finally:
        context.execution_options.preserve_order = keep_order
        ray.shutdown()
