"""A scene's rays as a data module: the input of per-scene fields on Ray Train workers.

One process draws random pixels of the split it holds in memory (:class:`..train.photometric.
PixelSampler`); Ray Train workers instead stream the split's rays from Parquet shards, written once
per stage. Every pixel of a split becomes one row: ray origin, unit direction, the factor from
distance to camera z, and the pixel's colour. Rows are shuffled once with a seed when written, so
that workers reading contiguous shards still see a mix of views. Columns are plain float32 scalars:
they stream through Ray Data and arrive in a worker as ready-made tensors.

:func:`.row_groups.stream` reads any such shard set lazily (the rays here, a teacher-sample store):
row groups are read as the workers ask for them, never the whole set at once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ..atomic import atomic_path, write_bytes
from ..scenes.cameras import Rays
from ..scenes.scene import SceneSplit

COLUMNS = ("ox", "oy", "oz", "dx", "dy", "dz", "z_scale", "r", "g", "b")
SCHEMA = pa.schema([(name, pa.float32()) for name in COLUMNS])
ROW_GROUP_ROWS = 16384  # a few hundred KiB per group: small enough to stream, large enough to scan fast
DONE = "_COMPLETE"
LOCAL_SHUFFLE_ROWS = 8192  # rows a worker mixes as it reads (on top of the shuffle when written)


def split_rows(split: SceneSplit) -> np.ndarray:
    """(n_pixels, 10) float32: every ray of the split with its colour (only the pixels that the
    split's training masks keep, where it has masks)."""
    rows = []
    for i in range(len(split)):
        rays = split.cameras.image_rays(i)
        colors = split.images[i].reshape(-1, 3)
        row = torch.cat([rays.origins, rays.directions, rays.z_scale[:, None], colors], dim=1)
        rows.append(row if split.masks is None else row[split.masks[i].reshape(-1) > 0.5])
    return torch.cat(rows).numpy().astype(np.float32)


def write_ray_shards(split: SceneSplit, directory: str | Path, rows_per_shard: int = 131072,
                     seed: int = 0) -> Path:
    """Write the split's rays once; an existing complete set is reused."""
    directory = Path(directory)
    if (directory / DONE).exists():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    rows = split_rows(split)
    rows = rows[np.random.default_rng(seed).permutation(len(rows))]
    for index, start in enumerate(range(0, len(rows), rows_per_shard)):
        chunk = rows[start:start + rows_per_shard]
        table = pa.Table.from_arrays([pa.array(chunk[:, j]) for j in range(len(COLUMNS))], schema=SCHEMA)
        with atomic_path(directory / f"shard-{index:05d}.parquet") as tmp:
            pq.write_table(table, tmp, row_group_size=ROW_GROUP_ROWS)
    write_bytes(directory / DONE, b"")  # readers never see half a set
    return directory


def batch_to_rays(batch: dict[str, torch.Tensor], device: torch.device) -> tuple[Rays, torch.Tensor]:
    col = {k: v.to(device, torch.float32) for k, v in batch.items()}
    origins = torch.stack([col["ox"], col["oy"], col["oz"]], dim=-1)
    directions = torch.stack([col["dx"], col["dy"], col["dz"]], dim=-1)
    colors = torch.stack([col["r"], col["g"], col["b"]], dim=-1)
    return Rays(origins, directions, col["z_scale"]), colors


class ShardRays:
    """A worker's endless stream of ray batches from its Ray Data shard."""

    def __init__(self, shard, batch_rays: int, device: torch.device):
        self.shard, self.batch_rays, self.device = shard, batch_rays, device
        self.batches = self._endless()

    def _endless(self):
        while True:
            for batch in self.shard.iter_torch_batches(batch_size=self.batch_rays, drop_last=True,
                                                       local_shuffle_buffer_size=LOCAL_SHUFFLE_ROWS):
                yield batch_to_rays(batch, self.device)

    def sample(self, n_rays: int):
        return next(self.batches)
