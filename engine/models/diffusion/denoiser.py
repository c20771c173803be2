"""Denoisers: networks ``eps = denoiser(z_t, t, cond)`` that predict the noise in a noisy HR field.

They know nothing of noise schedules or samplers (:mod:`engine.models.diffusion.sampling`): the
sampler receives the denoiser as an object, as in diffusers and physicsnemo.

- :class:`UNetDenoiser` (``model.denoiser="unet"``): our own small convolutional U-Net with a
  sinusoidal time embedding added to every residual block. No attention and no normalisation over
  the whole field, so its receptive field is finite and it tiles exactly (patch stitching).
- :class:`DiffusersDenoiser` (``model.denoiser="diffusers"``): diffusers' ``UNet2DModel`` with
  plain down/up blocks, conditioned by channel concatenation
  as in DeepR.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from engine.config import DENOISERS  # noqa: E402  (one list, validated by the configuration)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding (B,) -> (B, dim) of integer or real timesteps (as in DDPM)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / max(half, 1))
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return nn.functional.pad(emb, (0, dim - emb.shape[1]))


class _ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, emb_dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.time = nn.Linear(emb_dim, out_ch)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.act(self.conv1(x) + self.time(emb)[:, :, None, None])
        return self.skip(x) + self.conv2(h)


class UNetDenoiser(nn.Module):
    """A small conditional U-Net: (z_t (B, 1, H, W), t (B,), cond (B, C, H, W)) -> (B, 1, H, W).

    Parameters
    ----------
    cond_channels : C, the conditioning channels (interpolated LR inputs, static fields, the mean).
    filters : width of the first level; level ``l`` has ``filters * 2**l`` channels.
    levels : number of 2x downsamplings (1 to 4). H and W are padded (replicate) to a multiple of
        ``2**levels`` and cropped back, so any grid works; tiles aligned to ``2**levels`` tile exactly.

    Examples
    --------
    >>> net = UNetDenoiser(cond_channels=3, filters=4, levels=2)
    >>> net(torch.zeros(2, 1, 16, 24), torch.tensor([1, 500]), torch.zeros(2, 3, 16, 24)).shape
    torch.Size([2, 1, 16, 24])
    """

    def __init__(self, cond_channels: int, filters: int = 32, levels: int = 2):
        super().__init__()
        if not 1 <= levels <= 4:
            raise ValueError(f"levels={levels} is not valid; accepted: 1 to 4")
        self.cond_channels, self.levels = cond_channels, levels
        widths = [filters * 2**i for i in range(levels + 1)]
        emb = 4 * filters
        self.emb_dim = emb
        self.time_mlp = nn.Sequential(nn.Linear(emb, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.stem = nn.Conv2d(1 + cond_channels, widths[0], 3, padding=1)
        self.down = nn.ModuleList(_ResBlock(widths[i], widths[i + 1], emb) for i in range(levels))
        self.mid = _ResBlock(widths[-1], widths[-1], emb)
        self.up = nn.ModuleList(_ResBlock(widths[i + 1] + widths[i], widths[i], emb) for i in range(levels))
        self.first = _ResBlock(widths[0], widths[0], emb)
        self.out = nn.Conv2d(widths[0], 1, 3, padding=1)
        self.pool = nn.AvgPool2d(2)

    @property
    def multiple(self) -> int:
        """Grid sizes and tile offsets that keep the network translation-equivariant."""
        return 2**self.levels

    def forward(self, z: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Predict the noise in ``z``.

        Parameters
        ----------
        z : (B, 1, H, W) noisy field; t : (B,) or scalar timestep; cond : (B, C, H, W)
        """
        if z.ndim != 4 or z.shape[1] != 1:
            raise ValueError(f"expected z of shape (B, 1, H, W), got {tuple(z.shape)}")
        if cond.shape != (z.shape[0], self.cond_channels, *z.shape[-2:]):
            raise ValueError(f"expected cond of shape {(z.shape[0], self.cond_channels, *z.shape[-2:])} "
                             f"(B, C_cond, H, W), got {tuple(cond.shape)}")
        t = t.reshape(-1).expand(z.shape[0]) if t.numel() == 1 else t
        H, W = z.shape[-2:]
        m = self.multiple
        h = torch.cat([z, cond], dim=1)
        if H % m or W % m:
            h = nn.functional.pad(h, (0, -W % m, 0, -H % m), mode="replicate")
        emb = self.time_mlp(timestep_embedding(t, self.emb_dim))
        h = self.first(self.stem(h), emb)
        skips = []
        for block in self.down:
            skips.append(h)
            h = block(self.pool(h), emb)
        h = self.mid(h, emb)
        for i in reversed(range(self.levels)):
            h = nn.functional.interpolate(h, scale_factor=2, mode="nearest")
            h = self.up[i](torch.cat([h, skips[i]], dim=1), emb)
        return self.out(h)[..., :H, :W]


class DiffusersDenoiser(nn.Module):
    """diffusers ``UNet2DModel`` behind the same interface as :class:`UNetDenoiser`.

    Plain ``DownBlock2D`` / ``UpBlock2D`` (no attention), GroupNorm with as many groups as divide
    ``filters`` (at most 8). GroupNorm's statistics span the whole input, so the receptive field is
    the whole field: tiled sampling of this denoiser is refused (use ``model.denoiser="unet"``).
    """

    def __init__(self, cond_channels: int, filters: int = 32, levels: int = 2):
        super().__init__()
        from diffusers import UNet2DModel

        if not 1 <= levels <= 4:
            raise ValueError(f"levels={levels} is not valid; accepted: 1 to 4")
        self.cond_channels, self.levels = cond_channels, levels
        groups = max(g for g in (1, 2, 4, 8) if filters % g == 0)
        self.unet = UNet2DModel(
            sample_size=None, in_channels=1 + cond_channels, out_channels=1,
            block_out_channels=tuple(filters * 2**i for i in range(levels + 1))[: levels + 1],
            down_block_types=("DownBlock2D",) * (levels + 1), up_block_types=("UpBlock2D",) * (levels + 1),
            layers_per_block=1, norm_num_groups=groups, add_attention=False)

    @property
    def multiple(self) -> int:
        return 2**self.levels

    def forward(self, z: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if z.ndim != 4 or z.shape[1] != 1:
            raise ValueError(f"expected z of shape (B, 1, H, W), got {tuple(z.shape)}")
        if cond.shape != (z.shape[0], self.cond_channels, *z.shape[-2:]):
            raise ValueError(f"expected cond of shape {(z.shape[0], self.cond_channels, *z.shape[-2:])} "
                             f"(B, C_cond, H, W), got {tuple(cond.shape)}")
        H, W = z.shape[-2:]
        m = self.multiple
        h = torch.cat([z, cond], dim=1)
        if H % m or W % m:
            h = nn.functional.pad(h, (0, -W % m, 0, -H % m), mode="replicate")
        t = t.reshape(-1).expand(z.shape[0]) if t.numel() == 1 else t
        return self.unet(h, t).sample[..., :H, :W]


def build_denoiser(name: str, cond_channels: int, filters: int, levels: int) -> nn.Module:
    """A denoiser by name (``model.denoiser``): ``unet`` or ``diffusers``."""
    if name == "unet":
        return UNetDenoiser(cond_channels, filters, levels)
    if name == "diffusers":
        return DiffusersDenoiser(cond_channels, filters, levels)
    raise ValueError(f"unknown denoiser {name!r}; accepted: {', '.join(DENOISERS)}")
