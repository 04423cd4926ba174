"""Trainer tasks for the cascade MVS network (see train/loop.py's Task protocol), and inference.

    task = SelfSupervisedMVSTask(net, batches, device, {"view_selection": "image"})
    Trainer(cfg).fit(task)

``batches`` is an endless iterator of multi-view batches (the data module's train_batches);
the labelled task's batches also carry "label_mu", "label_sigma" and "label_mask" [B,H,W].
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from ...distill.losses import KL_DIRECTIONS
from ...errors import InputError
from .losses import (
    KL_FORMS,
    STUDENT_WEIGHTS,
    TEACHER_WEIGHTS,
    VIEW_SELECTIONS,
    labelled_loss,
    self_supervised_loss,
)
from .network import CascadeMVSNet, MVSOutput

SELF_SUPERVISED_DEFAULTS = {
    "stage_weights": [1.0, 1.0, 1.0],
    "weights": {},  # overrides of losses.TEACHER_WEIGHTS (photo, feature, log_var, ssim, smooth)
    "view_selection": "image",  # official: the best views by whole-image error; "pixel": per-pixel minimum
    "top_k": 3,  # "image": how many views each pixel sums (official: 3 of 4)
    "ssim_views": 2,  # SSIM against the first this-many sources (official: 2)
    "feature_term": True,
    "smooth_units": "range",  # range: depth / (max - min) in the smoothness; raw: the dataset's units (mm)
}
SMOOTH_UNITS = ("range", "raw")
LABELLED_DEFAULTS = {
    "stage_weights": [1.0, 1.0, 1.0],
    "weights": {},  # overrides of losses.STUDENT_WEIGHTS (kl, ce)
    "hard": False,  # the ablation: cross-entropy to the label's mean only, no KL
    "min_sigma": None,  # sigma clamp in depth units; None: min_sigma_ratio x the base interval
    "min_sigma_ratio": 0.25,
    "kl_direction": "student||label",  # official; "label||student" divides by the student's variance
    "stage_sigma_ratio": None,  # also clamp sigma at this fraction of each stage's hypothesis spacing
    # discrete: the label's Gaussian put on the stage's hypotheses (a KL whose minimum the volume can reach at any
    # spacing); moments: the volume's mean and std as a Gaussian (the official form; it loses to hard labels at the
    # CPU sizes' spacing of 34/8/4 mm against labels ~1.4 mm wide, benchmarks/results/kdmvs_kl.md)
    "kl_form": "discrete",
}
NET_INPUTS = ("images", "intrinsics", "extrinsics", "depth_min", "depth_max")


def _options(cfg: dict | None, defaults: dict, where: str) -> dict:
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(defaults))
    if unknown:
        raise InputError(where, f"unknown keys {unknown}; known: {sorted(defaults)}")
    return {**defaults, **cfg}


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def run_network(net: CascadeMVSNet, batch: dict) -> MVSOutput:
    missing = [k for k in NET_INPUTS if k not in batch]
    if missing:
        raise InputError("batch", f"missing {missing}; a multi-view batch has {list(NET_INPUTS)}")
    return net(*(batch[k] for k in NET_INPUTS))


def predict(net: CascadeMVSNet, sample_batch: dict) -> dict[str, torch.Tensor]:
    """Depth and confidence [B,H,W] of a batch in inference mode (the net's mode is restored)."""
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            device = next(net.parameters()).device
            out = run_network(net, to_device(sample_batch, device))
    finally:
        net.train(was_training)
    return {"depth": out.depth, "confidence": out.confidence}


def _depth_metrics(out: MVSOutput, batch: dict) -> dict[str, float]:
    """Monitoring only (never in the loss): the final depth's error where ground truth exists."""
    if "depth" not in batch or "mask" not in batch:
        return {}
    mask = batch["mask"].bool() & (batch["depth"] > 0)
    if not bool(mask.any()):
        return {}
    return {"train/depth_mae": float((out.depth.detach() - batch["depth"])[mask].abs().mean())}


class _MVSTask:
    def __init__(self, net: CascadeMVSNet, batches: Iterator[dict], device, evaluate: Callable[[int], dict] | None,
                 forward: torch.nn.Module | None = None):
        self.net = net
        self.forward = forward or net  # a DDP wrapper of ``net`` on Ray Train workers: gradients are averaged
        self.batches = batches
        self.device = torch.device(device)
        self._evaluate = evaluate
        self.net.to(self.device)

    def param_groups(self, lr: float) -> list[dict]:
        return [{"params": [p for p in self.net.parameters() if p.requires_grad], "lr": lr}]

    def _next(self) -> dict:
        batch = to_device(next(self.batches), self.device)
        self.net.train()
        return batch

    def after_step(self, step: int) -> None:
        pass

    def evaluate(self, step: int) -> dict[str, float]:
        return self._evaluate(step) if self._evaluate else {}

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "config": dict(self.net.config)}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])


