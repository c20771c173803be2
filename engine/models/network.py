"""The downscaling network: (temporal encoder) + backbone + upsampling + HR head, from ModelConfig.

Data flow (post-upsampling, e.g. ``spc``)::

    x (B, C_in, h, w)  [or (B, T, C_in, h, w) --ConvGRU--> (B, F + C_in, h, w)]
      --backbone--> (B, F, h, w) --upsample (linear last stage)--> (B, F, H, W)
    static_hr (B, S, H, W) --conv3x3--> (B, F, H, W), summed in, then one activation
      --LCB (optional, needs the patch offset)--> --channel attention (optional)-->
      --conv3x3--> (B, 1, H, W)  [+ interpolated x[:, 0] when residual]

With ``pin`` the input (and the static fields at HR) are interpolated first and the backbone runs
at HR. Channel 0 of ``x`` is always the target variable at LR (the dataset guarantees it).

Why the HR head looks the way it does: on a CPU, the full-resolution part dominates the training
step, and every HR elementwise op (activation, concatenation) costs about as much as a small
convolution there. DL4DS's head (two conv blocks on the static fields, concat, 1x1 fusion, four
HR activations) is therefore written as one static conv summed into the upsampled features and a
single HR activation; see ``benchmarks/zoo.py --speed`` for the measured effect.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.config import ModelConfig
from engine.models.heads import LocalizedConvBlock, StaticFusion
from engine.models.layers import ChannelAttention
from engine.models.temporal import TemporalEncoder
from engine.models.upsampling import interpolate
from engine.registry import BACKBONES, UPSAMPLERS


def check_inputs(x: torch.Tensor, static_hr: torch.Tensor | None, in_channels: int, static_channels: int,
                 scale: int, time_window: int = 1) -> None:
    """Check a network's inputs up front, with the expected shapes in the message: x is
    (B, C, h, w) (or (B, T, C, h, w) for T > 1) and static_hr is (B, S, h*scale, w*scale)."""
    t = time_window
    if t > 1:
        if x.ndim != 5 or x.shape[1] != t or x.shape[2] != in_channels:
            raise ValueError(f"expected x of shape (B, T={t}, C={in_channels}, h, w), got {tuple(x.shape)}")
    elif x.ndim != 4 or x.shape[1] != in_channels:
        raise ValueError(f"expected x of shape (B, C={in_channels}, h, w), got {tuple(x.shape)}")
    if static_channels:
        expected = (x.shape[0], static_channels, x.shape[-2] * scale, x.shape[-1] * scale)
        if static_hr is None or tuple(static_hr.shape) != expected:
            got = None if static_hr is None else tuple(static_hr.shape)
            raise ValueError(f"expected static_hr of shape {expected} (B, S, h*{scale}, w*{scale}), got {got}")


class DownscalingNet(nn.Module):
    """A deterministic downscaling network.

    Parameters
    ----------
    cfg : ModelConfig
    in_channels : int
        LR input channels per time step (target variable, predictors, static coarsened to LR).
    static_channels : int
        Static fields at HR (0 for none).
    scale : int
        HR / LR grid ratio.
    time_window : int
        T, consecutive LR steps per sample; T > 1 adds a ConvGRU encoder and ``x`` is then
        (B, T, C_in, h, w).
    grid_shape : (int, int), optional
        (H, W) of the full HR domain; required by the localized convolution block (``cfg.lcb``).

    Examples
    --------
    >>> net = DownscalingNet(ModelConfig(filters=8, blocks=1), in_channels=3, static_channels=2, scale=4)
    >>> net(torch.zeros(2, 3, 8, 8), torch.zeros(2, 2, 32, 32)).shape
    torch.Size([2, 1, 32, 32])
    """

    def __init__(self, cfg: ModelConfig, in_channels: int, static_channels: int, scale: int,
                 time_window: int = 1, grid_shape: tuple[int, int] | None = None):
        super().__init__()
        if time_window < 1:
            raise ValueError(f"time_window={time_window} is not valid; expected an integer >= 1")
        if time_window > 1 and not BACKBONES.info(cfg.backbone).get("temporal"):
            temporal = [b for b in BACKBONES.names() if BACKBONES.info(b).get("temporal")]
            raise ValueError(f"backbone {cfg.backbone!r} has no spatio-temporal variant; accepted: {', '.join(temporal)}")
        allowed = BACKBONES.info(cfg.backbone).get("upsampling")
        if allowed and cfg.upsampling not in allowed:
            raise ValueError(f"backbone {cfg.backbone!r} cannot be combined with upsampling {cfg.upsampling!r}; "
                             f"accepted: {', '.join(allowed)}")
        scales = UPSAMPLERS.info(cfg.upsampling).get("scales")
        if scales and scale not in scales:
            raise ValueError(f"upsampling {cfg.upsampling!r} does not support scale {scale}; accepted: "
                             f"{', '.join(map(str, scales))} (use upsampling='pin' for any factor)")
        if cfg.lcb and grid_shape is None:
            raise ValueError("model.lcb=True needs the full HR grid: build_model(..., grid_shape=(H, W)); "
                             "patch samples must then carry their 'offset' (HR row, col of the top-left pixel)")
        self.cfg = cfg
        self.in_channels = in_channels
        self.static_channels = static_channels
        self.scale = scale
        self.time_window = time_window
        self.pre_upsampling = bool(UPSAMPLERS.info(cfg.upsampling).get("pre"))
        options = dict(filters=cfg.filters, blocks=cfg.blocks, norm=cfg.normalization, act=cfg.activation,
                       dropout=cfg.dropout, mc_dropout=cfg.mc_dropout)
        channels = in_channels + (static_channels if self.pre_upsampling else 0)
        self.temporal = TemporalEncoder(channels, cfg.filters, cfg.activation) if time_window > 1 else None
        if self.temporal is not None:
            channels = self.temporal.out_channels
        self.backbone = BACKBONES.get(cfg.backbone)(channels, **options)
        features = self.backbone.out_channels
        if self.pre_upsampling:
            self.upsample = nn.Identity()
        else:
            self.upsample = UPSAMPLERS.get(cfg.upsampling)(features, scale, cfg.activation)
        self.use_static_hr = cfg.static_hr and static_channels > 0
        self.fusion = StaticFusion(static_channels if self.use_static_hr else 0, features, cfg.activation)
        self.lcb = LocalizedConvBlock(features, grid_shape) if cfg.lcb else None
        self.attention = ChannelAttention(features) if cfg.attention else nn.Identity()
        self.output = nn.Conv2d(features, 1, 3, padding=1)
        if cfg.residual:
            # Start close to the interpolation baseline: a small initial correction (not zero,
            # so that gradients reach every layer from the first step).
            with torch.no_grad():
                self.output.weight.mul_(0.1)
                self.output.bias.zero_()

    def check_shapes(self, x: torch.Tensor, static_hr: torch.Tensor | None) -> None:
        check_inputs(x, static_hr, self.in_channels, self.static_channels, self.scale, self.time_window)

    def forward(self, x: torch.Tensor, static_hr: torch.Tensor | None = None,
                offset: torch.Tensor | None = None) -> torch.Tensor:
        """Predict the HR target.

        Parameters
        ----------
        x : (B, C_in, h, w), or (B, T, C_in, h, w) when ``time_window`` > 1
        static_hr : (B, S, h*scale, w*scale), or None when S = 0
        offset : (B, 2) int, optional
            HR (row, col) of each sample's top-left pixel in the full grid (used by the LCB only).

        Returns
        -------
        (B, 1, h*scale, w*scale)
        """
        if x.ndim == 5 and self.time_window == 1 and x.shape[1] == 1:
            x = x[:, 0]  # a spatio-temporal sample with a window of one step
        self.check_shapes(x, static_hr)
        last = x[:, -1] if x.ndim == 5 else x
        if self.pre_upsampling:
            if x.ndim == 5:
                b, t, c, h, w = x.shape
                hr = interpolate(x.reshape(b * t, c, h, w), self.scale, self.cfg.interpolation)
                hr = hr.reshape(b, t, c, *hr.shape[-2:])
                if self.static_channels:
                    hr = torch.cat([hr, static_hr.unsqueeze(1).expand(-1, t, -1, -1, -1)], dim=2)
            else:
                hr = interpolate(x, self.scale, self.cfg.interpolation)
                if self.static_channels:
                    hr = torch.cat([hr, static_hr], dim=1)
            features = self.backbone(self.temporal(hr) if self.temporal is not None else hr)
        else:
            features = self.upsample(self.backbone(self.temporal(x) if self.temporal is not None else x))
        features = self.fusion(features, static_hr if self.use_static_hr else None)
        if self.lcb is not None:
            features = self.lcb(features, offset)
        out = self.output(self.attention(features))
        if self.cfg.residual:
            out = out + interpolate(last[:, :1], self.scale, self.cfg.interpolation)
        return out
