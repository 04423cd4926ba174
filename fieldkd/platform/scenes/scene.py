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
    # (N, H, W) per-pixel training weight in [0, 1] (nerfstudio's mask_path: 0 = ignore the pixel);
    # the photometric task draws rays only where it is > 0.5. Coverage is ``alphas``, not this.
    masks: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, views) -> "SceneSplit":
        """The split restricted to ``views`` (indices into it), in that order."""
        index = torch.as_tensor(list(views), dtype=torch.long)
        if index.numel() == 0:
            raise ValueError("a split needs at least one view")
        if int(index.min()) < 0 or int(index.max()) >= len(self):
            raise ValueError(f"view indices must lie in [0, {len(self)}), got {index.tolist()}")
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        return SceneSplit(self.images[index], self.cameras[index], [self.frame_paths[i] for i in index.tolist()],
                          pick(self.alphas), pick(self.depths), pick(self.normals), pick(self.masks))


@dataclass
class Scene:
    """A dataset in the field's coordinates ("scene space").

    ``extras`` holds what a format knows beyond that, by key:

    - ``format``: the reader's format name.
    - ``world_from_scene``: (4, 4) float64 tensor, a similarity (uniform scale,
      rotation, translation) mapping scene points to world points, where the
      dataset has world units apart from its normalised space (MonoSDF's
      ``scale_mat``). ``mesh_path`` is in world units then: map a field's mesh
      with it before comparing, and multiply scene distances by its scale.
      Absent: scene and world coincide.
    - ``frame_ids``: {split: [frame number per view]} where frames are numbered
      along a trajectory (MonoSDF); views of a split are in that order.
    - ``applied_transform`` (nerfstudio), ``seed`` (generated scenes).
    """

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
