"""ResNet backbone (EDSR-style residual blocks with a global skip), DL4DS's best family."""

from __future__ import annotations

import torch
from torch import nn

from engine.models.layers import SpatialDropout, activation, conv3x3, normalization
from engine.registry import BACKBONES


class ResidualBlock(nn.Module):
    """conv -> norm -> act -> conv -> norm, plus the input (no activation after the sum, as EDSR)."""

    def __init__(self, channels: int, norm: str, act: str, dropout: float, mc_dropout: bool):
        super().__init__()
        self.body = nn.Sequential(
            conv3x3(channels, channels),
            normalization(norm, channels),
            activation(act),
            conv3x3(channels, channels),
            normalization(norm, channels),
            SpatialDropout(dropout, mc_dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


@BACKBONES.register("resnet", upsampling=None, temporal=True, description="residual blocks with a global skip (EDSR/DL4DS)")
class ResNetBackbone(nn.Module):
    def __init__(self, in_channels: int, filters: int = 32, blocks: int = 4, norm: str = "none",
                 act: str = "relu", dropout: float = 0.0, mc_dropout: bool = False):
        super().__init__()
        self.stem = conv3x3(in_channels, filters)
        self.blocks = nn.Sequential(*[ResidualBlock(filters, norm, act, dropout, mc_dropout) for _ in range(blocks)])
        self.tail = conv3x3(filters, filters)
        self.out_channels = filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stem = self.stem(x)
        return stem + self.tail(self.blocks(stem))  # global skip
