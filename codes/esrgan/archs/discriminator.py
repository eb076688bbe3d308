"""Discriminator_VGG_128: the VGG-style discriminator of SRGAN/ESRGAN for 128x128 patches."""

from __future__ import annotations

import torch
from torch import nn

INPUT_SIZE = 128


class Discriminator_VGG_128(nn.Module):
    """Five stages of (3x3 conv, 4x4 stride-2 conv), BN after every conv but the first, LeakyReLU(0.2).

    Five stride-2 convs take 128x128 down to 4x4, which fixes the input size through `linear1`.
    """

    def __init__(self, in_nc: int = 3, nf: int = 64) -> None:
        super().__init__()
        self.conv0_0 = nn.Conv2d(in_nc, nf, 3, 1, 1, bias=True)
        self.conv0_1 = nn.Conv2d(nf, nf, 4, 2, 1, bias=False)
        self.bn0_1 = nn.BatchNorm2d(nf, affine=True)
        widths = [nf, nf * 2, nf * 4, nf * 8, nf * 8]
        for stage in range(1, 5):
            c_in, c_out = widths[stage - 1], widths[stage]
            setattr(self, f"conv{stage}_0", nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False))
            setattr(self, f"bn{stage}_0", nn.BatchNorm2d(c_out, affine=True))
            setattr(self, f"conv{stage}_1", nn.Conv2d(c_out, c_out, 4, 2, 1, bias=False))
            setattr(self, f"bn{stage}_1", nn.BatchNorm2d(c_out, affine=True))
        self.linear1 = nn.Linear(nf * 8 * 4 * 4, 100)
        self.linear2 = nn.Linear(100, 1)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"Discriminator_VGG_128 takes {INPUT_SIZE}x{INPUT_SIZE} patches, got "
                             f"{tuple(x.shape[-2:])}: set datasets.train.GT_size to {INPUT_SIZE}")
        fea = self.lrelu(self.conv0_0(x))
        fea = self.lrelu(self.bn0_1(self.conv0_1(fea)))
        for stage in range(1, 5):
            for half in (0, 1):
                conv = getattr(self, f"conv{stage}_{half}")
                bn = getattr(self, f"bn{stage}_{half}")
                fea = self.lrelu(bn(conv(fea)))
        fea = self.lrelu(self.linear1(fea.flatten(1)))
        return self.linear2(fea)
