"""What the stage kinds of feed-forward networks share (see :mod:`fieldkd.platform.stage_kinds`): the
parts a stage builds, and the kind's defaults (no occupancy grid, plain DDP, batches drawn by each
rank from its own shard of the data module, scored once after training)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class NetworkParts:
    """A network stage's parts; ``field``/``renderer``/``backend`` as the stage body names a stage's model
    (here the network, which renders itself or nothing)."""

    data: object  # the data module the stage trains on
    field: torch.nn.Module
    teacher: torch.nn.Module | None = None  # a network that teaches this one, where the stage has one
    renderer: None = None
    backend: str = "torch"

    @property
    def net(self) -> torch.nn.Module:
        return self.field


class NetworkStage:
    """Defaults of a network's stage kind; subclasses give ``name``, ``build``, ``task``, ``batch_size``,
    ``record``, ``tags`` and ``evaluators``."""

    trains = True
    shares_grid = False
    ddp_options: dict = {}
    gradient_sync = "ddp"  # or "all_reduce": a task that calls the network part by part (no one forward)

    def validation(self, request, parts, device):
        return lambda step: {}  # scoring covers whole scans or sequences: done once, after training

    def shards(self, request) -> str | None:
        return None  # each rank draws its own shard from the data module
