"""The in-memory form every scene reader returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from .cameras import Cameras


@dataclass
class SceneSplit:
    """One split (train / val / test) of a scene, already on the configured background."""

    images: torch.Tensor  # (N, H, W, 3) float32 in [0, 1]
    cameras: Cameras
    frame_paths: list[str]
    alphas: torch.Tensor | None = None  # (N, H, W) in [0, 1]
    depths: torch.Tensor | None = None  # (N, H, W) camera z-depth in scene units, 0 where no surface
    normals: torch.Tensor | None = None  # (N, H, W, 3) world-space unit normals, 0 where no surface

    def __len__(self) -> int:
        return self.images.shape[0]


@dataclass
class Scene:
    name: str
    source: Path
    splits: dict[str, SceneSplit]
    aabb: torch.Tensor  # (2, 3): min and max corner of the scene box
    near: float
    far: float
    background: torch.Tensor  # (3,)
    mesh_path: Path | None = None  # ground-truth mesh (PLY), where one exists
    extras: dict = field(default_factory=dict)

    def split(self, name: str) -> SceneSplit:
        if name in self.splits:
            return self.splits[name]
        # Scenes without a val split evaluate on test, and the other way round.
        fallback = {"val": "test", "test": "val"}.get(name)
        if fallback in self.splits:
            return self.splits[fallback]
        raise KeyError(f"scene {self.name} has no split {name!r} (has {sorted(self.splits)})")
