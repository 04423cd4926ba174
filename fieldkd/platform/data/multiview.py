"""Multi-view stereo samples of a DTU-format dataset: a reference view and its best source views.

One sample (numpy, float32 unless said)::

    images       [V, 3, H, W] in [0, 1]; V = 1 + n_src, index 0 the reference view
    intrinsics   [V, 3, 3], for the H x W returned; extrinsics [V, 4, 4] world -> camera (OpenCV)
    depth_min, depth_max   scalars: the reference camera file's range
    depth [H, W] (0 = none), mask [H, W] bool     when the dataset has depth maps
    scan (str), view (int), source_views [V-1] int64, light (int; -1 in the test layout)

The source views are the first ``n_src`` of the reference's pair.txt line. Images are resized to
``height`` x ``width`` (bilinear, antialiased; intrinsics follow with pixel centres at integers),
depth and mask by nearest neighbour. :meth:`MultiViewData.train_batches` stacks samples on a leading
batch dimension as torch tensors (``scan``: a list of str).

Nothing is read until a sample is asked for: the module holds small descriptors (scan, view,
sources, light), and each sample's files are read within the :class:`ReadLimits` given (per sample).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..scenes import dtu
from ..scenes.limits import ReadLimits, reading
from ..scenes.mvs_cams import DEFAULT_DEPTH_NUM, resized_intrinsics
from ..scenes.paths import dataset_root

SPLITS = ("train", "val", "test")
EVAL_LIGHT = 3  # the lighting of DTU's test images, used where one light is wanted
ASPECT_TOLERANCE = 0.01  # a depth map covers its image's frame when their aspect ratios agree this well


@dataclass(frozen=True)
class LoadSpec:
    """What loading a descriptor needs (small, picklable: it travels to Ray workers)."""

    root: str
    layouts: tuple[tuple[str, str], ...]  # (scan, layout)
    height: int | None
    width: int | None
    depth_num: int = DEFAULT_DEPTH_NUM
    limits: ReadLimits = field(default_factory=ReadLimits)

    def layout(self, scan: str) -> str:
        return dict(self.layouts)[scan]


def _resize(values: np.ndarray, height: int, width: int, mode: str) -> np.ndarray:
    """(C, h, w) -> (C, height, width) float32 by torch's interpolation."""
    import torch

    if values.shape[1:] == (height, width):
        return values.astype(np.float32, copy=False)
    x = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))[None]
    kwargs = {"align_corners": False, "antialias": True} if mode == "bilinear" else {}
    return torch.nn.functional.interpolate(x, size=(height, width), mode=mode, **kwargs)[0].numpy()


def load_item(spec: LoadSpec, desc: dict) -> dict:
    """The sample of descriptor ``desc`` ({scan, view, sources, light})."""
    scan_name = str(desc["scan"])
    light = int(desc["light"])
    with reading(spec.limits):
        scan = dtu.open_scan(spec.root, scan_name, spec.layout(scan_name))
        views = [int(desc["view"]), *(int(v) for v in desc["sources"])]
        read = [dtu.read_view(scan, v, light if light >= 0 else None, spec.depth_num, with_depth=(i == 0))
                for i, v in enumerate(views)]
    ref = read[0]
    height = spec.height or ref.image.shape[0]
    width = spec.width or ref.image.shape[1]
    images, ks = [], []
    for view in read:
        h, w = view.image.shape[:2]
        images.append(_resize(view.image.transpose(2, 0, 1), height, width, "bilinear"))
        ks.append(resized_intrinsics(view.intrinsic, width / w, height / h))
    item = {
        "images": np.clip(np.stack(images), 0.0, 1.0).astype(np.float32),
        "intrinsics": np.stack(ks).astype(np.float32),
        "extrinsics": np.stack([v.extrinsic for v in read]).astype(np.float32),
        "depth_min": np.float32(ref.depth_min),
        "depth_max": np.float32(ref.depth_max),
        "scan": scan_name,
        "view": views[0],
        "source_views": np.asarray(views[1:], dtype=np.int64),
        "light": light,
    }
    if ref.depth is not None:
        h, w = ref.depth.shape
        ih, iw = ref.image.shape[:2]
        if abs(h / w - ih / iw) > ASPECT_TOLERANCE * ih / iw:
            raise InputError(scan.depth_path(views[0]), f"depth map is {w}x{h}, which does not cover its "
                                                        f"{iw}x{ih} image's frame (another aspect ratio)")
        mask = _resize(ref.mask[None].astype(np.float32), height, width, "nearest-exact")[0] > 0.5
        depth = _resize(ref.depth[None], height, width, "nearest-exact")[0]
        item["depth"] = np.where(mask, depth, 0.0).astype(np.float32)
        item["mask"] = mask
    return item


