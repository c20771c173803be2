"""DeepESD (Baño-Medina et al. 2020, 2022): the CORDEX ML-Bench reference model.

Three 3x3 convolutions on the coarse predictors (50, 25 and 1 filters, as in the benchmark's
``training/training.py``) and one dense layer from the flattened feature map to every target
cell. The dense layer is what makes it an *emulator* of a whole domain: each HR cell gets its own
weights over every coarse cell, so the model learns where the target grid lies under the
predictor grid without being told (the ALPS target is on a Lambert grid inside a regular
predictor grid; it does not matter to DeepESD).

Unlike the other families it is not a constant-resolution backbone in front of an upsampler: it
has no upsampling stage, so it is registered with ``upsampling=("pin",)`` (no learned upsampler)
``standalone=True``: :func:`engine.models.build_model` builds it instead of
:class:`~engine.models.network.DownscalingNet`. Static HR fields (orography) enter as one 3x3
convolution added to the output, the simplest way to offer the benchmark's "with orography"
variant.

It maps the *full* LR domain to the *full* HR domain: the dense layer is sized from
``grid_shape`` (or, without it, from the first input it sees), and a different input size later
is refused with both shapes in the message.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedParameter

from engine.config import ModelConfig
from engine.models.layers import ConvBlock, activation, conv3x3
from engine.registry import BACKBONES

WIDTHS = (50, 25, 1)  # the benchmark's DeepESD (filters_last_conv=1)


class _Dense(LazyModuleMixin, nn.Module):
    """Dense layer (B, C, h, w) -> (B, 1, h*scale, w*scale): one weight per (HR cell, LR feature).

    Sized at construction when the LR shape is known, else from the first input (lazily, which
    also lets a checkpoint be loaded into a fresh model before any forward pass).
    """

    cls_to_become = None

    def __init__(self, channels: int, scale: int, lr_shape: tuple[int, int] | None):
        with warnings.catch_warnings():
            # torch warns that lazy modules are new; this one is small and tested here.
            warnings.simplefilter("ignore", UserWarning)
            super().__init__()
        self.channels, self.scale = channels, scale
        self.weight = UninitializedParameter()
        self.bias = UninitializedParameter()
        if lr_shape is not None:
            self._materialise(*lr_shape)

    def _materialise(self, h: int, w: int) -> None:
        n_in, n_out = self.channels * h * w, (h * self.scale) * (w * self.scale)
        with torch.no_grad():
            self.weight.materialize((n_out, n_in))
            self.bias.materialize((n_out,))
            bound = 1.0 / math.sqrt(n_in)  # nn.Linear's default initialisation
            nn.init.uniform_(self.weight, -bound, bound)
            nn.init.uniform_(self.bias, -bound, bound)

    def initialize_parameters(self, x: torch.Tensor) -> None:  # called by LazyModuleMixin
        if self.has_uninitialized_params():
            self._materialise(x.shape[-2], x.shape[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if c * h * w != self.weight.shape[1]:
            raise ValueError(
                f"DeepESD's dense layer was built for {self.weight.shape[1] // self.channels} LR cells "
                f"({self.channels} feature channel), got an input of {h}x{w}; DeepESD maps the full LR "
                "domain to the full HR domain (no patches)")
        out = nn.functional.linear(x.reshape(b, -1), self.weight, self.bias)
        return out.reshape(b, 1, h * self.scale, w * self.scale)


@BACKBONES.register("deepesd", upsampling=("pin",), temporal=False, standalone=True,
                    description="DeepESD: 3 convolutions on the coarse predictors + a dense layer to every HR cell "
                                "(CORDEX ML-Bench reference)")
class DeepESD(nn.Module):
    """The DeepESD network, with the zoo's forward contract.

    Parameters
    ----------
    cfg : ModelConfig
        ``normalization``, ``activation``, ``dropout``, ``mc_dropout`` and ``static_hr`` apply;
        widths are DeepESD's own (50, 25, 1).
    in_channels : int
        Predictor channels of ``x``.
    static_channels : int
        Static HR fields (0 for none).
    scale : int
        HR / LR ratio (8 for ML-Bench: 16 x 16 -> 128 x 128).
    grid_shape : (H, W), optional
        Full HR grid; sizes the dense layer now (else at the first forward pass).

    Examples
    --------
    >>> net = DeepESD(ModelConfig(backbone="deepesd", upsampling="pin"), 15, 1, 8, grid_shape=(128, 128))
    >>> net(torch.zeros(2, 15, 16, 16), torch.zeros(2, 1, 128, 128)).shape
    torch.Size([2, 1, 128, 128])
    """

    def __init__(self, cfg: ModelConfig, in_channels: int, static_channels: int, scale: int,
                 time_window: int = 1, grid_shape: tuple[int, int] | None = None):
        super().__init__()
        if time_window != 1:
            raise ValueError(f"backbone 'deepesd' has no spatio-temporal variant (time_window={time_window})")
        if cfg.lcb:
            raise ValueError("backbone 'deepesd' has per-cell dense weights already; model.lcb is not accepted")
        lr_shape = None
        if grid_shape is not None:
            H, W = grid_shape
            if H % scale or W % scale:
                raise ValueError(f"grid_shape {tuple(grid_shape)} is not divisible by scale {scale}")
            lr_shape = (H // scale, W // scale)
        self.in_channels, self.static_channels, self.scale = in_channels, static_channels, scale
        self.time_window = 1
        c1, c2, c3 = WIDTHS
        self.conv1 = ConvBlock(in_channels, c1, cfg.normalization, cfg.activation, cfg.dropout, cfg.mc_dropout)
        self.conv2 = ConvBlock(c1, c2, cfg.normalization, cfg.activation, cfg.dropout, cfg.mc_dropout)
        self.conv3 = nn.Sequential(conv3x3(c2, c3), activation(cfg.activation))
        self.dense = _Dense(c3, scale, lr_shape)
        self.use_static_hr = bool(cfg.static_hr and static_channels > 0)
        self.static = conv3x3(static_channels, 1) if self.use_static_hr else None

    def forward(self, x: torch.Tensor, static_hr: torch.Tensor | None = None,
                offset: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, h, w) predictors [+ (B, S, h*scale, w*scale) static] -> (B, 1, h*scale, w*scale).

        ``offset`` must be None or all zeros: DeepESD sees the full domain only.
        """
        from engine.models.network import check_inputs

        if x.ndim == 5 and x.shape[1] == 1:
            x = x[:, 0]
        check_inputs(x, static_hr, self.in_channels, self.static_channels, self.scale)
        if offset is not None and bool(torch.as_tensor(offset).any()):
            raise ValueError("DeepESD maps the full domain; patch offsets other than 0 are not accepted")
        out = self.dense(self.conv3(self.conv2(self.conv1(x))))
        if self.static is not None:
            out = out + self.static(static_hr.to(out.dtype))
        return out

