"""Frame sequences of a KITTI-360-style dataset (:mod:`..scenes.kitti360`) as a data module.

A sample is the input frame of a split line (``sequence frame side``) and the frames around it:
for every offset (frames ahead of the input) the input camera and then the other one of the
stereo pair, so index 0 is always the input view. With ``fisheyes`` the two side fisheyes follow,
resampled to a virtual pinhole (:mod:`..scenes.fisheye_resample`: the perspective K at the served
size, the fisheye's centre, its axes turned by ``fisheye_turn``) and taken ``fisheye_offset``
frames further ahead, as BTS takes them: for every offset, the input side's fisheye (image_02 for
side l, image_03 for r) and then the other. A line whose frames (fisheye frames included) lack a
pose is skipped, as KITTI-360's loaders do; a posed frame whose image is missing is an error.

Per sample: "images" [F,3,H,W] float32 in [0, 1] (resized to height x width), "intrinsics"
[F,3,3] scaled to that size, "cam_to_world" [F,4,4] (OpenCV camera axes: x right, y down, z
forward, in KITTI-360's world), "frame" (int), "sequence" (str), "side" (str). Intrinsics keep the
files' convention: pixel (i, j)'s centre is at (i, j). Evaluation items add "lidar" (paths of the
``lidar_sweeps`` sweeps from the input frame on) and "velo_to_world" [S,4,4].
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..scenes import fisheye_resample, kitti360
from ..scenes.limits import ReadLimits, reading

OTHER = {"image_00": "image_01", "image_01": "image_00"}
FISHEYE_OF = {"image_00": ("image_02", "image_03"), "image_01": ("image_03", "image_02")}  # input side's first


@dataclass(frozen=True)
class Item:
    """One split line that can be served: the input frame and where its sample's files are."""

    sequence: str
    frame: int
    side: str


