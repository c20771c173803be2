"""Conditional PatchGAN discriminator for adversarial training (pix2pix; DL4DS's cGAN).

It sees the condition (the LR inputs interpolated to HR, and the static fields at HR) together
with a candidate HR field, and returns a map of real/fake logits, one per receptive-field patch,
so it judges local texture rather than the whole domain.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.models.upsampling import interpolate


class PatchDiscriminator(nn.Module):
    """(x (B, C_in, h, w) or (B, T, C_in, h, w), static_hr (B, S, H, W), candidate (B, 1, H, W))
    -> logits (B, 1, H / 4, W / 4) (rounded up).

    Parameters
    ----------
    in_channels : int
        LR input channels per time step (the last step of a window is used).
    static_channels : int
    scale : int
    filters : int
        Width of the first layer; doubles after each of the two stride-2 convolutions.
    """

    def __init__(self, in_channels: int, static_channels: int, scale: int, filters: int = 16):
        super().__init__()
        self.in_channels, self.static_channels, self.scale = in_channels, static_channels, scale
        channels = in_channels + static_channels + 1
        f = filters
        self.body = nn.Sequential(
            nn.Conv2d(channels, f, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(f, 2 * f, 4, stride=2, padding=1), nn.GroupNorm(1, 2 * f), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(2 * f, 2 * f, 3, padding=1), nn.GroupNorm(1, 2 * f), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(2 * f, 1, 3, padding=1),
        )

    def forward(self, x: torch.Tensor, static_hr: torch.Tensor | None, candidate: torch.Tensor) -> torch.Tensor:
        if x.ndim == 5:
            x = x[:, -1]
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected x of shape (B, {self.in_channels}, h, w), got {tuple(x.shape)}")
        expected = (x.shape[0], 1, x.shape[2] * self.scale, x.shape[3] * self.scale)
        if tuple(candidate.shape) != expected:
            raise ValueError(f"expected a candidate of shape {expected}, got {tuple(candidate.shape)}")
        parts = [interpolate(x, self.scale, "bilinear"), candidate.to(x.dtype)]
        if self.static_channels:
            parts.insert(1, static_hr)
        return self.body(torch.cat(parts, dim=1))
