"""Output-head pieces that work on the HR grid: static-field fusion and the localized
convolution block (LCB).

Both are built for speed on CPUs: on a 2-core machine the full-resolution part of the network
dominates the step time (each elementwise op at HR costs about as much as a small convolution), so
the head does as few HR operations as it can.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.models.layers import activation, conv3x3


class StaticFusion(nn.Module):
    """Static fields re-entering at HR: ``act(features + conv3x3(static_hr))``.

    Equivalent to DL4DS's concat + 1x1 fusion with a linear static branch, written as a sum so that
    there is no HR concatenation and a single HR activation (which also serves as the nonlinearity
    after the linear last upsampling stage).

    Parameters
    ----------
    static_channels : int
        S, the number of static fields (0: only the activation is applied).
    features : int
        F, channels of the HR features.
    act : str
        Activation name.

    Shapes: features (B, F, H, W), static_hr (B, S, H, W) -> (B, F, H, W).
    """

    def __init__(self, static_channels: int, features: int, act: str):
        super().__init__()
        self.static = conv3x3(static_channels, features) if static_channels else None
        self.act = activation(act)

    def forward(self, features: torch.Tensor, static_hr: torch.Tensor | None) -> torch.Tensor:
        if self.static is not None:
            features = features + self.static(static_hr)
        return self.act(features)


class LocalizedConvBlock(nn.Module):
    """Localized convolution block (LCB): location-specific 1x1 weights over the HR grid.

    DL4DS's LCB is a locally connected 1x1 layer: every HR pixel has its own weights, which lets the
    network learn local biases the inputs do not explain (a valley's cold-air pool, a city). A dense
    per-pixel layer costs ``F * F * H * W`` parameters; here the per-pixel weights are low-rank:
    a learned location embedding ``E`` of ``rank`` channels over the full HR grid is mapped by a 1x1
    convolution to a per-pixel scale and shift of every feature channel,
    ``y = x * (1 + gamma(E)) + beta(E)``, i.e. a per-pixel diagonal 1x1 weight map of rank ``rank``.
    Parameters: ``rank * H * W + rank * 2F + 2F`` (a 128 x 128 grid at rank 4: 66k).

    Patch training: the block needs to know where the patch lies in the full HR grid. Pass
    ``offset`` (B, 2) = HR (row, col) of each sample's top-left pixel; ``offset=None`` means the
    input is the full grid (its shape must then equal ``grid_shape``).

    Parameters
    ----------
    channels : int
        F, feature channels modulated.
    grid_shape : (int, int)
        (H_grid, W_grid) of the full HR domain.
    rank : int
        Channels of the location embedding.
    """

    def __init__(self, channels: int, grid_shape: tuple[int, int], rank: int = 4):
        super().__init__()
        if len(grid_shape) != 2 or min(grid_shape) < 1:
            raise ValueError(f"grid_shape must be (H, W) of the full HR grid, got {grid_shape!r}")
        self.grid_shape = (int(grid_shape[0]), int(grid_shape[1]))
        self.embedding = nn.Parameter(torch.randn(rank, *self.grid_shape) * 0.1)
        self.film = nn.Conv2d(rank, 2 * channels, 1)
        with torch.no_grad():  # start as a near-identity modulation
            self.film.weight.mul_(0.1)
            self.film.bias.zero_()

    def crop(self, offset: torch.Tensor | None, batch: int, height: int, width: int) -> torch.Tensor:
        """The embedding under each sample: (B, rank, height, width)."""
        gh, gw = self.grid_shape
        if offset is None:
            if (height, width) != (gh, gw):
                raise ValueError(
                    f"LCB: input covers {height}x{width} HR pixels but the grid is {gh}x{gw}; pass "
                    "offset=(B, 2) HR (row, col) of each patch's top-left pixel (the dataset's 'offset')"
                )
            return self.embedding.unsqueeze(0).expand(batch, -1, -1, -1)
        offset = torch.as_tensor(offset, device=self.embedding.device).long().reshape(-1, 2)
        if offset.shape[0] != batch:
            raise ValueError(f"LCB: expected offset of shape ({batch}, 2), got {tuple(offset.shape)}")
        if bool((offset < 0).any()) or bool((offset[:, 0] + height > gh).any()) or bool((offset[:, 1] + width > gw).any()):
            raise ValueError(
                f"LCB: a {height}x{width} patch at offsets {offset.tolist()} does not fit in the {gh}x{gw} HR grid"
            )
        rows = offset[:, :1] + torch.arange(height, device=offset.device)  # (B, height)
        cols = offset[:, 1:] + torch.arange(width, device=offset.device)  # (B, width)
        return self.embedding[:, rows[:, :, None], cols[:, None, :]].permute(1, 0, 2, 3)

    def forward(self, x: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
        b, _, h, w = x.shape
        gamma, beta = self.film(self.crop(offset, b, h, w).to(x.dtype)).chunk(2, dim=1)
        return x * (1 + gamma) + beta