def collate(items: list[dict]) -> dict:
    """Samples stacked on a leading batch dimension: torch tensors, and lists for strings."""
    import torch

    out = {}
    for key in items[0]:
        values = [item[key] for item in items]
        out[key] = list(values) if isinstance(values[0], str) else torch.as_tensor(np.stack(values))
    return out


def load_batch(batch: dict, spec: LoadSpec) -> dict:
    """Ray ``map_batches`` function: a batch of descriptor columns -> a batch of sample columns."""
    n = len(batch["view"])
    items = [load_item(spec, {"scan": batch["scan"][i], "view": batch["view"][i],
                              "sources": np.asarray(batch["sources"][i]).tolist(), "light": batch["light"][i]})
             for i in range(n)]
    out = {}
    for key in items[0]:
        values = [item[key] for item in items]
        out[key] = np.array(values, dtype=object) if isinstance(values[0], str) else np.stack(values)
    return out


class Items(Sequence):
    """A lazy sequence of samples: each is read when indexed."""

    def __init__(self, spec: LoadSpec, descriptors: list[dict]):
        self.spec, self.descriptors = spec, descriptors

    def __len__(self) -> int:
        return len(self.descriptors)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Items(self.spec, self.descriptors[index])
        return load_item(self.spec, self.descriptors[index])


