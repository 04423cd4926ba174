"""An occupancy grid that lets the renderer skip empty space.

In the spirit of nerfacc's OccGridEstimator, in plain PyTorch: a coarse grid
over the scene box keeps an exponential moving average of the field's density
in each cell. Cells whose density falls below a threshold are skipped, so the
field is evaluated only where something may be. The grid is refreshed during
training from the field itself; early on every cell is evaluated so that
nothing is culled before it was learned.
"""

from __future__ import annotations

import torch
from torch import nn


class OccupancyGrid(nn.Module):
    def __init__(self, aabb: torch.Tensor, resolution: int = 64, threshold: float = 0.01,
                 decay: float = 0.95, warmup_steps: int = 64):
        super().__init__()
        self.resolution = int(resolution)
        self.threshold = float(threshold)
        self.decay = float(decay)
        self.warmup_steps = int(warmup_steps)
        self.register_buffer("aabb", aabb.clone().float())
        r = self.resolution
        # Every cell counts as occupied until the first update has looked at it.
        self.register_buffer("density_ema", torch.zeros((r, r, r)))
        self.register_buffer("occupied", torch.ones((r, r, r), dtype=torch.bool))
        # A cell is culled only once an update has looked at it (a refresh may visit a subset).
        self.register_buffer("looked", torch.zeros((r, r, r), dtype=torch.bool))
        idx = torch.stack(torch.meshgrid(*[torch.arange(r)] * 3, indexing="ij"), -1).reshape(-1, 3)
        self.register_buffer("cell_index", idx, persistent=False)

    def cells_of(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flat cell index of each point and whether it lies inside the box."""
        unit = (points - self.aabb[0]) / (self.aabb[1] - self.aabb[0])
        inside = ((unit >= 0) & (unit < 1)).all(dim=-1)
        ijk = (unit.clamp(0, 1 - 1e-6) * self.resolution).long()
        r = self.resolution
        return (ijk[..., 0] * r + ijk[..., 1]) * r + ijk[..., 2], inside

    def query(self, points: torch.Tensor) -> torch.Tensor:
        """True where a point lies inside the box in an occupied cell."""
        flat, inside = self.cells_of(points)
        return inside & self.occupied.reshape(-1)[flat]

    @torch.no_grad()
    def update(self, density_fn, step: int, max_cells: int | None = None) -> None:
        """Refresh the cell densities with one jittered sample per cell.

        During warm-up every cell is evaluated and none is culled yet; after
        it only a random quarter of the cells plus every occupied cell is
        re-evaluated, or at most ``max_cells`` drawn in those proportions, which
        keeps the cost of an update bounded. Warm-up ignores ``max_cells``:
        nothing is culled before every cell was looked at.
        """
        r = self.resolution
        cells = self._cells_to_refresh(r ** 3, step, max_cells)
        ijk = self.cell_index[cells].float()
        unit = (ijk + torch.rand_like(ijk)) / r
        points = self.aabb[0] + unit * (self.aabb[1] - self.aabb[0])
        density = torch.cat([density_fn(chunk) for chunk in points.split(65536)])
        ema = self.density_ema.reshape(-1)
        ema[cells] = torch.maximum(ema[cells] * self.decay, density.float())
        self.looked.view(-1)[cells] = True
        if step >= self.warmup_steps:
            # Nothing is culled before the field has had time to learn where things are.
            self.occupied.copy_((self.density_ema > min(self.threshold, ema.mean().item())) | ~self.looked)

    def _cells_to_refresh(self, n_cells: int, step: int, max_cells: int | None) -> torch.Tensor:
        device = self.occupied.device
        if step < self.warmup_steps:
            return torch.arange(n_cells, device=device)
        busy = self.occupied.reshape(-1).nonzero().squeeze(-1)
        n_random = n_cells // 4
        if max_cells is None or n_random + busy.numel() <= max_cells:
            chosen = self.occupied.reshape(-1).clone()  # a mask, not a sort: the same sorted set as unique()
            chosen[torch.randint(0, n_cells, (n_random,), device=device)] = True
            return chosen.nonzero().squeeze(-1)
        # At most max_cells, drawn in the proportions of the full refresh (a random quarter of the
        # grid, every occupied cell) without building and sorting that whole set.
        from_busy = round(max_cells * busy.numel() / (n_random + busy.numel()))
        picked = busy[torch.randint(0, busy.numel(), (from_busy,), device=device)] if from_busy else busy[:0]
        return torch.cat([picked, torch.randint(0, n_cells, (max_cells - from_busy,), device=device)])

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Grids saved before ``looked`` existed had looked at every cell during their warm-up.
        state_dict.setdefault(prefix + "looked", torch.ones_like(self.looked))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def occupancy_fraction(self) -> float:
        return self.occupied.float().mean().item()
