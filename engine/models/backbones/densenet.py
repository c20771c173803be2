"""DenseNet backbone (DL4DS ``densenet``): dense blocks whose layers see the concatenation of
all earlier feature maps, each block compressed back to ``filters`` by a 1x1 transition."""

from __future__ import annotations

import torch
from torch import nn

from engine.models.layers import ConvBlock, conv3x3
from engine.registry import BACKBONES


class DenseBlock(nn.Module):
    """``layers`` conv blocks of ``growth`` channels each, densely connected, then a 1x1 transition
    back to ``channels`` and a residual sum (as in RDN, the residual dense network)."""

    def __init__(self, channels: int, growth: int, layers: int, norm: str, act: str, dropout: float, mc_dropout: bool):
        super().__init__()
        self.layers = nn.ModuleList(
            ConvBlock(channels + i * growth, growth, norm, act, dropout, mc_dropout) for i in range(layers)
        )
        self.transition = nn.Conv2d(channels + layers * growth, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, dim=1)))
        return x + self.transition(torch.cat(features, dim=1))


@BACKBONES.register("densenet", upsampling=None, temporal=True, description="dense blocks with 1x1 transitions (DL4DS densenet, RDN)")
class DenseNetBackbone(nn.Module):
    """(B, in_channels, h, w) -> (B, filters, h, w); ``blocks`` dense blocks of 3 layers with
    growth ``max(2, filters // 2)`` and a global skip."""

    def __init__(self, in_channels: int, filters: int = 32, blocks: int = 4, norm: str = "none",
                 act: str = "relu", dropout: float = 0.0, mc_dropout: bool = False, layers: int = 3):
        super().__init__()
        growth = max(2, filters // 2)
        self.stem = conv3x3(in_channels, filters)
        self.blocks = nn.Sequential(*[DenseBlock(filters, growth, layers, norm, act, dropout, mc_dropout) for _ in range(blocks)])
        self.tail = conv3x3(filters, filters)
        self.out_channels = filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stem = self.stem(x)
        return stem + self.tail(self.blocks(stem))
