"""The teacher-sample store: distillation batches computed once, as Parquet shards.

One row per inquired ray, in inquiry order (column ``row``), so a reader that
takes rows in order replays exactly the batches an on-the-fly source would
have produced with the same seeds. Per-ray columns are float32 scalars; the
per-sample arrays are fixed-size lists of length S (samples per ray), with
zeros at dead samples (``live`` false). Ray Data reads fixed-size lists back
as (batch, S) tensors, so Ray Train students stream the same shards.

Columns (S samples per ray, F feature width):

- ``row``, ``pose`` (int64); the ray ``ox oy oz dx dy dz z_scale``; its
  clipped extent ``t_near t_far`` (the intervals follow from the layout);
- teacher render ``teacher_r teacher_g teacher_b teacher_depth teacher_opacity``;
- optional ground truth ``r g b``;
- per sample: ``t`` [S], ``live`` [S] (bool), ``position`` [3S] (xyz
  interleaved), ``raw_density`` [S], ``density`` [S], ``rgb`` [3S],
  optional ``feature`` [F·S].

The layout and sizes are in the schema's metadata (key ``fieldkd``) and in
the ``_COMPLETE`` marker, written last and atomically: a store without it is
unfinished and is rewritten. Shards are renamed into place when complete.
Dense per-ray arrays cost S·(10 + F) floats per ray; zstd shrinks the zeros
of dead samples.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ..atomic import atomic_path, write_text
from ..render.samplers import stratified
from ..scenes.cameras import Rays
from .samples import DistillBatch, SampleLayout, TeacherSamples

MARKER = "_COMPLETE"
META_KEY = b"fieldkd"
FORMAT = "fieldkd.teacher_samples/1"
ROW_GROUP_BYTES = 8 << 20  # ~8 MiB of raw values per row group: streams in small steps, scans fast
RAY_COLUMNS = ("ox", "oy", "oz", "dx", "dy", "dz", "z_scale", "t_near", "t_far",
               "teacher_r", "teacher_g", "teacher_b", "teacher_depth", "teacher_opacity")
GT_COLUMNS = ("r", "g", "b")


def store_schema(samples_per_ray: int, feature_dim: int | None, with_colours: bool,
                 meta: dict | None = None) -> pa.Schema:
    s = int(samples_per_ray)
    columns = [("row", pa.int64()), ("pose", pa.int64())]
    columns += [(name, pa.float32()) for name in RAY_COLUMNS]
    if with_colours:
        columns += [(name, pa.float32()) for name in GT_COLUMNS]
    columns += [("t", pa.list_(pa.float32(), s)), ("live", pa.list_(pa.bool_(), s)),
                ("position", pa.list_(pa.float32(), 3 * s)), ("raw_density", pa.list_(pa.float32(), s)),
                ("density", pa.list_(pa.float32(), s)), ("rgb", pa.list_(pa.float32(), 3 * s))]
    if feature_dim:
        columns.append(("feature", pa.list_(pa.float32(), int(feature_dim) * s)))
    return pa.schema(columns, metadata={META_KEY: json.dumps(meta or {}).encode()})


def bytes_per_row(schema: pa.Schema) -> int:
    total = 0
    for f in schema:
        t = f.type
        width = t.list_size if pa.types.is_fixed_size_list(t) else 1
        inner = t.value_type if pa.types.is_fixed_size_list(t) else t
        total += width * max(1, inner.bit_width // 8)
    return total


def row_group_rows(schema: pa.Schema, batch_rays: int, target_bytes: int = ROW_GROUP_BYTES) -> int:
    """Rows per row group: whole batches, about ``target_bytes`` of raw values, at least one batch."""
    batches = max(1, target_bytes // max(1, bytes_per_row(schema) * int(batch_rays)))
    return int(batches * batch_rays)


def _fixed(values: np.ndarray, size: int) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), size)


def batch_to_table(batch: DistillBatch, schema: pa.Schema) -> pa.Table:
    """The batch's rows, with dense per-sample arrays (zeros at dead samples)."""
    s = batch.live.shape[1]
    np32 = lambda t: t.detach().float().cpu().numpy()  # noqa: E731
    rays = batch.rays
    per_ray = {
        "row": batch.row.cpu().numpy().astype(np.int64), "pose": batch.pose.cpu().numpy().astype(np.int64),
        "ox": rays.origins[:, 0], "oy": rays.origins[:, 1], "oz": rays.origins[:, 2],
        "dx": rays.directions[:, 0], "dy": rays.directions[:, 1], "dz": rays.directions[:, 2],
        "z_scale": rays.z_scale, "t_near": batch.t_near, "t_far": batch.t_far,
        "teacher_r": batch.teacher_rgb[:, 0], "teacher_g": batch.teacher_rgb[:, 1],
        "teacher_b": batch.teacher_rgb[:, 2], "teacher_depth": batch.teacher_depth,
        "teacher_opacity": batch.teacher_opacity,
    }
    if "r" in schema.names:
        if batch.colours is None:
            raise ValueError("this store records ground-truth colours, but the batch has none")
        per_ray.update(r=batch.colours[:, 0], g=batch.colours[:, 1], b=batch.colours[:, 2])
    arrays = {k: pa.array(v if isinstance(v, np.ndarray) else np32(v)) for k, v in per_ray.items()}
    t = batch.teacher
    arrays["t"] = _fixed(np32(batch.t_points), s)
    arrays["live"] = _fixed(batch.live.cpu().numpy(), s)
    arrays["position"] = _fixed(np32(batch.positions), 3 * s)
    arrays["raw_density"] = _fixed(np32(batch.dense(t.raw_density)), s)
    arrays["density"] = _fixed(np32(batch.dense(t.density)), s)
    arrays["rgb"] = _fixed(np32(batch.dense(t.rgb)), 3 * s)
    if "feature" in schema.names:
        if t.feature is None:
            raise ValueError("this store records features, but the teacher gave none")
        arrays["feature"] = _fixed(np32(batch.dense(t.feature)), schema.field("feature").type.list_size)
    return pa.Table.from_arrays([arrays[name] for name in schema.names], schema=schema)


