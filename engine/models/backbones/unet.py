"""U-Net backbone (DL4DS ``unet``). It works on the HR grid, so it only pairs with pre-upsampling
(``pin``): after a post-upsampler its coarse levels would be coarser than the LR input itself,
which is what DL4DS refuses too. The configuration rejects other upsamplers at validation time.

Any grid size works: the input is padded (replicate) to a multiple of ``2**depth`` and the output
cropped back, so full-domain inference on an odd-sized grid needs no special care.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.models.layers import ConvBlock
from engine.registry import BACKBONES


@BACKBONES.register("unet", upsampling=("pin",), temporal=False, description="encoder-decoder with skips, at HR (pin only)")
class UNetBackbone(nn.Module):
    """(B, in_channels, H, W) -> (B, filters, H, W).

    ``blocks`` sets the depth (number of downsamplings, 1 to 4); level ``l`` has ``filters * 2**l``
    channels. Downsampling by 2x2 max-pooling, upsampling by nearest + conv.
    """

    def __init__(self, in_channels: int, filters: int = 32, blocks: int = 4, norm: str = "none",
                 act: str = "relu", dropout: float = 0.0, mc_dropout: bool = False):
        super().__init__()
        self.depth = max(1, min(4, blocks))
        widths = [filters * 2**level for level in range(self.depth + 1)]
        block = lambda i, o: nn.Sequential(ConvBlock(i, o, norm, act), ConvBlock(o, o, norm, act, dropout, mc_dropout))  # noqa: E731
        self.down = nn.ModuleList([block(in_channels, widths[0])] + [block(widths[i - 1], widths[i]) for i in range(1, self.depth + 1)])
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList(
            nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(widths[i + 1], widths[i], 3, padding=1))
            for i in range(self.depth)
        )
        self.merge = nn.ModuleList(block(2 * widths[i], widths[i]) for i in range(self.depth))
        self.out_channels = filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"expected (B, C, H, W), got {tuple(x.shape)}")
        height, width = x.shape[-2:]
        multiple = 2**self.depth
        pad_h, pad_w = -height % multiple, -width % multiple
        if pad_h or pad_w:
            x = nn.functional.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        skips = []
        for level, down in enumerate(self.down):
            x = down(x if level == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for level in reversed(range(self.depth)):
            x = self.merge[level](torch.cat([self.up[level](x), skips[level]], dim=1))
        return x[..., :height, :width]
