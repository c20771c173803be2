"""Small building blocks shared by the backbones and heads: activations, normalisation,
convolution blocks, channel attention, spatial (Monte-Carlo) dropout."""

from __future__ import annotations

import torch
from torch import nn


def activation(name: str) -> nn.Module:
    """An activation module by name (the names accepted by ``ModelConfig.activation``)."""
    table = {
        "relu": lambda: nn.ReLU(inplace=True),
        "gelu": nn.GELU,
        "silu": lambda: nn.SiLU(inplace=True),
        "leaky_relu": lambda: nn.LeakyReLU(0.2, inplace=True),
        "elu": lambda: nn.ELU(inplace=True),
        "prelu": nn.PReLU,
    }
    if name not in table:
        raise ValueError(f"unknown activation {name!r}; accepted: {', '.join(table)}")
    return table[name]()


class LayerNorm2d(nn.Module):
    """Layer normalisation over channels for (B, C, H, W) tensors (as in ConvNeXt)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


def normalization(name: str, channels: int) -> nn.Module:
    """``"batch"``, ``"layer"`` or ``"none"`` (identity)."""
    if name == "batch":
        return nn.BatchNorm2d(channels)
    if name == "layer":
        return LayerNorm2d(channels)
    if name == "none":
        return nn.Identity()
    raise ValueError(f"unknown normalization {name!r}; accepted: batch, layer, none")


class SpatialDropout(nn.Module):
    """Channel-wise (spatial) dropout. With ``always_on`` it stays active in eval mode, which
    turns a deterministic network into a Monte-Carlo dropout ensemble at inference."""

    def __init__(self, p: float, always_on: bool = False):
        super().__init__()
        self.p = p
        self.always_on = always_on

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0:
            return x
        return nn.functional.dropout2d(x, self.p, training=self.training or self.always_on)


def conv3x3(in_ch: int, out_ch: int) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, padding=1)


class ConvBlock(nn.Module):
    """conv3x3 -> norm -> activation (-> dropout)."""

    def __init__(self, in_ch: int, out_ch: int, norm: str = "none", act: str = "relu", dropout: float = 0.0, mc_dropout: bool = False):
        super().__init__()
        self.conv = conv3x3(in_ch, out_ch)
        self.norm = normalization(norm, out_ch)
        self.act = activation(act)
        self.drop = SpatialDropout(dropout, mc_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.act(self.norm(self.conv(x))))


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation channel attention (as in RCAN and DL4DS)."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)
