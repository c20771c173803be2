"""Plain convolutional backbone (DL4DS ``convnet``): a stack of conv-norm-act blocks with a global
skip from the stem, so that a deep stack still starts near the identity."""

from __future__ import annotations

import torch
from torch import nn

from engine.models.layers import ConvBlock, conv3x3
from engine.registry import BACKBONES


@BACKBONES.register("convnet", upsampling=None, temporal=True, description="plain stack of conv blocks (DL4DS convnet)")
class ConvNetBackbone(nn.Module):
    """(B, in_channels, h, w) -> (B, filters, h, w).

    Parameters
    ----------
    in_channels : int
    filters : int
        Width of every block.
    blocks : int
        Number of conv-norm-act(-dropout) blocks.
    norm, act, dropout, mc_dropout
        See :class:`engine.models.layers.ConvBlock`.
    """

    def __init__(self, in_channels: int, filters: int = 32, blocks: int = 4, norm: str = "none",
                 act: str = "relu", dropout: float = 0.0, mc_dropout: bool = False):
        super().__init__()
        self.stem = conv3x3(in_channels, filters)
        self.blocks = nn.Sequential(*[ConvBlock(filters, filters, norm, act, dropout, mc_dropout) for _ in range(blocks)])
        self.out_channels = filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stem = self.stem(x)
        return stem + self.blocks(stem)
