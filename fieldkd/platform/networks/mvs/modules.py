"""The learned parts of the cascade network: a feature pyramid, a 3D U-Net that turns a
cost volume into per-hypothesis scores, and the optional log-variance head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv2d(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def conv3d(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, 3, stride, padding=1, bias=False),
                         nn.BatchNorm3d(cout), nn.ReLU(inplace=True))


def deconv3d(cin: int, cout: int) -> nn.Sequential:
    """Doubles each side exactly (kernel 3, padding 1, output padding 1)."""
    return nn.Sequential(nn.ConvTranspose3d(cin, cout, 3, stride=2, padding=1, output_padding=1, bias=False),
                         nn.BatchNorm3d(cout), nn.ReLU(inplace=True))


class FeaturePyramid(nn.Module):
    """Three levels of an image: 4*base channels at 1/4 of its sides, 2*base at 1/2 and
    base at full size (the FPN of CasMVSNet). Stride-2 convolutions centre level pixel x
    on image pixel 2x, matching ``geometry.scale_intrinsics``."""

    def __init__(self, base: int = 8):
        super().__init__()
        self.channels = [4 * base, 2 * base, base]  # coarse to fine
        self.stem_full = nn.Sequential(conv2d(3, base), conv2d(base, base))
        self.stem_half = nn.Sequential(conv2d(base, 2 * base, 5, 2), conv2d(2 * base, 2 * base), conv2d(2 * base, 2 * base))
        self.stem_quarter = nn.Sequential(conv2d(2 * base, 4 * base, 5, 2), conv2d(4 * base, 4 * base),
                                     conv2d(4 * base, 4 * base))
        top = 4 * base
        self.lateral_half = nn.Conv2d(2 * base, top, 1)
        self.lateral_full = nn.Conv2d(base, top, 1)
        self.out_quarter = nn.Conv2d(top, 4 * base, 1, bias=False)
        self.out_half = nn.Conv2d(top, 2 * base, 3, padding=1, bias=False)
        self.out_full = nn.Conv2d(top, base, 3, padding=1, bias=False)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        full = self.stem_full(image)
        half = self.stem_half(full)
        top = self.stem_quarter(half)
        outs = [self.out_quarter(top)]
        top = F.interpolate(top, scale_factor=2.0, mode="nearest") + self.lateral_half(half)
        outs.append(self.out_half(top))
        top = F.interpolate(top, scale_factor=2.0, mode="nearest") + self.lateral_full(full)
        outs.append(self.out_full(top))
        return outs


class CostRegularizer(nn.Module):
    """3D U-Net over a cost volume [B,C,D,h,w]: base -> 2 -> 4 -> 8 times base channels in
    three stride-2 steps, back up with skip-adds, to one score per hypothesis [B,D,h,w].
    D may be any count: the volume is padded (replicating the last plane) to a multiple of 8
    for the three halvings, and the scores of the padding are dropped."""

    def __init__(self, in_channels: int, base: int = 8):
        super().__init__()
        self.inp = conv3d(in_channels, base)
        self.down1 = nn.Sequential(conv3d(base, 2 * base, 2), conv3d(2 * base, 2 * base))
        self.down2 = nn.Sequential(conv3d(2 * base, 4 * base, 2), conv3d(4 * base, 4 * base))
        self.down3 = nn.Sequential(conv3d(4 * base, 8 * base, 2), conv3d(8 * base, 8 * base))
        self.up3 = deconv3d(8 * base, 4 * base)
        self.up2 = deconv3d(4 * base, 2 * base)
        self.up1 = deconv3d(2 * base, base)
        self.score = nn.Conv3d(base, 1, 3, padding=1, bias=False)

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        d = volume.shape[2]
        pad = -d % 8
        if pad:
            volume = F.pad(volume, (0, 0, 0, 0, 0, pad), mode="replicate")
        x0 = self.inp(volume)
        x1 = self.down1(x0)
        x2 = self.down2(x1)
        x = self.down3(x2)
        x = x2 + self.up3(x)
        x = x1 + self.up2(x)
        x = x0 + self.up1(x)
        return self.score(x)[:, 0, :d]


class LogVarianceHead(nn.Module):
    """Per-pixel log sigma^2 from the reference features [B,C,h,w] -> [B,h,w] (small 2D
    convolutions, widening to 8C and back, as the official uncertainty net)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(conv2d(channels, 4 * channels), conv2d(4 * channels, 8 * channels),
                                  conv2d(8 * channels, channels))
        self.out = nn.Conv2d(channels, 1, 3, padding=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(features))[:, 0]
