"""Several frozen experts acting as one teacher: each answers for the views it owns.

Divide-and-conquer distillation asks, for every training ray, the expert
trained on that ray's view. :class:`ExpertTeachers` has a :class:`Teacher`'s
query interface and routes each point by the training view it was seen from
(the inquirer must therefore give views: ``distill.inquirer=training_rays``).
Where space is empty is the union of the experts' beliefs (the maximum
density), so the student's occupancy grid keeps whatever any expert sees.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from ..fields import FieldOutput
from ..scenes.scene import Scene
from .teacher import Teacher


class ExpertTeachers:
    """Frozen experts; ``owner[v]`` is the expert that answers for training view ``v``."""

    renderer = None  # no single grid: the student's occupancy comes from :meth:`density`

    def __init__(self, experts: list[Teacher], owner: torch.Tensor):
        if not experts:
            raise ValueError("no experts")
        owner = torch.as_tensor(owner, dtype=torch.long)
        if int(owner.min()) < 0 or int(owner.max()) >= len(experts):
            raise ValueError(f"view owners must lie in [0, {len(experts)}), got {sorted(set(owner.tolist()))}")
        self.experts = list(experts)
        self.owner = owner
        self.source = ";".join(e.source for e in experts)

    @property
    def field(self):
        return self.experts[0].field  # the shared architecture (e.g. for empty outputs)

    @property
    def has_feature(self) -> bool:
        return all(e.has_feature for e in self.experts)

    @property
    def name(self) -> str:
        return f"experts({len(self.experts)}x{self.experts[0].name})"

    @property
    def device(self) -> torch.device:
        return self.experts[0].device

    def fingerprint(self) -> str:
        digest = hashlib.sha1(self.owner.numpy().tobytes())
        for expert in self.experts:
            digest.update(expert.fingerprint().encode())
        return digest.hexdigest()

    @torch.no_grad()
    def query(self, points: torch.Tensor, directions: torch.Tensor, views: torch.Tensor | None = None) -> FieldOutput:
        if views is None:
            raise ValueError("expert teachers answer for training views only: ask them on training rays "
                             "(distill.inquirer=training_rays)")
        which = self.owner.to(views.device)[views]
        parts = [(idx, expert.query(points[idx], directions[idx]))
                 for k, expert in enumerate(self.experts) if (idx := torch.nonzero(which == k).squeeze(1)).numel()]
        first = parts[0][1]

        def gather(name: str) -> torch.Tensor | None:
            if getattr(first, name) is None:
                return None
            out = getattr(first, name).new_zeros(points.shape[0], *getattr(first, name).shape[1:])
            for idx, answer in parts:
                out[idx] = getattr(answer, name)
            return out

        return FieldOutput(gather("raw_density"), gather("density"), gather("rgb"),
                           gather("feature") if self.has_feature else None)

    @torch.no_grad()
    def density(self, points: torch.Tensor) -> torch.Tensor:
        return torch.stack([e.density(points) for e in self.experts]).amax(0)


@dataclass(frozen=True)
class ExpertsRef:
    """Where trained experts live (plain data for any process) and which views each owns."""

    experts: tuple  # TeacherRef per expert
    owner: tuple[int, ...]  # expert of each training view

    @property
    def field(self) -> dict:
        return self.experts[0].field

    @property
    def checkpoint(self) -> str:
        return ";".join(e.checkpoint for e in self.experts)

    def load(self, scene: Scene, cfg: dict, device) -> ExpertTeachers:
        n_views = len(scene.split("train"))
        if len(self.owner) != n_views:
            raise ValueError(f"the view table has {len(self.owner)} views, the scene's training split {n_views}")
        return ExpertTeachers([e.load(scene, cfg, device) for e in self.experts], torch.tensor(self.owner))
