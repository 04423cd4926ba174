"""The cascade MVS network: one class for teacher and student, its uncertainty head an option.

    net = build_cascade_mvs({"hypotheses": [48, 32, 8], "uncertainty": True})
    out = net(images, intrinsics, extrinsics, depth_min, depth_max)
    out.depth, out.confidence, out.stages[0]["prob_volume"]

Three stages, coarse to fine, at 1/4, 1/2 and the full image size. Stage 1 sweeps planes
evenly over [depth_min, depth_max]; each later stage centres its per-pixel hypotheses on the
previous stage's (detached, upsampled) depth, ``interval_ratios[i]`` base intervals apart.
The base interval is (depth_max - depth_min) / (hypotheses[0] * interval_ratios[0]): with
DTU's 48 planes and ratio 4 it is the dataset's 192-plane interval, as officially.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ...errors import InputError
from .depth import (
    centred_hypotheses,
    combined_confidence,
    probability_mass,
    soft_argmin,
    uniform_hypotheses,
    upsample_depth,
    variance_volume,
)
from .geometry import homography_warp, projection, scale_intrinsics
from .modules import CostRegularizer, FeaturePyramid, LogVarianceHead

DEFAULTS = {
    "base_channels": 8,  # FPN: 4x at 1/4, 2x at 1/2, 1x at full size
    "regularizer_channels": 8,  # 3D U-Net: 8 -> 16 -> 32 -> 64
    "hypotheses": [16, 8, 4],  # per stage; DTU: [48, 32, 8]
    "interval_ratios": [4.0, 1.0, 0.5],
    "uncertainty": False,  # the teacher's log sigma^2 head
}
STAGE_SCALES = (0.25, 0.5, 1.0)
SIDE_MULTIPLE = 32  # three halvings of the U-Net on the 1/4 level


def normalise_config(config: dict, where: str = "network") -> dict:
    """The full config (defaults filled in) as plain values, or a one-line InputError."""
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        raise InputError(where, f"unknown keys {unknown}; known: {sorted(DEFAULTS)}")
    cfg = {**DEFAULTS, **config}
    for key in ("base_channels", "regularizer_channels"):
        if not isinstance(cfg[key], int) or isinstance(cfg[key], bool) or cfg[key] < 1:
            raise InputError(f"{where}.{key}", f"must be a positive integer, got {cfg[key]!r}")
    hyp, ratios = list(cfg["hypotheses"]), [float(r) for r in cfg["interval_ratios"]]
    if len(hyp) != len(STAGE_SCALES) or any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in hyp):
        raise InputError(f"{where}.hypotheses", f"must be {len(STAGE_SCALES)} positive integers, got {hyp!r}")
    if len(ratios) != len(STAGE_SCALES) or any(r <= 0 for r in ratios):
        raise InputError(f"{where}.interval_ratios", f"must be {len(STAGE_SCALES)} positive numbers, got {ratios!r}")
    return {"base_channels": cfg["base_channels"], "regularizer_channels": cfg["regularizer_channels"],
            "hypotheses": hyp, "interval_ratios": ratios, "uncertainty": bool(cfg["uncertainty"])}


@dataclass
class MVSOutput:
    stages: list[dict]  # coarse to fine; see CascadeMVSNet.forward
    depth: torch.Tensor  # [B,H,W] the last stage's
    confidence: torch.Tensor  # [B,H,W] product over stages


class CascadeMVSNet(nn.Module):
    def __init__(self, **config):
        super().__init__()
        self.config = normalise_config(config)
        cfg = self.config
        self.features = FeaturePyramid(cfg["base_channels"])
        self.regularizers = nn.ModuleList(CostRegularizer(c, cfg["regularizer_channels"])
                                          for c in self.features.channels)
        self.uncertainty = (nn.ModuleList(LogVarianceHead(c) for c in self.features.channels)
                            if cfg["uncertainty"] else None)

    @staticmethod
    def base_interval(depth_min: torch.Tensor, depth_max: torch.Tensor, hypotheses: int, ratio: float) -> torch.Tensor:
        return (depth_max - depth_min) / (hypotheses * ratio)

    def forward(self, images: torch.Tensor, intrinsics: torch.Tensor, extrinsics: torch.Tensor,
                depth_min: torch.Tensor, depth_max: torch.Tensor) -> MVSOutput:
        """images [B,V,3,H,W] (view 0 the reference), intrinsics [B,V,3,3] for H,W, extrinsics
        [B,V,4,4] world->camera, depth_min/depth_max [B]. Each stage's dict: "depth",
        "confidence" [B,h,w], "prob_volume", "hypotheses" [B,D,h,w], "features" [B,C,h,w] (the
        reference's), "view_features" [B,V,C,h,w] (every view's), "log_var" [B,h,w] (with the
        uncertainty head), "intrinsics" [B,V,3,3] of the stage's size."""
        b, v, _, h, w = images.shape
        if h % SIDE_MULTIPLE or w % SIDE_MULTIPLE:
            raise InputError("images", f"sides must be multiples of {SIDE_MULTIPLE}, got {h}x{w}")
        if v < 2:
            raise InputError("images", f"need a reference and at least one source view, got {v} view(s)")
        depth_min = torch.as_tensor(depth_min, device=images.device, dtype=torch.float32).reshape(b)
        depth_max = torch.as_tensor(depth_max, device=images.device, dtype=torch.float32).reshape(b)
        pyramid = self.features(images.reshape(b * v, *images.shape[2:]))
        interval = self.base_interval(depth_min, depth_max, self.config["hypotheses"][0],
                                      self.config["interval_ratios"][0])
        stages, depth = [], None
        for i, scale in enumerate(STAGE_SCALES):
            feats = pyramid[i].reshape(b, v, *pyramid[i].shape[1:])
            sh, sw = feats.shape[-2:]
            count = self.config["hypotheses"][i]
            if depth is None:
                hypotheses = uniform_hypotheses(depth_min, depth_max, count, sh, sw)
            else:  # the cascade narrows around the previous estimate; no gradient through the centre
                centre = upsample_depth(depth.detach(), sh, sw)
                hypotheses = centred_hypotheses(centre, count, self.config["interval_ratios"][i] * interval)
            k = scale_intrinsics(intrinsics.float(), scale)
            proj = projection(k, extrinsics.float())
            warped = [homography_warp(feats[:, j], proj[:, j], proj[:, 0], hypotheses)[0] for j in range(1, v)]
            scores = self.regularizers[i](variance_volume(feats[:, 0], warped))
            prob = torch.softmax(scores, dim=1)
            depth = soft_argmin(prob, hypotheses)
            stage = {"depth": depth, "confidence": probability_mass(prob), "prob_volume": prob,
                     "hypotheses": hypotheses, "features": feats[:, 0], "view_features": feats, "intrinsics": k}
            if self.uncertainty is not None:
                stage["log_var"] = self.uncertainty[i](feats[:, 0])
            stages.append(stage)
        confidence = combined_confidence([s["confidence"] for s in stages], h, w)
        return MVSOutput(stages=stages, depth=depth, confidence=confidence)


def build_cascade_mvs(config: dict) -> CascadeMVSNet:
    """The network from plain values (as stored in checkpoints); missing keys take DEFAULTS."""
    if not isinstance(config, dict):
        raise InputError("network", f"must be a mapping of plain values, got {type(config).__name__}")
    return CascadeMVSNet(**config)