class SelfSupervisedMVSTask(_MVSTask):
    """The teacher's round: photometric, feature-metric, SSIM and smoothness consistency of the
    reference with its warped sources; no depth labels."""

    def __init__(self, net: CascadeMVSNet, batches: Iterator[dict], device, cfg: dict | None = None,
                 evaluate: Callable[[int], dict] | None = None, forward: torch.nn.Module | None = None):
        super().__init__(net, batches, device, evaluate, forward)
        self.cfg = _options(cfg, SELF_SUPERVISED_DEFAULTS, "mvs_loss")
        if self.cfg["view_selection"] not in VIEW_SELECTIONS:
            raise InputError("mvs_loss.view_selection", f"must be one of {VIEW_SELECTIONS}, "
                             f"got {self.cfg['view_selection']!r}")
        unknown = sorted(set(self.cfg["weights"]) - set(TEACHER_WEIGHTS))
        if unknown:
            raise InputError("mvs_loss.weights", f"unknown terms {unknown}; known: {sorted(TEACHER_WEIGHTS)}")
        if self.cfg["smooth_units"] not in SMOOTH_UNITS:
            raise InputError("mvs_loss.smooth_units", f"must be one of {SMOOTH_UNITS}, got {self.cfg['smooth_units']!r}")

    def training_step(self, step: int):
        batch = self._next()
        out = run_network(self.forward, batch)
        c = self.cfg
        span = (batch["depth_max"] - batch["depth_min"]).float() if c["smooth_units"] == "range" else None
        loss, metrics = self_supervised_loss(out.stages, batch["images"], batch["extrinsics"], c["stage_weights"],
                                             c["weights"], c["view_selection"], c["top_k"], c["ssim_views"],
                                             c["feature_term"], span)
        metrics.update(_depth_metrics(out, batch))
        b, _, _, h, w = batch["images"].shape
        return loss, metrics, b * h * w


class LabelledMVSTask(_MVSTask):
    """The student's round: KL to the probabilistic pseudo-labels and cross-entropy to the
    hypothesis nearest their mean, on the pixels the label mask keeps."""

    def __init__(self, net: CascadeMVSNet, batches: Iterator[dict], device, cfg: dict | None = None,
                 evaluate: Callable[[int], dict] | None = None, forward: torch.nn.Module | None = None):
        super().__init__(net, batches, device, evaluate, forward)
        self.cfg = _options(cfg, LABELLED_DEFAULTS, "mvs_loss")
        unknown = sorted(set(self.cfg["weights"]) - set(STUDENT_WEIGHTS))
        if unknown:
            raise InputError("mvs_loss.weights", f"unknown terms {unknown}; known: {sorted(STUDENT_WEIGHTS)}")
        if self.cfg["kl_direction"] not in KL_DIRECTIONS:
            raise InputError("mvs_loss.kl_direction", f"must be one of {KL_DIRECTIONS}, got {self.cfg['kl_direction']!r}")
        if self.cfg["kl_form"] not in KL_FORMS:
            raise InputError("mvs_loss.kl_form", f"must be one of {KL_FORMS}, got {self.cfg['kl_form']!r}")

    def _min_sigma(self, batch: dict):
        if self.cfg["min_sigma"] is not None:
            return float(self.cfg["min_sigma"])
        hyp, ratios = self.net.config["hypotheses"], self.net.config["interval_ratios"]
        interval = CascadeMVSNet.base_interval(batch["depth_min"].float(), batch["depth_max"].float(), hyp[0], ratios[0])
        return (self.cfg["min_sigma_ratio"] * interval).reshape(-1, 1, 1)

    def training_step(self, step: int):
        batch = self._next()
        missing = [k for k in ("label_mu", "label_sigma", "label_mask") if k not in batch]
        if missing:
            raise InputError("batch", f"a labelled batch needs {missing}")
        out = run_network(self.forward, batch)
        c = self.cfg
        loss, metrics = labelled_loss(out.stages, batch["label_mu"], batch["label_sigma"], batch["label_mask"],
                                      self._min_sigma(batch), c["stage_weights"], c["weights"], c["hard"],
                                      c["kl_direction"], c["stage_sigma_ratio"], c["kl_form"])
        metrics.update(_depth_metrics(out, batch))
        b, _, _, h, w = batch["images"].shape
        return loss, metrics, b * h * w
