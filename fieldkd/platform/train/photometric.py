"""Fit a radiance field to posed images: the task behind every plain training stage."""

from __future__ import annotations

from typing import Callable, Protocol

import torch

from ..evaluate.image import mse_to_psnr
from ..render.renderer import Renderer
from ..scenes.cameras import Rays
from ..scenes.scene import SceneSplit
from .supervision import Supervision, Targets, supervised_loss


class RaySource(Protocol):
    def sample(self, n_rays: int) -> tuple[Rays, torch.Tensor]: ...


class PixelSampler:
    """Random pixels of a set of images; rays are generated on the fly so that
    large scenes need no precomputed ray buffer."""

    def __init__(self, split: SceneSplit, device: torch.device, generator: torch.Generator | None = None):
        self.split = split
        self.device = device
        self.generator = generator
        n, h, w, _ = split.images.shape
        self.shape = (n, h, w)
        self.colors = split.images.reshape(-1, 3).to(device)
        self.depths = split.depths.reshape(-1).to(device) if split.depths is not None else None
        self.normals = split.normals.reshape(-1, 3).to(device) if split.normals is not None else None
        # Pixels a training mask keeps (SceneSplit.masks > 0.5); None: every pixel.
        self.kept = None if split.masks is None else (split.masks.reshape(-1) > 0.5).nonzero()[:, 0]
        if self.kept is not None and self.kept.numel() == 0:
            raise ValueError("the split's masks keep no pixel")

    def sample(self, n_rays: int):
        rays, colours, _ = self.draw(n_rays)
        return rays, colours

    def _pixels(self, n_rays: int):
        n, h, w = self.shape
        if self.kept is None:
            flat = torch.randint(0, n * h * w, (n_rays,), generator=self.generator)
        else:
            flat = self.kept[torch.randint(0, self.kept.numel(), (n_rays,), generator=self.generator)]
        cam, rest = flat // (h * w), flat % (h * w)
        py, px = (rest // w).float(), (rest % w).float()
        return flat.to(self.device), self.split.cameras.rays_at(cam, px, py).to(self.device), cam.to(self.device)

    def draw(self, n_rays: int):
        """Random rays, their pixels' colours and the index of the view each came from."""
        flat, rays, cam = self._pixels(n_rays)
        return rays, self.colors[flat], cam

    def batch(self, n_rays: int) -> tuple[Rays, Targets]:
        """Random rays with every target the split has (colour; depth and normals where given)."""
        flat, rays, _ = self._pixels(n_rays)
        pick = lambda values: None if values is None else values[flat]  # noqa: E731
        return rays, Targets(self.colors[flat], pick(self.depths), pick(self.normals))


class PhotometricTask:
    """The rendered pixels against the real ones (colour, and the depth and normal
    cues of ``supervision`` where the split has them), plus the field's own regularisers.

    ``train`` is a split (random pixels of its images) or any ray source with
    ``sample(n) -> (rays, colours)``, such as a Ray Data shard. ``forward`` is
    the module the rays are rendered through, e.g. the field wrapped in
    DistributedDataParallel; the bare field still owns parameters and state.
    """

    def __init__(self, field: torch.nn.Module, renderer: Renderer, train: "SceneSplit | RaySource",
                 batch_rays: int, device: torch.device,
                 evaluate: Callable[[int], dict] | None = None, forward: torch.nn.Module | None = None,
                 supervision: Supervision | None = None):
        self.field = field
        self.supervision = supervision or Supervision()
        self.forward = forward or field
        self.renderer = renderer
        self.batch_rays = batch_rays
        self.device = device
        self.pixels = PixelSampler(train, device) if isinstance(train, SceneSplit) else train
        self._evaluate = evaluate

    def param_groups(self, lr: float) -> list[dict]:
        # The renderer's own (the proposal networks of render.sampler=proposal) in a group of their own.
        return self.field.param_groups(lr) + self.renderer.param_groups(lr)

    def real_batch(self) -> tuple[Rays, Targets]:
        if hasattr(self.pixels, "batch"):
            return self.pixels.batch(self.batch_rays)
        rays, colours = self.pixels.sample(self.batch_rays)  # e.g. a Ray Data shard: colours only
        return rays, Targets(colours)

    def fit(self, rays: Rays, targets: Targets, depth_mode: str | None = None):
        """Render ``rays`` and compare them with ``targets``: (loss, metrics, samples)."""
        out = self.renderer.render_rays(self.forward, rays, train=True)
        loss, terms = supervised_loss(out, targets, self.supervision, depth_mode)
        metrics = {f"train/{name}": float(value.detach()) for name, value in terms.items() if name != "rgb"}
        if "proposal_loss" in out:  # trains the proposal networks only: the field's weights are detached in it
            loss = loss + out["proposal_loss"]
            metrics["train/proposal_loss"] = float(out["proposal_loss"].detach())
        if "rgb" in terms:
            mse = float(terms["rgb"].detach()) if self.supervision.rgb == "mse" else float(
                ((out["rgb"].detach().float() - targets.rgb) ** 2).mean())
            metrics["train/psnr"] = mse_to_psnr(mse)
        return loss, metrics, out["n_samples"]

    def training_step(self, step: int):
        loss, metrics, n_samples = self.fit(*self.real_batch())
        return loss + self.field.regularization(), metrics, n_samples

    def after_step(self, step: int) -> None:
        self.renderer.update_occupancy(self.field, step)

    def evaluate(self, step: int) -> dict:
        return self._evaluate(step) if self._evaluate else {}

    def state_dict(self) -> dict:
        return {"field": self.field.state_dict(), "renderer": self.renderer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.field.load_state_dict(state["field"])
        self.renderer.load_state_dict(state["renderer"])