def resize_intrinsics(k: np.ndarray, from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """K for an image resized from (W, H) to (W', H'), pixel centres at integer coordinates."""
    sx, sy = to_size[0] / from_size[0], to_size[1] / from_size[1]
    out = k.astype(np.float64).copy()
    out[0, 0], out[1, 1] = k[0, 0] * sx, k[1, 1] * sy
    out[0, 2], out[1, 2] = (k[0, 2] + 0.5) * sx - 0.5, (k[1, 2] + 0.5) * sy - 0.5
    return out


def _resize(image: np.ndarray, height: int, width: int) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
    if t.shape[-2:] != (height, width):
        t = torch.nn.functional.interpolate(t, size=(height, width), mode="bilinear", align_corners=False,
                                            antialias=True)
    return t[0].clamp(0, 1)


class SequenceData:
    """The data module of a KITTI-360-style folder. ``split_file``: a ``sequence frame side`` list
    (or ``sequences``: every posed frame of these sequences, both sides); ``eval_split_file``
    gives :meth:`eval_items` (default: the split file). ``offsets``: frames ahead of the input
    (0 first); ``frames_per_sample`` = 2 x len(offsets), doubled with ``fisheyes``."""

    def __init__(self, root, split_file=None, sequences: Sequence[str] | None = None, offsets=(0, 1),
                 height: int = 64, width: int = 192, eval_split_file=None, lidar_sweeps: int = 20,
                 limits: ReadLimits | None = None, fisheyes: bool = False, fisheye_offset: int = 10,
                 fisheye_turn=fisheye_resample.BTS_TURN):
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(self.root, "dataset folder not found")
        if (split_file is None) == (sequences is None):
            raise InputError(self.root, "give either a split file or a list of sequences")
        offsets = tuple(int(o) for o in offsets)
        if not offsets or offsets[0] != 0 or any(o < 0 for o in offsets):
            raise InputError("scene.offsets", f"must start with 0 and be >= 0, got {list(offsets)}")
        for key, value in (("height", height), ("width", width), ("lidar_sweeps", lidar_sweeps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"scene.{key}", f"must be a positive integer, got {value!r}")
        if not isinstance(fisheyes, bool):
            raise InputError("scene.fisheyes", f"must be true or false, got {fisheyes!r}")
        if isinstance(fisheye_offset, bool) or not isinstance(fisheye_offset, int) or fisheye_offset < 0:
            raise InputError("scene.fisheye_offset", f"must be an integer >= 0, got {fisheye_offset!r}")
        try:
            fisheye_turn = tuple(float(a) for a in fisheye_turn)
        except (TypeError, ValueError):
            fisheye_turn = ()
        if len(fisheye_turn) != 2:
            raise InputError("scene.fisheye_turn", "must be two angles in degrees (yaw, pitch)")
        self.fisheyes, self.fisheye_offset, self.fisheye_turn = fisheyes, fisheye_offset, fisheye_turn
        self.split_file = Path(split_file) if split_file is not None else None
        self.eval_split_file = Path(eval_split_file) if eval_split_file is not None else self.split_file
        self.sequence_names = list(sequences) if sequences is not None else None
        self.offsets, self.height, self.width, self.lidar_sweeps = offsets, height, width, lidar_sweeps
        self.limits = limits or ReadLimits()
        with reading(self.limits):
            self.calib = kitti360.read_calibration(self.root, fisheyes=fisheyes)
        self._grids: dict[str, tuple] = {}  # fisheye -> (grid, valid) of its virtual pinhole
        self._poses: dict[str, dict[int, np.ndarray]] = {}
        self.skipped = 0  # split lines left out for lack of a pose

    @property
    def frames_per_sample(self) -> int:
        return 2 * len(self.offsets) * (2 if self.fisheyes else 1)

    def frame_offsets(self) -> list[int]:
        """Every frame ahead of the input that a sample reads (a pose is needed for each)."""
        ahead = list(self.offsets)
        if self.fisheyes:
            ahead += [self.fisheye_offset + o for o in self.offsets]
        return ahead

    def poses(self, sequence: str, source="") -> dict[int, np.ndarray]:
        if sequence not in self._poses:
            with reading(self.limits):
                self._poses[sequence] = kitti360.read_sequence_poses(self.root, sequence, source)
        return self._poses[sequence]

    def _items(self, split_file: Path | None) -> list[Item]:
        if split_file is None:
            rows = [(s, f, side) for s in self.sequence_names for f in self.poses(s) for side in kitti360.SIDES]
            source = self.root
        else:
            with reading(self.limits):
                rows = kitti360.read_split(split_file)
            source = split_file
        items, skipped = [], 0
        for sequence, frame, side in rows:
            poses = self.poses(sequence, source)
            if all(frame + o in poses for o in self.frame_offsets()):
                items.append(Item(sequence, frame, side))
            else:
                skipped += 1
        self.skipped = skipped
        if not items:
            raise InputError(source, "no frame of the split has a pose for all its offsets")
        return items

    @cached_property
    def train(self) -> list[Item]:
        return self._items(self.split_file)

    @cached_property
    def evaluation(self) -> list[Item]:
        return self._items(self.eval_split_file)

    # --- one sample ------------------------------------------------------------------------

    def views(self, item: Item) -> list[tuple[str, int]]:
        """(camera, frame) of each of the sample's F images, the input view first."""
        first = kitti360.SIDES[item.side]
        views = [(cam, item.frame + o) for o in self.offsets for cam in (first, OTHER[first])]
        if self.fisheyes:
            views += [(cam, item.frame + self.fisheye_offset + o) for o in self.offsets for cam in FISHEYE_OF[first]]
        return views

    def virtual_intrinsics(self) -> np.ndarray:
        """K of the resampled fisheyes: the perspective camera's at the served size (BTS's choice)."""
        return resize_intrinsics(self.calib.intrinsics("image_00"), self.calib.size, (self.width, self.height))

    def _fisheye_view(self, item: Item, cam: str, frame: int, source) -> tuple:
        mei = self.calib.fisheyes[cam]
        rgb = kitti360.read_image(self.root, item.sequence, cam, frame, source)
        if rgb.shape[:2] != (mei.height, mei.width):
            path = kitti360.resolve(self.root, kitti360.image_name(item.sequence, cam, frame), source)
            raise InputError(path, f"fisheye image is {rgb.shape[1]}x{rgb.shape[0]}, its calibration says "
                                   f"{mei.width}x{mei.height}")
        rotation = fisheye_resample.virtual_rotation(cam, self.fisheye_turn)
        if cam not in self._grids:
            self._grids[cam] = fisheye_resample.fisheye_grid(mei, self.virtual_intrinsics(), self.width,
                                                             self.height, rotation)
        image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)
        c2w = fisheye_resample.virtual_cam_to_world(
            kitti360.cam_to_world(self.calib, self.poses(item.sequence)[frame], cam), rotation)
        return fisheye_resample.resample(image, *self._grids[cam]).clamp(0, 1), self.virtual_intrinsics(), c2w

    def sample(self, item: Item) -> dict:
        source = self.split_file or self.root
        poses = self.poses(item.sequence)
        images, ks, c2ws = [], [], []
        with reading(self.limits):
            for cam, frame in self.views(item):
                if cam in kitti360.FISHEYES:
                    image, k, c2w = self._fisheye_view(item, cam, frame, source)
                    images.append(image)
                    ks.append(k)
                    c2ws.append(c2w)
                    continue
                rgb = kitti360.read_image(self.root, item.sequence, cam, frame, source)
                images.append(_resize(rgb, self.height, self.width))
                size = (rgb.shape[1], rgb.shape[0])
                ks.append(resize_intrinsics(self.calib.intrinsics(cam), size, (self.width, self.height)))
                c2ws.append(kitti360.cam_to_world(self.calib, poses[frame], cam))
        return {"images": torch.stack(images).float(),
                "intrinsics": torch.from_numpy(np.stack(ks)).float(),
                "cam_to_world": torch.from_numpy(np.stack(c2ws)).float(),
                "frame": item.frame, "sequence": item.sequence, "side": item.side}

    def eval_sample(self, item: Item) -> dict:
        out = self.sample(item)
        poses = self.poses(item.sequence)
        frames = [f for f in range(item.frame, item.frame + self.lidar_sweeps) if f in poses]
        with reading(self.limits):  # scene.allow_outside_paths holds for the sweeps too
            out["lidar"] = [str(kitti360.resolve(self.root, kitti360.velodyne_name(item.sequence, f), self.root))
                            for f in frames]
        out["velo_to_world"] = torch.from_numpy(np.stack([kitti360.velo_to_world(self.calib, poses[f])
                                                          for f in frames])).float()
        return out

    # --- the DataModule protocol --------------------------------------------------------------

    def shard(self, rank: int, world: int) -> list[Item]:
        """This rank's items: every ``world``-th, from ``rank`` (disjoint, together all)."""
        if not (0 <= rank < world):
            raise ValueError(f"rank {rank} outside a world of {world}")
        return self.train[rank::world]

    def train_batches(self, rank: int, world: int, batch_size: int, seed: int) -> Iterator[dict]:
        """Endless batches of this rank's shard, reshuffled every pass (seeded by seed and pass)."""
        items = self.shard(rank, world)
        if len(items) < batch_size:
            raise InputError(self.split_file or self.root, f"rank {rank} of {world} has {len(items)} training "
                                                           f"items, fewer than a batch of {batch_size}")
        epoch = 0
        while True:
            order = np.random.default_rng([seed, rank, epoch]).permutation(len(items))
            for start in range(0, len(order) - batch_size + 1, batch_size):  # the last partial batch waits
                chosen = [items[i] for i in order[start:start + batch_size]]
                yield collate([self.sample(item) for item in chosen])
            epoch += 1

    def eval_items(self) -> Sequence[dict]:
        return LazyItems(self)

    def descriptors(self, split: str = "train") -> list[dict]:
        items = self.train if split == "train" else self.evaluation
        return [{"sequence": i.sequence, "frame": i.frame, "side": i.side} for i in items]

    def ray_dataset(self, split: str = "train"):
        """Rows are (sequence, frame, side); images are read in ``map_batches``, never all at once."""
        import ray

        loader = _Loader(self.config())
        return ray.data.from_items(self.descriptors(split)).map_batches(loader, batch_format="numpy",
                                                                        batch_size=4)

    def config(self) -> dict:
        """What rebuilds this module in another process."""
        return {"root": str(self.root), "split_file": None if self.split_file is None else str(self.split_file),
                "sequences": self.sequence_names, "offsets": list(self.offsets), "height": self.height,
                "width": self.width, "lidar_sweeps": self.lidar_sweeps, "limits": self.limits,
                "fisheyes": self.fisheyes, "fisheye_offset": self.fisheye_offset,
                "fisheye_turn": list(self.fisheye_turn)}


class LazyItems(Sequence):
    """The evaluation items, each read when it is asked for."""

    def __init__(self, data: SequenceData):
        self.data, self.items = data, data.evaluation

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return self.data.eval_sample(self.items[index])


class _Loader:
    """``map_batches`` function: descriptors in, stacked samples out (numpy)."""

    def __init__(self, config: dict):
        self.config = config
        self.data = None

    def __call__(self, batch: dict) -> dict:
        if self.data is None:
            self.data = SequenceData(**self.config)
        samples = [self.data.sample(Item(str(s), int(f), str(side)))
                   for s, f, side in zip(batch["sequence"], batch["frame"], batch["side"])]
        out = collate(samples)
        return {key: (value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value))
                for key, value in out.items()}


def collate(samples: list[dict]) -> dict:
    """Stack tensors on a new dim 0; other values become lists."""
    out = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        out[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return out


def lidar_points_world(item: dict) -> list[np.ndarray]:
    """Each sweep of an evaluation item as (N, 3) world points (float64)."""
    out = []
    for path, m in zip(item["lidar"], item["velo_to_world"]):
        points = kitti360.read_velodyne(Path(path))[:, :3].astype(np.float64)
        m = np.asarray(m, dtype=np.float64)
        out.append(points @ m[:3, :3].T + m[:3, 3])
    return out

