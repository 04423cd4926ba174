"""DTU in MVSNet's format: a dataset of scans, each seen by the same 49 cameras.

Two layouts, which may share one dataset folder (ours do):

training layout (MVSNet's ``dtu_training``)::

    Cameras/train/{id:08d}_cam.txt          one set of cameras for every scan; intrinsics for images
                                            a quarter of the size of the Rectified ones (160 x 128
                                            for 640 x 512), as MVSNet ships them
    Cameras/pair.txt
    Rectified/scanN_train/rect_{id+1:03d}_{light}_r5000.png    lights 0-6
    Depths/scanN_train/depth_map_{id:04d}.pfm                  optional (whole folder)
    Depths/scanN_train/depth_visual_{id:04d}.png               mask: > 10 of 255 is valid

test layout (MVSNet's ``dtu`` test folder)::

    scanN/images/{id:08d}.jpg (or .png)
    scanN/cams/{id:08d}_cam.txt             intrinsics for the images as stored
    scanN/pair.txt

and for evaluation ``Points/stl/stl{N:03d}_total.ply`` (the structured-light ground truth).
The scans of a split are listed one per line in ``lists/{split}.txt`` (``scan1``), as
CasMVSNet ships them, unless a config names them.

Every file name goes through :func:`paths.inside`, and reads count against the limits of
:mod:`limits`. Cameras are :class:`mvs_cams.MVSCamera` (OpenCV world -> camera, pixel centres
at integer coordinates); depths are in the cameras' units (millimetres for DTU).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from . import images
from .mvs_cams import (
    MVSCamera,
    Pairs,
    read_cam,
    read_pair,
    read_text,
    scaled_intrinsics,
)
from .paths import dataset_root, inside
from .pfm import read_pfm
from .ply import read_points

LAYOUTS = ("train", "test")
TRAIN_CAM_SCALE = 4  # training-layout intrinsics describe images of 1/4 the Rectified size
MASK_THRESHOLD = 10 / 255  # depth_visual pixels above this are valid (as CasMVSNet reads them)
TEST_IMAGE_SUFFIXES = (".jpg", ".png", ".jpeg")
SCAN_NAME = re.compile(r"^scan(\d+)$")


def scan_name(item) -> str:
    """``scanN`` from ``scanN``, ``N`` or the int N; InputError for anything else."""
    text = str(item).strip()
    if text.isdigit():
        text = f"scan{int(text)}"
    if isinstance(item, bool) or not SCAN_NAME.match(text):
        raise InputError("scans", f"a DTU scan is named scanN (or N), got {item!r}")
    return text


def scan_number(name: str) -> int:
    return int(SCAN_NAME.match(scan_name(name)).group(1))


def list_scans(root, split: str) -> list[str]:
    """The scans of ``split`` from ``lists/{split}.txt`` in the dataset folder."""
    root = dataset_root(root)
    path = inside(root, f"lists/{split}.txt", root, "scan list")
    if not path.is_file():
        raise InputError(path, f"scan list not found (one scanN per line; or name the {split} scans in the "
                               f"config)")
    names = []
    for i, line in enumerate(read_text(path, "scan list").splitlines()):
        word = line.split("#")[0].strip()
        if word:
            try:
                names.append(scan_name(word))
            except InputError:
                raise InputError(path, f"line {i + 1}: a DTU scan is named scanN, got {word!r}") from None
    if not names:
        raise InputError(path, "scan list names no scan")
    return names


@dataclass(frozen=True)
class Scan:
    """One scan of a dataset in one layout: where its files are, and its view pairs."""

    root: Path
    name: str
    layout: str  # "train" | "test"
    pairs: Pairs
    pair_path: Path

    @property
    def views(self) -> list[int]:
        return list(self.pairs)

    def _path(self, relative: str, what: str) -> Path:
        return inside(self.root, relative, self.pair_path, what)

    def cam_path(self, view: int) -> Path:
        if self.layout == "train":
            return self._path(f"Cameras/train/{view:08d}_cam.txt", "camera file")
        return self._path(f"{self.name}/cams/{view:08d}_cam.txt", "camera file")

    def image_path(self, view: int, light: int | None = None) -> Path:
        if self.layout == "train":
            if light is None:
                raise ValueError("training-layout images need a light")
            return self._path(f"Rectified/{self.name}_train/rect_{view + 1:03d}_{light}_r5000.png", "image")
        stems = [self._path(f"{self.name}/images/{view:08d}{suffix}", "image") for suffix in TEST_IMAGE_SUFFIXES]
        return next((p for p in stems if p.is_file()), stems[0])

    @property
    def has_depths(self) -> bool:
        return self.layout == "train" and self._path(f"Depths/{self.name}_train", "depth folder").is_dir()

    def depth_path(self, view: int) -> Path:
        return self._path(f"Depths/{self.name}_train/depth_map_{view:04d}.pfm", "depth map")

    def mask_path(self, view: int) -> Path:
        return self._path(f"Depths/{self.name}_train/depth_visual_{view:04d}.png", "mask")

    def lights(self) -> list[int]:
        """The lights of the first view's images (training layout); [] for the test layout."""
        if self.layout != "train" or not self.pairs:
            return []
        return [light for light in range(10) if self.image_path(self.views[0], light).is_file()]

    def camera(self, view: int) -> MVSCamera:
        """The camera file as written (training layout: intrinsics of the quarter-size images)."""
        return read_cam(self.cam_path(view), referrer=self.pair_path.name)

    def check(self, lights: list[int] | None = None) -> None:
        """Every view that pair.txt names has a camera file and an image (per light): InputError
        naming pair.txt and the first missing file."""
        for view in self.views:
            needed = [self.cam_path(view)]
            needed += [self.image_path(view, light) for light in lights] if self.layout == "train" and lights \
                else ([self.image_path(view)] if self.layout == "test" else [])
            for path in needed:
                if not path.is_file():
                    raise InputError(self.pair_path, f"names view {view}, whose file "
                                                     f"{path.relative_to(self.root)} is missing")