def _ours(name: str) -> bool:
    return name.startswith(("shard-", ".shard-", f".{MARKER}"))


def read_meta(directory: str | Path) -> dict | None:
    """The complete store's description, or None while it is unfinished or absent."""
    marker = Path(directory) / MARKER
    return json.loads(marker.read_text()) if marker.exists() else None


def write_store(directory: str | Path, source, n_batches: int, batch_rays: int, *,
                rows_per_shard: int | None = None, row_group_bytes: int = ROW_GROUP_BYTES,
                extra_meta: dict | None = None) -> Path:
    """Draw ``n_batches`` batches of ``batch_rays`` rays from ``source`` (an
    :class:`~.samples.OnTheFlySource`) and write them as shards.

    Row groups hold whole batches, about ``row_group_bytes`` each; shards
    ``rows_per_shard`` rows (default 16 row groups). A complete store with
    the same description is reused; a different one is
    an error (delete it, or write elsewhere); an unfinished one is replaced.
    """
    directory = Path(directory)
    layout = source.layout.describe()
    identity = {"format": FORMAT, "layout": layout, "batch_rays": int(batch_rays), "n_batches": int(n_batches),
                "n_rows": int(n_batches) * int(batch_rays), "teacher": source.teacher.name,
                "teacher_source": source.teacher.source, "teacher_fingerprint": source.teacher.fingerprint(),
                "source_fingerprint": source.fingerprint(), "grid": source.layout.grid_digest(),
                **(extra_meta or {})}
    existing = read_meta(directory)
    if existing is not None:
        if {k: existing.get(k) for k in identity} == json.loads(json.dumps(identity)):
            return directory
        raise ValueError(f"{directory} holds a different teacher-sample store; delete it or write elsewhere")
    if directory.exists():
        foreign = [p.name for p in directory.iterdir() if not _ours(p.name)]
        if foreign:
            raise ValueError(f"{directory} is not a teacher-sample store (it holds {foreign[:3]}); write elsewhere")
        shutil.rmtree(directory)  # an unfinished write: start over
    directory.mkdir(parents=True)
    first = source.next(batch_rays)
    feature_dim = first.teacher.feature.shape[-1] if first.teacher.feature is not None else None
    meta = {**identity, "feature_dim": feature_dim, "with_colours": first.colours is not None}
    schema = store_schema(layout["samples_per_ray"], feature_dim, meta["with_colours"], meta)
    group = row_group_rows(schema, batch_rays, row_group_bytes)
    rows_per_shard = max(group, (rows_per_shard or 16 * group) // group * group)
    meta.update(row_group_rows=group, rows_per_shard=rows_per_shard)

    pending: list[pa.Table] = []
    pending_rows, shard = 0, 0

    def flush(tables: list[pa.Table], index: int) -> None:
        with atomic_path(directory / f"shard-{index:05d}.parquet") as tmp:
            pq.write_table(pa.concat_tables(tables), tmp, row_group_size=group, compression="zstd")

    batch = first
    for b in range(int(n_batches)):
        if b > 0:
            batch = source.next(batch_rays)
        pending.append(batch_to_table(batch, schema))
        pending_rows += len(batch)
        if pending_rows >= rows_per_shard:
            flush(pending, shard)
            pending, pending_rows, shard = [], 0, shard + 1
    if pending:
        flush(pending, shard)
    write_text(directory / MARKER, json.dumps(meta))
    return directory


# -- reading --------------------------------------------------------------------------------


def shard_paths(directory: str | Path) -> list[Path]:
    return sorted(Path(directory).glob("shard-*.parquet"))


def _column(table, name: str) -> np.ndarray:
    col = table.column(name)
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_fixed_size_list(col.type):
        size = col.type.list_size
        return col.flatten().to_numpy(zero_copy_only=False).reshape(-1, size)
    return col.to_numpy(zero_copy_only=False)


def table_columns(table) -> dict[str, torch.Tensor]:
    """A pyarrow table or record batch -> {column: tensor}, fixed-size lists as (rows, size)."""
    return {name: torch.from_numpy(np.array(_column(table, name))) for name in table.schema.names}


def columns_to_batch(columns: dict[str, torch.Tensor], samples_per_ray: int, device="cpu") -> DistillBatch:
    """Rebuild a :class:`DistillBatch` from store columns (from pyarrow, or from
    Ray Data's ``iter_torch_batches``); the intervals follow from ``t_near``/``t_far``."""
    c = {k: v.to(device) for k, v in columns.items()}
    s = int(samples_per_ray)
    f32 = lambda name: c[name].float()  # noqa: E731
    n = c["row"].shape[0]
    rays = Rays(torch.stack([f32("ox"), f32("oy"), f32("oz")], -1),
                torch.stack([f32("dx"), f32("dy"), f32("dz")], -1), f32("z_scale"))
    t_near, t_far = f32("t_near"), f32("t_far")
    t_starts, t_ends, _ = stratified(t_near, t_far, s, jitter=False)  # as SampleLayout.intervals
    live = c["live"].reshape(n, s).bool()
    samples = TeacherSamples(
        f32("raw_density").reshape(n, s)[live], f32("density").reshape(n, s)[live],
        f32("rgb").reshape(n, s, 3)[live],
        f32("feature").reshape(n, s, -1)[live] if "feature" in c else None)
    colours = torch.stack([f32("r"), f32("g"), f32("b")], -1) if "r" in c else None
    return DistillBatch(
        rays, t_near, t_far, t_starts, t_ends, f32("t").reshape(n, s), f32("position").reshape(n, s, 3), live,
        samples, torch.stack([f32("teacher_r"), f32("teacher_g"), f32("teacher_b")], -1), f32("teacher_depth"),
        f32("teacher_opacity"), c["row"].long(), c["pose"].long(), colours)


class TeacherStore:
    """A complete store on disk: its description and its rows, read with pyarrow."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        meta = read_meta(self.directory)
        if meta is None:
            raise FileNotFoundError(f"{self.directory}: no complete teacher-sample store (no {MARKER})")
        if meta.get("format") != FORMAT:
            raise ValueError(f"{self.directory}: unknown store format {meta.get('format')!r}")
        self.meta = meta
        self.shards = shard_paths(self.directory)
        self._files = [pq.ParquetFile(p) for p in self.shards]
        self.n_rows = sum(f.metadata.num_rows for f in self._files)
        if self.n_rows != meta["n_rows"]:
            raise ValueError(f"{self.directory}: {self.n_rows} rows on disk, the marker says {meta['n_rows']}")

    @property
    def samples_per_ray(self) -> int:
        return int(self.meta["layout"]["samples_per_ray"])

    @property
    def schema(self) -> pa.Schema:
        return self._files[0].schema_arrow

    def check_layout(self, layout: SampleLayout) -> None:
        """The student must lay out its intervals as the store did."""
        want, have = self.meta["layout"], layout.describe()
        same = (want["samples_per_ray"] == have["samples_per_ray"]
                and np.allclose(want["aabb"], have["aabb"]) and np.isclose(want["near"], have["near"])
                and (want["far"] == have["far"] or np.isclose(want["far"], have["far"])))
        if not same:
            raise ValueError(f"the student's sample layout {have} differs from the store's {want}")

    def record_batches(self, start: int = 0, batch_rows: int = 65536) -> Iterator[pa.RecordBatch]:
        """Record batches from row ``start`` on, in order, skipping whole row groups to get there."""
        offset = int(start)
        for f in self._files:
            rows = f.metadata.num_rows
            if offset >= rows:
                offset -= rows
                continue
            groups, skip = [], offset
            for g in range(f.metadata.num_row_groups):
                group_rows = f.metadata.row_group(g).num_rows
                if skip >= group_rows and not groups:
                    skip -= group_rows
                    continue
                groups.append(g)
            for rb in f.iter_batches(batch_size=batch_rows, row_groups=groups):
                if skip:
                    if skip >= rb.num_rows:
                        skip -= rb.num_rows
                        continue
                    rb, skip = rb.slice(skip), 0
                yield rb
            offset = 0

    def read(self, start: int, n: int) -> pa.Table:
        """Rows [start, start + n), wrapping around at the end (another epoch)."""
        parts, need, at = [], int(n), int(start) % self.n_rows
        while need > 0:
            for rb in self.record_batches(at, batch_rows=max(need, 1)):
                take = rb.slice(0, need)
                parts.append(take)
                need -= take.num_rows
                if need == 0:
                    break
            at = 0
        return pa.Table.from_batches(parts)

    def iter_torch(self, batch_rays: int) -> Iterator[dict[str, torch.Tensor]]:
        """One pass over the store as {column: tensor} batches of ``batch_rays`` rows (the last may be short)."""
        for start in range(0, self.n_rows, batch_rays):
            yield table_columns(self.read(start, min(batch_rays, self.n_rows - start)))


class StoreSource:
    """Batches from a store, in stored order; endless (the store repeats), resumable.

    With the batch size the store was written with, batch k is exactly the
    on-the-fly source's batch k. Rows are read sequentially, one row group at
    a time; only a resume seeks.
    """

    def __init__(self, directory: str | Path, layout: SampleLayout | None = None, device="cpu"):
        self.store = TeacherStore(directory)
        if layout is not None:
            self.store.check_layout(layout)
        self.layout = layout
        self.device = torch.device(device)
        self.rows = 0
        self._reset()

    def _reset(self) -> None:
        self._stream = self.store.record_batches(self.rows % self.store.n_rows)
        self._left: pa.RecordBatch | None = None

    def _take(self, n: int) -> pa.Table:
        parts, need = [], int(n)
        while need > 0:
            if self._left is None or self._left.num_rows == 0:
                self._left = next(self._stream, None)
                if self._left is None:  # the end of the store: another epoch
                    self._stream = self.store.record_batches(0)
                    continue
            take = self._left.slice(0, need)
            self._left = self._left.slice(take.num_rows)
            parts.append(take)
            need -= take.num_rows
        return pa.Table.from_batches(parts)

    def next(self, n: int) -> DistillBatch:
        table = self._take(int(n))
        self.rows += int(n)
        return columns_to_batch(table_columns(table), self.store.samples_per_ray, self.device)

    def state_dict(self) -> dict:
        return {"rows": self.rows}

    def load_state_dict(self, state: dict) -> None:
        self.rows = int(state["rows"])
        self._reset()


class DatasetShardSource:
    """Batches from a Ray Data dataset (shard) of a store, for Ray Train workers:
    :func:`..data.row_groups.stream` (store) streams the same rows as :class:`StoreSource`
    (in no guaranteed order across files unless the dataset preserves order)."""

    def __init__(self, dataset, samples_per_ray: int, batch_rays: int, device="cpu"):
        self.dataset, self.samples_per_ray, self.batch_rays = dataset, int(samples_per_ray), int(batch_rays)
        self.device = torch.device(device)
        self._batches = self._endless()

    def _endless(self):
        while True:
            for columns in self.dataset.iter_torch_batches(batch_size=self.batch_rays, drop_last=True):
                yield columns_to_batch(columns, self.samples_per_ray, self.device)

    def next(self, n: int) -> DistillBatch:
        return next(self._batches)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
