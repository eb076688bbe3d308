"""RRDBNet, the ESRGAN generator (Wang et al. 2018, section 3.1).

Module and attribute names follow the original ESRGAN code, so that the published `RRDB_ESRGAN_x4.pth` and
`RRDB_PSNR_x4.pth` load into `RRDBNet(3, 3, 64, 23, gc=32)` key for key.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SUPPORTED_SCALES = (2, 4)


class ResidualDenseBlock_5C(nn.Module):
    """Five densely connected 3x3 convs; the output is scaled by 0.2 and added to the input (no batch norm)."""

    def __init__(self, nf: int = 64, gc: int = 32, bias: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(nf, gc, 3, 1, 1, bias=bias)
        self.conv2 = nn.Conv2d(nf + gc, gc, 3, 1, 1, bias=bias)
        self.conv3 = nn.Conv2d(nf + 2 * gc, gc, 3, 1, 1, bias=bias)
        self.conv4 = nn.Conv2d(nf + 3 * gc, gc, 3, 1, 1, bias=bias)
        self.conv5 = nn.Conv2d(nf + 4 * gc, nf, 3, 1, 1, bias=bias)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)
        # The paper's "smaller initialisation": Kaiming normal scaled by 0.1 keeps the deep residual trunk
        # close to identity at the start, which the authors found necessary to train it without BN.
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4, self.conv5):
            nn.init.kaiming_normal_(conv.weight, a=0, mode="fan_in")
            conv.weight.data.mul_(0.1)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return torch.add(x, x5, alpha=0.2)  # x + 0.2 * x5, one kernel instead of a multiply and an add


class RRDB(nn.Module):
    """Residual in Residual Dense Block: three dense blocks, residual scaling 0.2 around them."""

    def __init__(self, nf: int, gc: int = 32) -> None:
        super().__init__()
        self.RDB1 = ResidualDenseBlock_5C(nf, gc)
        self.RDB2 = ResidualDenseBlock_5C(nf, gc)
        self.RDB3 = ResidualDenseBlock_5C(nf, gc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.RDB3(self.RDB2(self.RDB1(x)))
        return torch.add(x, out, alpha=0.2)


class RRDBNet(nn.Module):
    """conv_first -> nb RRDBs -> trunk_conv (+ skip) -> nearest x2 upsampling stages -> HRconv -> conv_last.

    Scale 4 uses two upsampling stages (`upconv1`, `upconv2`), scale 2 one (`upconv1`).
    """

    def __init__(self, in_nc: int = 3, out_nc: int = 3, nf: int = 64, nb: int = 23, gc: int = 32,
                 scale: int = 4) -> None:
        super().__init__()
        if scale not in SUPPORTED_SCALES:
            raise ValueError(f"RRDBNet supports scale {' or '.join(map(str, SUPPORTED_SCALES))}, got {scale}: "
                             "each nearest-neighbour x2 stage doubles the size, as in the published models")
        self.scale = scale
        self.conv_first = nn.Conv2d(in_nc, nf, 3, 1, 1, bias=True)
        self.RRDB_trunk = nn.Sequential(*(RRDB(nf, gc) for _ in range(nb)))
        self.trunk_conv = nn.Conv2d(nf, nf, 3, 1, 1, bias=True)
        self.upconv1 = nn.Conv2d(nf, nf, 3, 1, 1, bias=True)
        if scale == 4:
            self.upconv2 = nn.Conv2d(nf, nf, 3, 1, 1, bias=True)
        self.HRconv = nn.Conv2d(nf, nf, 3, 1, 1, bias=True)
        self.conv_last = nn.Conv2d(nf, out_nc, 3, 1, 1, bias=True)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fea = self.conv_first(x)
        fea = fea + self.trunk_conv(self.RRDB_trunk(fea))
        fea = self.lrelu(self.upconv1(F.interpolate(fea, scale_factor=2, mode="nearest")))
        if self.scale == 4:
            fea = self.lrelu(self.upconv2(F.interpolate(fea, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.HRconv(fea)))
