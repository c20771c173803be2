"""The model zoo. ``build_model`` and ``list_models`` are the only door (timm-style): each
backbone family lives in ``engine/models/backbones/<family>.py`` and registers itself."""

from __future__ import annotations

from torch import nn

from engine.config import ModelConfig
from engine.models import backbones, baselines, upsampling  # noqa: F401  (register)
from engine.models.baselines import InterpolationBaseline
from engine.models.network import DownscalingNet
from engine.registry import BACKBONES, BASELINES, UPSAMPLERS


def build_model(cfg: ModelConfig, in_channels: int, static_channels: int, scale: int) -> nn.Module:
    """Build the network described by ``cfg`` (names are checked against the registries)."""
    BACKBONES.check(cfg.backbone)
    UPSAMPLERS.check(cfg.upsampling)
    return DownscalingNet(cfg, in_channels, static_channels, scale)


def build_baseline(name: str, scale: int, channel: int = 0) -> nn.Module:
    """An interpolation baseline by name: ``nearest``, ``bilinear`` or ``bicubic``."""
    BASELINES.check(name)
    return InterpolationBaseline(name, scale, channel)


def list_models() -> dict[str, list[str]]:
    """Registered names: ``{"backbone": [...], "upsampling": [...], "baseline": [...]}``."""
    return {"backbone": BACKBONES.names(), "upsampling": UPSAMPLERS.names(), "baseline": BASELINES.names()}


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
