"""Backbones: one file per family, each registering its variants into ``BACKBONES``.

A backbone maps (B, in_channels, h, w) -> (B, out_channels, h, w) at constant resolution and is
built as ``cls(in_channels, filters=..., blocks=..., norm=..., act=..., dropout=..., mc_dropout=...)``.
Registry info: ``upsampling`` (allowed upsampling methods, None = all), ``temporal`` (may run
behind the recurrent (ConvGRU) encoder on spatio-temporal samples).
"""

from engine.models.backbones import convnet, convnext, deepesd, densenet, resnet, swin, unet  # noqa: F401  (registers)
