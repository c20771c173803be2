"""Interpolation baselines (nearest, bilinear, bicubic): the yardstick every model is scored
against. They have the same ``forward(x, static_hr)`` as the learned models and use channel 0 of
``x`` (the target variable at LR)."""

from __future__ import annotations

import torch
from torch import nn

from engine.models.upsampling import interpolate
from engine.registry import BASELINES


class InterpolationBaseline(nn.Module):
    def __init__(self, mode: str, scale: int, channel: int = 0):
        super().__init__()
        self.mode, self.scale, self.channel = mode, scale, channel

    def forward(self, x: torch.Tensor, static_hr: torch.Tensor | None = None,
                offset: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"expected x of shape (B, C, h, w), got {tuple(x.shape)}")
        return interpolate(x[:, self.channel : self.channel + 1], self.scale, self.mode)


for _mode in ("nearest", "bilinear", "bicubic"):
    BASELINES.register(_mode, description=f"{_mode} interpolation")(InterpolationBaseline)