def detect_layout(root: Path, name: str, prefer: str = "train") -> str:
    """The layout that holds scan ``name``: ``prefer`` when both do; InputError when neither does."""
    found = []
    if inside(root, f"Rectified/{name}_train", root, "scan folder").is_dir():
        found.append("train")
    if inside(root, f"{name}/cams", root, "scan folder").is_dir():
        found.append("test")
    if not found:
        raise InputError(root / name, f"scan folder not found: neither {name}/cams (test layout) nor "
                                      f"Rectified/{name}_train (training layout) exists")
    return prefer if prefer in found else found[0]


def open_scan(root, name, layout: str | None = None, prefer: str = "train") -> Scan:
    """Scan ``name`` of the dataset at ``root``, in ``layout`` (None: the one that holds it)."""
    root = dataset_root(root)
    name = scan_name(name)
    if layout is None:
        layout = detect_layout(root, name, prefer)
    if layout not in LAYOUTS:
        raise InputError("layout", f"unknown DTU layout {layout!r} (known: {', '.join(LAYOUTS)})")
    if layout == "train":
        folder = inside(root, f"Rectified/{name}_train", root, "scan folder")
        pair = inside(root, "Cameras/pair.txt", root, "pair file")
    else:
        folder = inside(root, name, root, "scan folder")
        pair = inside(root, f"{name}/pair.txt", root, "pair file")
    if not folder.is_dir():
        raise InputError(folder, "scan folder not found")
    return Scan(root, name, layout, read_pair(pair), pair)


@dataclass
class View:
    """One view as stored: image (H, W, 3) in [0, 1]; intrinsic for that image; depth and mask
    (at the depth map's size) when the dataset has them."""

    image: np.ndarray
    intrinsic: np.ndarray  # (3, 3) float64
    extrinsic: np.ndarray  # (4, 4) float64, world -> camera
    depth_min: float
    depth_max: float
    depth: np.ndarray | None = None  # (h, w) float32, 0 = no depth
    mask: np.ndarray | None = None  # (h, w) bool


def read_view(scan: Scan, view: int, light: int | None = None, depth_num: int | None = None,
              with_depth: bool = True) -> View:
    """Read one view of ``scan`` (``light``: training layout only). ``depth_num``: the plane count
    that a two-value range line spans (default MVSNet's 192)."""
    cam = scan.camera(view)
    image = images.read_rgba(scan.image_path(view, light), referrer=scan.pair_path.name)[..., :3]
    k = cam.intrinsic if scan.layout == "test" else scaled_intrinsics(cam.intrinsic, TRAIN_CAM_SCALE)
    depth_max = cam.depth_max(depth_num) if depth_num else cam.depth_max()
    out = View(np.ascontiguousarray(image), k, cam.extrinsic, cam.depth_min, depth_max)
    if with_depth and scan.has_depths:
        depth = read_pfm(scan.depth_path(view), "depth map", referrer=scan.pair_path.name)
        if depth.ndim != 2:
            raise InputError(scan.depth_path(view), f"depth map must have one channel, got shape {depth.shape}")
        visual = images.read_mask(scan.mask_path(view), referrer=scan.pair_path.name)
        if visual.shape != depth.shape:
            raise InputError(scan.mask_path(view), f"mask is {visual.shape[1]}x{visual.shape[0]}, its depth "
                                                   f"map {depth.shape[1]}x{depth.shape[0]}")
        mask = (visual > MASK_THRESHOLD) & np.isfinite(depth) & (depth > 0)
        out.depth, out.mask = np.where(mask, depth, 0).astype(np.float32), mask
    return out


def points_path(root, name) -> Path:
    root = dataset_root(root)
    return inside(root, f"Points/stl/stl{scan_number(name):03d}_total.ply", root, "point cloud")


def read_gt_points(root, name) -> tuple[np.ndarray, np.ndarray | None]:
    """The ground-truth cloud of scan ``name``: (points (N, 3) float32, colours (N, 3) uint8 or None)."""
    return read_points(points_path(root, name))
