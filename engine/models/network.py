"""The downscaling network: backbone + upsampling + output head, assembled from ModelConfig.

Data flow (post-upsampling, e.g. ``spc``)::

    x (B, C_in, h, w) --backbone--> (B, F, h, w) --upsample--> (B, F, H, W)
    static_hr (B, S, H, W) --conv block--> (B, F, H, W)  --concat + 1x1 fusion--> (B, F, H, W)
    --channel attention (optional)--> --conv3x3--> (B, 1, H, W)  [+ interpolated x[:, 0]]

With ``pin`` the input (and the static fields at HR) are interpolated first and the backbone runs
at HR. Channel 0 of ``x`` is always the target variable at LR (the dataset guarantees it).
"""

from __future__ import annotations

import torch
from torch import nn

from engine.config import ModelConfig
from engine.models.layers import ChannelAttention, ConvBlock, activation
from engine.models.upsampling import PreInterpolation, interpolate
from engine.registry import BACKBONES, UPSAMPLERS


class DownscalingNet(nn.Module):
    """A deterministic downscaling network.

    Parameters
    ----------
    cfg : ModelConfig
    in_channels : int
        LR input channels (target variable, predictors, static fields coarsened to LR).
    static_channels : int
        Static fields at HR (0 for none).
    scale : int
        HR / LR grid ratio.

    Examples
    --------
    >>> net = DownscalingNet(ModelConfig(filters=8, blocks=1), in_channels=3, static_channels=2, scale=4)
    >>> net(torch.zeros(2, 3, 8, 8), torch.zeros(2, 2, 32, 32)).shape
    torch.Size([2, 1, 32, 32])
    """

    def __init__(self, cfg: ModelConfig, in_channels: int, static_channels: int, scale: int):
        super().__init__()
        self.cfg = cfg
        self.in_channels = in_channels
        self.static_channels = static_channels
        self.scale = scale
        self.pre_upsampling = bool(UPSAMPLERS.info(cfg.upsampling).get("pre"))
        backbone_cls = BACKBONES.get(cfg.backbone)
        options = dict(filters=cfg.filters, blocks=cfg.blocks, norm=cfg.normalization, act=cfg.activation,
                       dropout=cfg.dropout, mc_dropout=cfg.mc_dropout)
        if self.pre_upsampling:
            self.pre = PreInterpolation(scale, cfg.interpolation)
            self.backbone = backbone_cls(in_channels + static_channels, **options)
            self.upsample = nn.Identity()
        else:
            self.backbone = backbone_cls(in_channels, **options)
            self.upsample = UPSAMPLERS.get(cfg.upsampling)(self.backbone.out_channels, scale, cfg.activation)
        features = self.backbone.out_channels
        self.use_static_hr = cfg.static_hr and static_channels > 0
        if self.use_static_hr:
            # Static fields re-enter at HR, where their fine detail (terrain) is resolved.
            self.static_block = nn.Sequential(ConvBlock(static_channels, features, act=cfg.activation),
                                              ConvBlock(features, features, act=cfg.activation))
            self.fusion = nn.Sequential(nn.Conv2d(2 * features, features, 1), activation(cfg.activation))
        self.attention = ChannelAttention(features) if cfg.attention else nn.Identity()
        self.output = nn.Conv2d(features, 1, 3, padding=1)
        if cfg.residual:
            # Start close to the interpolation baseline: a small initial correction (not zero,
            # so that gradients reach every layer from the first step).
            with torch.no_grad():
                self.output.weight.mul_(0.1)
                self.output.bias.zero_()

    def check_shapes(self, x: torch.Tensor, static_hr: torch.Tensor | None) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected x of shape (B, {self.in_channels}, h, w), got {tuple(x.shape)}")
        if self.static_channels:
            expected = (x.shape[0], self.static_channels, x.shape[2] * self.scale, x.shape[3] * self.scale)
            if static_hr is None or tuple(static_hr.shape) != expected:
                got = None if static_hr is None else tuple(static_hr.shape)
                raise ValueError(f"expected static_hr of shape {expected} (B, S, h*{self.scale}, w*{self.scale}), got {got}")

    def forward(self, x: torch.Tensor, static_hr: torch.Tensor | None = None) -> torch.Tensor:
        self.check_shapes(x, static_hr)
        if self.pre_upsampling:
            hr_input = self.pre(x)
            if self.static_channels:
                hr_input = torch.cat([hr_input, static_hr], dim=1)
            features = self.backbone(hr_input)
        else:
            features = self.upsample(self.backbone(x))
        if self.use_static_hr:
            features = self.fusion(torch.cat([features, self.static_block(static_hr)], dim=1))
        out = self.output(self.attention(features))
        if self.cfg.residual:
            out = out + interpolate(x[:, :1], self.scale, self.cfg.interpolation)
        return out