class MultiViewData(Items):
    """The samples of ``split`` of a DTU-format dataset (see the module docstring).

    ``root``: the dataset folder (None: the bundled procedural one). ``scans``: names (``scanN`` or N;
    None: ``lists/{split}.txt``). ``layout``: None takes the layout that holds each scan (the
    training layout first, the test layout first for ``split="test"``). ``light``: training-layout
    lighting; None makes every lighting its own sample. ``height``/``width``: the sample size (None:
    as stored). ``depth_num``: the planes a two-value depth line spans.
    """

    def __init__(self, root=None, scans=None, split: str = "train", n_src: int = 4, height: int | None = None,
                 width: int | None = None, light: int | None = None, layout: str | None = None,
                 depth_num: int = DEFAULT_DEPTH_NUM, limits: ReadLimits | None = None):
        if split not in SPLITS:
            raise InputError("split", f"unknown split {split!r} (known: {', '.join(SPLITS)})")
        for key, value, low in (("n_src", n_src, 1), ("depth_num", depth_num, 1), ("height", height, 1),
                                ("width", width, 1), ("light", light, 0)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise InputError(f"scene.{key}", f"must be an integer >= {low}, got {value!r}")
        if root is None:
            from ..scenes.dtu_generator import default_mvs_dir

            root = default_mvs_dir()
        self.root = dataset_root(root)
        self.split, self.n_src, self.light = split, n_src, light
        self.options = {"n_src": n_src, "height": height, "width": width, "light": light, "layout": layout,
                        "depth_num": depth_num, "limits": limits}
        self.limits = limits or ReadLimits()
        with reading(self.limits):
            names = [dtu.scan_name(s) for s in scans] if scans is not None else dtu.list_scans(self.root, split)
            if not names:
                raise InputError(f"scene.{split}_scans", "names no scan")
            prefer = "test" if split == "test" else "train"
            self.scans = {name: dtu.open_scan(self.root, name, layout, prefer) for name in names}
            descriptors = []
            for scan in self.scans.values():
                lights = self._lights(scan)
                scan.check(lights)
                descriptors += self._descriptors(scan, lights)
        spec = LoadSpec(str(self.root), tuple((n, s.layout) for n, s in self.scans.items()), height, width,
                        depth_num, self.limits)
        super().__init__(spec, descriptors)

    @classmethod
    def from_config(cls, scene: dict, split: str = "train") -> MultiViewData:
        """The module a ``scene`` config section (conf/scene/dtu.yaml) describes, for ``split``."""
        return cls(scene.get("path"), scene.get(f"{split}_scans"), split, n_src=scene.get("n_src", 4),
                   height=scene.get("height"), width=scene.get("width"), light=scene.get("light"),
                   depth_num=scene.get("depth_num", DEFAULT_DEPTH_NUM), limits=ReadLimits.from_config(scene))

    def with_sources(self, n_src: int) -> MultiViewData:
        """The same scans, split and sizes with ``n_src`` source views per sample (self if unchanged)."""
        if n_src == self.n_src:
            return self
        return MultiViewData(self.root, list(self.scans), self.split, **{**self.options, "n_src": n_src})

    def _lights(self, scan: dtu.Scan) -> list[int]:
        if scan.layout == "test":
            return []
        if self.light is not None:
            return [self.light]
        found = scan.lights()
        if not found:
            raise InputError(scan.pair_path, f"names view {scan.views[0]}, which has no image "
                                             f"Rectified/{scan.name}_train/rect_{scan.views[0] + 1:03d}_*_r5000.png")
        return found

    def _descriptors(self, scan: dtu.Scan, lights: list[int]) -> list[dict]:
        out = []
        for view, pairs in scan.pairs.items():
            if len(pairs) < self.n_src:
                raise InputError(scan.pair_path, f"view {view} has {len(pairs)} source views, fewer than "
                                                 f"n_src={self.n_src}")
            sources = [src for src, _ in pairs[:self.n_src]]
            out += [{"scan": scan.name, "view": view, "sources": sources, "light": light} for light in lights or [-1]]
        return out

    # --- the data-module methods ---------------------------------------------

    def train_batches(self, rank: int, world: int, batch_size: int, seed: int) -> Iterator[dict]:
        """Endless batches of this rank's shard: a seeded permutation of all samples (the same on every
        rank) cut into ``world`` disjoint strides; each pass over the shard is reshuffled."""
        if world < 1 or not 0 <= rank < world or batch_size < 1:
            raise InputError("train_batches", f"need 0 <= rank < world and batch_size >= 1, got rank={rank}, "
                                              f"world={world}, batch_size={batch_size}")
        shard = self.shard(rank, world, seed)
        if not shard:
            raise InputError("train_batches", f"{len(self)} samples leave rank {rank} of {world} none")
        return self._batches(shard, rank, batch_size, seed)

    def shard(self, rank: int, world: int, seed: int) -> list[int]:
        """The sample indices of ``rank`` (disjoint across ranks, together all of them)."""
        return np.random.default_rng(seed).permutation(len(self))[rank::world].tolist()

    def _batches(self, shard: list[int], rank: int, batch_size: int, seed: int) -> Iterator[dict]:
        epoch, queue = 0, []
        while True:
            while len(queue) < batch_size:
                queue += np.random.default_rng([seed, rank, epoch]).permutation(shard).tolist()
                epoch += 1
            picked, queue = queue[:batch_size], queue[batch_size:]
            yield collate([self[i] for i in picked])

    def eval_items(self) -> Items:
        """One sample per (scan, view) (lighting :data:`EVAL_LIGHT` where there are several), lazily read."""
        keep, seen = [], set()
        for desc in sorted(self.descriptors, key=lambda d: (d["light"] != EVAL_LIGHT, d["light"])):
            key = (desc["scan"], desc["view"])
            if key not in seen:
                seen.add(key)
                keep.append(desc)
        order = {(d["scan"], d["view"]): i for i, d in enumerate(self.descriptors)}
        return Items(self.spec, sorted(keep, key=lambda d: order[(d["scan"], d["view"])]))

    def ray_dataset(self, split: str = "train"):
        """A Ray Dataset of ``split``'s samples: rows of descriptors, read lazily in ``map_batches``."""
        import ray

        data = self if split == self.split else MultiViewData(self.root, None, split, **self.options)
        if not len(data):
            raise InputError(f"scene.{split}_scans", "no samples")
        ds = ray.data.from_items(data.descriptors)
        return ds.map_batches(load_batch, fn_kwargs={"spec": data.spec}, batch_size=1, batch_format="numpy")

    def gt_points(self, scan: str) -> tuple[np.ndarray, np.ndarray | None]:
        """Scan ``scan``'s ground-truth cloud (``Points/stl``): (points (N, 3), colours (N, 3) or None)."""
        with reading(self.limits):
            return dtu.read_gt_points(self.root, scan)
