"""A SwinIR-style windowed-transformer backbone (beyond DL4DS): residual groups of (shifted)
window self-attention layers with a learned relative-position bias, each group closed by a 3x3
convolution, and a global skip (Liang et al. 2021, SwinIR; as in DeepR's ConvSwin2SR).

Attention is local (``window`` x ``window`` pixels), so cost grows linearly with the grid; the
shifted windows of every second layer connect neighbouring windows. Any grid size works: the input
is padded (replicate) to a multiple of the window and the output cropped back.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.models.layers import SpatialDropout, activation, conv3x3
from engine.registry import BACKBONES


def _partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * nW, window * window, C)."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def _reverse(windows: torch.Tensor, window: int, b: int, h: int, w: int) -> torch.Tensor:
    """(B * nW, window * window, C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.view(b, h // window, w // window, window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows, with a relative-position bias table."""

    def __init__(self, dim: int, heads: int, window: int):
        super().__init__()
        self.heads, self.window = heads, window
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.bias_table = nn.Parameter(torch.randn((2 * window - 1) ** 2, heads) * 0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
        self.register_buffer("rel_index", rel[..., 0] * (2 * window - 1) + rel[..., 1], persistent=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, batch: int) -> torch.Tensor:
        n, length, dim = x.shape
        q, k, v = self.qkv(x).view(n, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        bias = self.bias_table[self.rel_index].permute(2, 0, 1)[None]  # (1, heads, L, L)
        if mask is not None:  # (nW, L, L): -100 between pixels that the shift made neighbours
            bias = (bias + mask[:, None]).repeat(batch, 1, 1, 1)
        out = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return self.proj(out.transpose(1, 2).reshape(n, length, dim))


class SwinLayer(nn.Module):
    def __init__(self, dim: int, heads: int, window: int, shift: int, act: str, mlp_ratio: int = 2):
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), activation(act), nn.Linear(mlp_ratio * dim, dim))

    def _mask(self, h: int, w: int, device) -> torch.Tensor:
        region = torch.zeros(1, h, w, 1, device=device)
        cuts = (slice(0, -self.window), slice(-self.window, -self.shift), slice(-self.shift, None))
        label = 0
        for hs in cuts:
            for ws in cuts:
                region[:, hs, ws] = label
                label += 1
        windows = _partition(region, self.window)[..., 0]  # (nW, L)
        diff = windows[:, None, :] - windows[:, :, None]
        return torch.zeros_like(diff).masked_fill(diff != 0, -100.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) with H, W multiples of the window."""
        b, h, w, _ = x.shape
        y = self.norm1(x)
        mask = None
        if self.shift:
            y = torch.roll(y, (-self.shift, -self.shift), dims=(1, 2))
            mask = self._mask(h, w, x.device)
        y = _reverse(self.attn(_partition(y, self.window), mask, b), self.window, b, h, w)
        if self.shift:
            y = torch.roll(y, (self.shift, self.shift), dims=(1, 2))
        x = x + y
        return x + self.mlp(self.norm2(x))


class SwinGroup(nn.Module):
    """Residual Swin transformer block (SwinIR's RSTB): layers, then a 3x3 conv, plus the input."""

    def __init__(self, dim: int, heads: int, window: int, layers: int, act: str, dropout: float, mc_dropout: bool):
        super().__init__()
        self.layers = nn.ModuleList(
            SwinLayer(dim, heads, window, shift=(window // 2 if i % 2 else 0), act=act) for i in range(layers)
        )
        self.conv = conv3x3(dim, dim)
        self.drop = SpatialDropout(dropout, mc_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.permute(0, 2, 3, 1)  # (B, H, W, C); free for channels-last tensors
        for layer in self.layers:
            y = layer(y)
        return x + self.drop(self.conv(y.permute(0, 3, 1, 2)))


def _heads(filters: int) -> int:
    """The most heads (up to 4) that leave at least 4 channels per head."""
    return next(h for h in (4, 2, 1) if filters % h == 0 and filters // h >= 4 or h == 1)


@BACKBONES.register("swin", upsampling=None, temporal=False,
                    description="SwinIR-style windowed transformer (shifted 4x4 windows)")
class SwinBackbone(nn.Module):
    """(B, in_channels, h, w) -> (B, filters, h, w).

    ``blocks`` residual groups of two layers (plain, then shifted windows). Transformers need
    their LayerNorm, so ``norm`` is not used here; ``act`` is the MLP's activation.
    """

    def __init__(self, in_channels: int, filters: int = 32, blocks: int = 4, norm: str = "none",
                 act: str = "gelu", dropout: float = 0.0, mc_dropout: bool = False, window: int = 4):
        super().__init__()
        self.window = window
        self.stem = conv3x3(in_channels, filters)
        self.groups = nn.Sequential(*[SwinGroup(filters, _heads(filters), window, 2, act, dropout, mc_dropout)
                                      for _ in range(blocks)])
        self.tail = conv3x3(filters, filters)
        self.out_channels = filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"expected (B, C, h, w), got {tuple(x.shape)}")
        height, width = x.shape[-2:]
        pad_h, pad_w = -height % self.window, -width % self.window
        if pad_h or pad_w:
            x = nn.functional.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        stem = self.stem(x)
        return (stem + self.tail(self.groups(stem)))[..., :height, :width]
