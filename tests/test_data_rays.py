"""A scene's rays as a data module: shards hold every ray once, and Ray Data streams them to
workers that hold every CPU of the machine."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from fieldkd.platform.data.rays import COLUMNS, split_rows, write_ray_shards
from fieldkd.platform.data.row_groups import stream
from fieldkd.platform.scenes import load_scene


@pytest.fixture(scope="module")
def shards(tiny_blender, tmp_path_factory):
    split = load_scene("blender", tiny_blender).split("train")
    directory = write_ray_shards(split, tmp_path_factory.mktemp("rays"), rows_per_shard=2000, seed=3)
    return split, directory


def sorted_rows(rows: np.ndarray) -> np.ndarray:
    return rows[np.lexsort(rows.T[::-1])]


def test_the_shards_hold_every_ray_of_the_split_once_shuffled(shards):
    import pyarrow.parquet as pq

    split, directory = shards
    files = sorted(directory.glob("shard-*.parquet"))
    tables = [pq.read_table(f) for f in files]
    table = np.concatenate([np.stack([t.column(c).to_numpy() for c in COLUMNS], 1) for t in tables])
    expected = split_rows(split)
    assert len(files) == -(-len(expected) // 2000)
    np.testing.assert_array_equal(sorted_rows(table), sorted_rows(expected))
    assert not np.array_equal(table[:50], expected[:50])  # shuffled once when written


def test_the_stream_reads_every_row_while_the_cores_are_taken(shards, local_ray):
    """Ray Train's workers hold every CPU; the stream must still read (Ray's own Parquet reader lists
    files in a task that waits for a CPU, and a training fed by it never starts)."""
    split, directory = shards

    @local_ray.remote(num_cpus=2)
    class Worker:  # holds both cores, as two Ray Train workers on this machine do
        def count(self, dataset):
            ids, rows = 0, []
            for batch in dataset.iter_torch_batches(batch_size=512):
                rows.append(torch.stack([batch[c] for c in COLUMNS], dim=1))
                ids += 1
            return torch.cat(rows).numpy(), ids

    dataset = stream(directory)
    worker = Worker.remote()
    rows, batches = local_ray.get(worker.count.remote(dataset), timeout=60)
    np.testing.assert_array_equal(sorted_rows(rows), sorted_rows(split_rows(split)))
    assert batches == -(-len(rows) // 512)


def test_an_empty_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        stream(tmp_path)


def test_the_reader_that_ray_data_runs_imports_no_torch():
    """Ray Data's fresh worker processes import the reader's module before the first row: it must stay
    light (torch alone costs them over a second)."""
    code = ("import sys, fieldkd.platform.data.row_groups; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert found.strip() == "[]", found
