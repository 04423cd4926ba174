"""Ray Data's reader of Parquet shard sets, in a module that imports nothing but pyarrow.

Ray Data runs :func:`read_row_groups` in fresh worker processes, which import the module that
defines it before the first row arrives: here that costs a tenth of a second, where a module that
imports torch costs over a second on a busy CPU (the first batch of a 2-worker stage on two cores
came ~2 s sooner, measured with the same shards).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def stream(directory: str | Path):
    """A Ray Data dataset of the ``shard-*.parquet`` files in ``directory``, read one row group at a
    time as the workers consume it (only the footers are read here).

    Reading asks for no CPU: Ray Train's workers hold the cores (on a 2-core machine, all of them),
    and a read that waited for one would stall the workers it feeds. Ray's own Parquet reader lists
    files in a task that takes a CPU, so it cannot start beside them; a row group is decompressed
    on the workers' cores instead."""
    import ray

    ray.data.DataContext.get_current().enable_progress_bars = False  # the training bar is the one to watch
    groups = [{"path": str(path), "group": group} for path in sorted(Path(directory).glob("shard-*.parquet"))
              for group in range(pq.ParquetFile(path).metadata.num_row_groups)]
    if not groups:
        raise FileNotFoundError(f"{directory}: no shard-*.parquet files to stream")
    return ray.data.from_items(groups, override_num_blocks=len(groups)).map_batches(
        read_row_groups, batch_size=1, batch_format="pyarrow", num_cpus=0)


def read_row_groups(items: pa.Table) -> pa.Table:
    """The row groups that ``items`` (columns ``path``, ``group``) name, as one table."""
    paths, groups = items.column("path").to_pylist(), items.column("group").to_pylist()
    return pa.concat_tables([pq.ParquetFile(path).read_row_group(group) for path, group in zip(paths, groups)])
