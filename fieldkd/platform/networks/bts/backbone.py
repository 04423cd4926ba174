"""The image encoder-decoder of the BTS density field, in plain torch.

A ResNet encoder (basic blocks; depth and widths configurable: ResNet-18 is
``blocks=(2, 2, 2, 2)``, ``widths=(64, 64, 128, 256, 512)``) and a monodepth2-style
decoder: at each level upsample, concatenate the encoder's skip feature, convolve
with ELU. The last level is at full resolution and gives a ``C``-channel feature map.
No weights are downloaded; ``BTSNet.load_pretrained`` loads a user's file.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.down = None
        if stride != 1 or c_in != c_out:
            self.down = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.down is None else self.down(x)))


class ResNetEncoder(nn.Module):
    """Stem (7x7 stride-2 conv, max-pool) and one stage per entry of ``blocks``.

    ``widths[0]`` is the stem's width, ``widths[i + 1]`` stage i's. Returns the
    stem's output (1/2 resolution) and each stage's (1/4, 1/8, ...): the skips."""

    def __init__(self, blocks: Sequence[int] = (2, 2, 2, 2), widths: Sequence[int] = (64, 64, 128, 256, 512)):
        super().__init__()
        if len(widths) != len(blocks) + 1:
            raise ValueError(f"encoder widths need one entry more than blocks (the stem): {widths} vs {blocks}")
        self.widths = list(widths)
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 7, 2, 3, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(inplace=True))
        stages = []
        for i, n in enumerate(blocks):
            c_in, c_out = widths[i], widths[i + 1]
            stride = 1 if i == 0 else 2  # the max-pool already halved the first stage's input
            stages.append(nn.Sequential(*[BasicBlock(c_in if j == 0 else c_out, c_out, stride if j == 0 else 1)
                                          for j in range(n)]))
        self.stages = nn.ModuleList(stages)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = (images - 0.45) / 0.225  # monodepth2's input normalisation
        feats = [self.stem(x)]
        x = F.max_pool2d(feats[0], 3, 2, 1)
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


def _conv(c_in: int, c_out: int) -> nn.Module:
    return nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(c_in, c_out, 3), nn.ELU(inplace=True))


class SkipDecoder(nn.Module):
    """monodepth2's depth decoder with a C-channel output instead of a disparity.

    Level i (deepest first) convolves, upsamples to the next skip's size (to the
    image's at the last level), concatenates that skip and convolves again."""

    def __init__(self, encoder_widths: Sequence[int], widths: Sequence[int], out_channels: int):
        super().__init__()
        if len(widths) != len(encoder_widths):
            raise ValueError(f"decoder widths need one entry per encoder level: {widths} vs {encoder_widths}")
        self.first, self.second = nn.ModuleList(), nn.ModuleList()
        c_in = encoder_widths[-1]
        for i in reversed(range(len(widths))):
            self.first.append(_conv(c_in, widths[i]))
            skip = encoder_widths[i - 1] if i > 0 else 0
            self.second.append(_conv(widths[i] + skip, widths[i]))
            c_in = widths[i]
        self.out = nn.Conv2d(widths[0], out_channels, 3, 1, 1)

    def forward(self, feats: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        x = feats[-1]
        n = len(self.first)
        for k, (first, second) in enumerate(zip(self.first, self.second)):
            level = n - 1 - k
            x = first(x)
            target = feats[level - 1].shape[-2:] if level > 0 else size
            x = F.interpolate(x, size=target, mode="nearest")
            if level > 0:
                x = torch.cat([x, feats[level - 1]], dim=1)
            x = second(x)
        return self.out(x)


class EncoderDecoder(nn.Module):
    def __init__(self, blocks=(2, 2, 2, 2), encoder_widths=(64, 64, 128, 256, 512),
                 decoder_widths=(32, 32, 64, 128, 256), out_channels: int = 64):
        super().__init__()
        self.encoder = ResNetEncoder(blocks, encoder_widths)
        self.decoder = SkipDecoder(encoder_widths, decoder_widths, out_channels)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [N, 3, H, W] in [0, 1] -> features [N, C, H, W]."""
        return self.decoder(self.encoder(images), images.shape[-2:])
