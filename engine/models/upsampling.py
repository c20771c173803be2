"""Upsampling methods (DL4DS's grid): where and how the network goes from the LR to the HR grid.

- ``pin``: interpolate the input to the HR grid first, then run the backbone at HR
  ("pre-upsampling"; any scale factor, also non-integer grids made integer by pairing).
- ``spc``: sub-pixel convolution (pixel shuffle) after the backbone; x4 and x8 are stacks of x2.
- ``rc``: resize (nearest) + convolution after the backbone.
- ``dc``: transposed ("de-") convolution after the backbone.

Each post-upsampler maps (B, C, h, w) -> (B, C, h*scale, w*scale). The last stage is linear (no
activation, as in EDSR): the network's HR head applies one activation after adding the static-field
features, which saves a full-resolution activation (the most expensive elementwise op on CPU).
"""

from __future__ import annotations

import torch
from torch import nn

from engine.models.layers import activation
from engine.registry import UPSAMPLERS

POST_SCALES = (2, 3, 4, 5, 8)


def _stages(scale: int) -> list[int]:
    """Factor ``scale`` into x2 stages where possible (x4 = x2 x2, x8 = x2 x2 x2)."""
    if scale in (2, 3, 5):
        return [scale]
    if scale == 4:
        return [2, 2]
    if scale == 8:
        return [2, 2, 2]
    raise ValueError(f"post-upsampling supports scales {POST_SCALES}, got {scale}; use upsampling='pin' for other factors")


@UPSAMPLERS.register("spc", scales=POST_SCALES, pre=False, description="sub-pixel convolution (pixel shuffle)")
class SubPixelUpsampler(nn.Module):
    def __init__(self, channels: int, scale: int, act: str = "relu"):
        super().__init__()
        layers: list[nn.Module] = []
        for factor in _stages(scale):
            layers += [nn.Conv2d(channels, channels * factor * factor, 3, padding=1), nn.PixelShuffle(factor), activation(act)]
        self.body = nn.Sequential(*layers[:-1])  # linear last stage (see the module docstring)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@UPSAMPLERS.register("rc", scales=POST_SCALES, pre=False, description="resize (nearest) + convolution")
class ResizeConvUpsampler(nn.Module):
    def __init__(self, channels: int, scale: int, act: str = "relu"):
        super().__init__()
        layers: list[nn.Module] = []
        for factor in _stages(scale):
            layers += [nn.Upsample(scale_factor=factor, mode="nearest"), nn.Conv2d(channels, channels, 3, padding=1), activation(act)]
        self.body = nn.Sequential(*layers[:-1])  # linear last stage (see the module docstring)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@UPSAMPLERS.register("dc", scales=POST_SCALES, pre=False, description="transposed convolution")
class DeconvUpsampler(nn.Module):
    def __init__(self, channels: int, scale: int, act: str = "relu"):
        super().__init__()
        layers: list[nn.Module] = []
        for factor in _stages(scale):
            # kernel = 2*factor - factor%2 with this padding gives exactly h*factor (no checkerboard
            # from an odd kernel/stride mismatch for the even factors).
            kernel = 2 * factor - factor % 2
            padding = (kernel - factor) // 2
            layers += [nn.ConvTranspose2d(channels, channels, kernel, stride=factor, padding=padding), activation(act)]
        self.body = nn.Sequential(*layers[:-1])  # linear last stage (see the module docstring)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@UPSAMPLERS.register("pin", scales=None, pre=True, description="interpolate the input first, backbone at HR")
class PreInterpolation(nn.Module):
    """Interpolates the LR input to the HR grid (nearest, bilinear or bicubic) before the backbone."""

    def __init__(self, scale: int, mode: str = "bicubic"):
        super().__init__()
        self.scale = scale
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return interpolate(x, self.scale, self.mode)


def interpolate(x: torch.Tensor, scale: int, mode: str) -> torch.Tensor:
    """Upsample (B, C, h, w) by an integer factor. Pixel-centre geometry (``align_corners=False``)
    matches block-mean coarsening, so an upsampled constant field stays constant."""
    if mode == "nearest":
        return nn.functional.interpolate(x, scale_factor=scale, mode="nearest")
    if mode in ("bilinear", "bicubic"):
        return nn.functional.interpolate(x, scale_factor=scale, mode=mode, align_corners=False)
    raise ValueError(f"unknown interpolation {mode!r}; accepted: nearest, bilinear, bicubic")
