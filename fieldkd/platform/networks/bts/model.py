"""BTSNet: a density field over a camera's frustum, predicted from one or more posed images.

A 3D point's input from a view is the view's feature map sampled at the point's
projection plus a positional encoding of (x, y, normalised inverse depth) in that
view. Two heads read it:

- ``single``: the input view (view 0) only; Linear -> ReLU -> Linear(1).
- ``multi``: every encoder view; per view Linear -> ReLU -> Linear(1 + 16) gives an
  attention logit and a feature; a softmax over the views that see the point fuses
  the features; a small MLP maps the fused feature to the density.

Densities go through softplus. A point no usable view sees gets density 0 and
``valid`` False. The head is always an explicit argument and is returned with the
output, so every number can say which head produced it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import InputError
from .backbone import EncoderDecoder
from .geometry import (
    encoding_width,
    normalized_inverse_depth,
    normalized_uv,
    positional_encoding,
    project,
    sample_maps,
    to_camera,
)

HEADS = ("single", "multi")

DEFAULTS = dict(
    blocks=(2, 2, 2, 2),                 # ResNet-18's depth
    encoder_widths=(32, 32, 64, 128, 256),  # ResNet-18 at half width, for CPUs
    decoder_widths=(32, 32, 64, 128, 256),  # the official decoder channels
    feature_channels=64,
    n_freqs=6,
    z_near=3.0,
    z_far=80.0,
    single_hidden=64,
    multi_hidden=128,
    multi_feature=16,
    fuse_hidden=16,
    view_dropout=0.5,
    pretrained=None,                     # a weights file of the user's, loaded with weights_only=True
)


@dataclass
class DensityOutput:
    density: torch.Tensor   # [B, N], softplus of the head's output; 0 where not valid
    valid: torch.Tensor     # [B, N] bool: some view the head uses sees the point
    head: str               # "single" or "multi": which head produced ``density``


class BTSNet(nn.Module):
    def __init__(self, **config):
        super().__init__()
        unknown = set(config) - set(DEFAULTS)
        if unknown:
            raise InputError("bts network config", f"unknown keys {sorted(unknown)}; known: {sorted(DEFAULTS)}")
        cfg = {**DEFAULTS, **config}
        for key in ("blocks", "encoder_widths", "decoder_widths"):
            cfg[key] = [int(v) for v in cfg[key]]
        self.config = cfg
        self.near, self.far = float(cfg["z_near"]), float(cfg["z_far"])
        self.n_freqs = int(cfg["n_freqs"])
        self.backbone = EncoderDecoder(cfg["blocks"], cfg["encoder_widths"], cfg["decoder_widths"],
                                       int(cfg["feature_channels"]))
        self.in_width = int(cfg["feature_channels"]) + encoding_width(3, self.n_freqs)
        self.single_head = nn.Sequential(nn.Linear(self.in_width, cfg["single_hidden"]), nn.ReLU(),
                                         nn.Linear(cfg["single_hidden"], 1))
        self.multi_view = nn.Sequential(nn.Linear(self.in_width, cfg["multi_hidden"]), nn.ReLU(),
                                        nn.Linear(cfg["multi_hidden"], 1 + cfg["multi_feature"]))
        self.multi_fuse = nn.Sequential(nn.Linear(cfg["multi_feature"], cfg["fuse_hidden"]), nn.ReLU(),
                                        nn.Linear(cfg["fuse_hidden"], 1))
        if cfg["pretrained"]:
            self.load_pretrained(cfg["pretrained"])

    def load_pretrained(self, path: str | Path, strict: bool = False) -> list[str]:
        """Load a user's weights file: a state dict of this network, of its backbone
        (keys ``encoder.*``/``decoder.*``), or either under the key ``state_dict``/``net``.
        Never runs code from the file and never downloads. Returns the keys it loaded."""
        path = Path(path)
        if not path.is_file():
            raise InputError(path, "pretrained weights file not found")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unreadable file is the user's input problem
            raise InputError(path, f"not a weights-only torch file ({type(err).__name__}: {err})") from None
        for key in ("state_dict", "net"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise InputError(path, "expected a state dict of tensors")
        own = self.state_dict()
        target = self if any(k in own for k in state) else self.backbone
        try:
            missing, unexpected = target.load_state_dict(state, strict=strict)
        except RuntimeError as err:  # shapes differ, or keys are missing under strict
            raise InputError(path, f"weights do not match the network: {str(err).splitlines()[0]}") from None
        if unexpected or (strict and missing):
            raise InputError(path, f"weights do not match the network: unexpected {unexpected[:5]}")
        loaded = [k for k in state if k not in unexpected]
        if not loaded:
            raise InputError(path, "no weight in the file matches the network")
        return loaded

    # -- features ---------------------------------------------------------------------------------

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, V, 3, H, W] -> feature maps [B, V, C, H, W] (one shared encoder for all views)."""
        b, v = images.shape[:2]
        feats = self.backbone(images.flatten(0, 1))
        return feats.unflatten(0, (b, v))

    def point_inputs(self, features: torch.Tensor, intrinsics: torch.Tensor, cam_to_world: torch.Tensor,
                     points: torch.Tensor):
        """Each view's input for points [B, N, 3] (world): ([B, V, N, C + PE], valid [B, V, N])."""
        b, v, _, h, w = features.shape
        cam = to_camera(points.unsqueeze(1), cam_to_world)  # [B, V, N, 3]
        uv, z, valid = project(cam, intrinsics, h, w)
        sampled = sample_maps(features.flatten(0, 1), uv.flatten(0, 1)).unflatten(0, (b, v))
        code = torch.cat([normalized_uv(uv, h, w), normalized_inverse_depth(z, self.near, self.far).unsqueeze(-1)],
                         dim=-1)
        return torch.cat([sampled, positional_encoding(code, self.n_freqs)], dim=-1), valid

    # -- heads ------------------------------------------------------------------------------------

    def density(self, features: torch.Tensor, intrinsics: torch.Tensor, cam_to_world: torch.Tensor,
                points: torch.Tensor, *, head: str, view_dropout: bool | None = None) -> DensityOutput:
        """Density at world points [B, N, 3] from encoded views (``encode``'s output, view 0 the input).

        view_dropout: drop views other than the first with the configured probability
        (multi head only); None means "when training"."""
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        if head == "single":
            inputs, valid = self.point_inputs(features[:, :1], intrinsics[:, :1], cam_to_world[:, :1], points)
            raw = self.single_head(inputs[:, 0]).squeeze(-1)
            valid = valid[:, 0]
        else:
            inputs, valid = self.point_inputs(features, intrinsics, cam_to_world, points)
            drop = self.training if view_dropout is None else view_dropout
            if drop and valid.shape[1] > 1 and self.config["view_dropout"] > 0:
                keep = torch.rand(valid.shape[:2], device=valid.device) >= self.config["view_dropout"]
                keep[:, 0] = True
                valid = valid & keep.unsqueeze(-1)
            raw = self.fuse_views(self.multi_view(inputs), valid)
            valid = valid.any(dim=1)
        density = torch.where(valid, F.softplus(raw), torch.zeros_like(raw))
        return DensityOutput(density, valid, head)

    def fuse_views(self, per_view: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """per_view [B, V, N, 1 + F] (logit, feature), valid [B, V, N] -> raw density [B, N].

        The softmax runs over the valid views only; a point no view sees gets a
        zero feature (its density is masked by the caller)."""
        logits = per_view[..., 0].masked_fill(~valid, float("-inf"))
        any_valid = valid.any(dim=1, keepdim=True)
        logits = torch.where(any_valid, logits, torch.zeros_like(logits))  # no all -inf softmax (NaN)
        weights = torch.softmax(logits, dim=1) * valid
        fused = (weights.unsqueeze(-1) * per_view[..., 1:]).sum(dim=1)
        return self.multi_fuse(fused).squeeze(-1)

    def forward(self, images: torch.Tensor, intrinsics: torch.Tensor, cam_to_world: torch.Tensor,
                points: torch.Tensor, *, head: str, view_dropout: bool | None = None) -> DensityOutput:
        """images [B, V, 3, H, W] (view 0 the input view), intrinsics [B, V, 3, 3],
        cam_to_world [B, V, 4, 4], points [B, N, 3] in world coordinates."""
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        if head == "single":  # only the input view is needed: don't encode the others
            images, intrinsics, cam_to_world = images[:, :1], intrinsics[:, :1], cam_to_world[:, :1]
        return self.density(self.encode(images), intrinsics, cam_to_world, points, head=head,
                            view_dropout=view_dropout)


def build_bts(config: dict | None = None) -> BTSNet:
    """A BTSNet from a plain-value config (the keys of ``DEFAULTS``; stored in checkpoints)."""
    return BTSNet(**dict(config or {}))
