"""A data module of multi-view samples joined with their pseudo-labels (a KD-MVS student's data).

    data = LabelledViews(MultiViewData.from_config(scene_cfg, "train"), labels_root)
    batch = next(data.train_batches(rank, world, batch_size, seed))
    batch["label_mu"], batch["label_sigma"], batch["label_mask"]      # [B,H,W]

Only samples whose (scan, view) has a label file with some coverage take part; every lighting
of a view shares that view's labels. The labels must have the samples' size (the label job
ran on the same ``scene.height``/``scene.width``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ...errors import InputError
from .label_job import load_npz, read_manifest

LABEL_KEYS = ("label_mu", "label_sigma", "label_mask")


def with_labels(item: dict, path: Path) -> dict:
    found = load_npz(path)
    mask = found["mask"].astype(bool)
    if mask.shape != item["images"].shape[-2:]:
        raise InputError(path, f"labels are {mask.shape[1]}x{mask.shape[0]}, the samples "
                               f"{item['images'].shape[-1]}x{item['images'].shape[-2]}: relabel at this size")
    return {**item, "label_mu": found["mu"].astype(np.float32), "label_sigma": found["sigma"].astype(np.float32),
            "label_mask": mask}


def load_labelled_batch(batch: dict, spec, root: str) -> dict:
    """Ray ``map_batches`` function: descriptor columns (with ``label_file``) -> labelled samples."""
    from ...data.multiview import load_item

    items = []
    for i in range(len(batch["view"])):
        desc = {"scan": batch["scan"][i], "view": batch["view"][i],
                "sources": np.asarray(batch["sources"][i]).tolist(), "light": batch["light"][i]}
        items.append(with_labels(load_item(spec, desc), Path(root) / str(batch["label_file"][i])))
    return {k: (np.array([it[k] for it in items], dtype=object) if isinstance(items[0][k], str)
                else np.stack([it[k] for it in items])) for k in items[0]}


class LabelledViews:
    """``data`` (a MultiViewData of the training split) with the labels under ``labels_root``."""

    def __init__(self, data, labels_root):
        self.data, self.root = data, Path(labels_root)
        manifest = read_manifest(self.root)
        self.files = {(e["scan"], int(e["view"])): self.root / e["file"] for e in manifest["views"]
                      if float(e.get("coverage", 0.0)) > 0}
        self.index = [i for i, d in enumerate(data.descriptors) if (d["scan"], int(d["view"])) in self.files]
        if not self.index:
            raise InputError(self.root / "manifest.json", "no training view has labels (coverage 0 everywhere): "
                                                          "loosen kdmvs.labels thresholds or train the teacher longer")

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, k: int) -> dict:
        i = self.index[k]
        desc = self.data.descriptors[i]
        return with_labels(self.data[i], self.files[(desc["scan"], int(desc["view"]))])

    def train_batches(self, rank: int, world: int, batch_size: int, seed: int) -> Iterator[dict]:
        """Endless batches of this rank's disjoint shard, reshuffled each pass (as MultiViewData's)."""
        from ...data.multiview import collate

        if world < 1 or not 0 <= rank < world or batch_size < 1:
            raise InputError("train_batches", f"need 0 <= rank < world and batch_size >= 1, got rank={rank}, "
                                              f"world={world}, batch_size={batch_size}")
        shard = np.random.default_rng(seed).permutation(len(self))[rank::world].tolist()
        if not shard:
            raise InputError("train_batches", f"{len(self)} labelled samples leave rank {rank} of {world} none")
        epoch, queue = 0, []
        while True:
            while len(queue) < batch_size:
                queue += np.random.default_rng([seed, rank, epoch]).permutation(shard).tolist()
                epoch += 1
            picked, queue = queue[:batch_size], queue[batch_size:]
            yield collate([self[k] for k in picked])

    def eval_items(self):
        return self.data.eval_items()

    def ray_dataset(self, split: str = "train"):
        """Rows of labelled descriptors, read lazily in ``map_batches`` (training split only)."""
        import ray

        if split != self.data.split:
            raise InputError("split", f"labels exist for the {self.data.split} split only, not {split!r}")
        rows = [{**self.data.descriptors[i],
                 "label_file": str(self.files[(self.data.descriptors[i]["scan"],
                                               int(self.data.descriptors[i]["view"]))].relative_to(self.root))}
                for i in self.index]
        return ray.data.from_items(rows).map_batches(load_labelled_batch, fn_kwargs={"spec": self.data.spec,
                                                                                      "root": str(self.root)},
                                                     batch_size=1, batch_format="numpy")
