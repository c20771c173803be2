"""Backbones: one file per family, each registering its variants into ``BACKBONES``.

A backbone maps (B, in_channels, h, w) -> (B, out_channels, h, w) at constant resolution and is
built as ``cls(in_channels, filters=..., blocks=..., norm=..., act=..., dropout=..., mc_dropout=...)``.
Registry info: ``upsampling`` (allowed upsampling methods, None = all), ``temporal`` (has a
spatio-temporal variant).
"""

from engine.models.backbones import resnet  # noqa: F401  (registers)
