"""ConvNeXt backbone (DL4DS ``convnext``): depthwise 7x7 conv, normalisation, inverted-bottleneck
MLP (1x1 expand x4, activation, 1x1), layer scale and a residual, at constant resolution."""

from __future__ import annotations

import torch
from torch import nn

from engine.models.layers import SpatialDropout, activation, conv3x3, normalization
from engine.registry import BACKBONES


class ConvNeXtBlock(nn.Module):
    def __init__(self, channels: int, norm: str, act: str, dropout: float, mc_dropout: bool, expansion: int = 4):
        super().__init__()
        self.dwconv = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.norm = normalization(norm, channels)
        self.mlp = nn.Sequential(nn.Conv2d(channels, expansion * channels, 1), activation(act),
                                 nn.Conv2d(expansion * channels, channels, 1))
        # Layer scale (ConvNeXt): each block starts as a small perturbation of the identity.
        self.gamma = nn.Parameter(torch.full((channels, 1, 1), 0.1))
        self.drop = SpatialDropout(dropout, mc_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.drop(self.gamma * self.mlp(self.norm(self.dwconv(x))))


@BACKBONES.register("convnext", upsampling=None, temporal=True, description="ConvNeXt blocks (depthwise 7x7 + MLP)")
class ConvNeXtBackbone(nn.Module):
    """(B, in_channels, h, w) -> (B, filters, h, w). ``norm="none"`` is honoured, but ConvNeXt
    is designed around ``norm="layer"``."""

    def __init__(self, in_channels: int, filters: int = 32, blocks: int = 4, norm: str = "none",
                 act: str = "relu", dropout: float = 0.0, mc_dropout: bool = False):
        super().__init__()
        self.stem = conv3x3(in_channels, filters)
        self.blocks = nn.Sequential(*[ConvNeXtBlock(filters, norm, act, dropout, mc_dropout) for _ in range(blocks)])
        self.tail = conv3x3(filters, filters)
        self.out_channels = filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stem = self.stem(x)
        return stem + self.tail(self.blocks(stem))
