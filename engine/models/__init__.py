"""The model zoo. ``build_model`` and ``list_models`` are the only door (timm-style): each
backbone family lives in ``engine/models/backbones/<family>.py`` and registers itself."""

from __future__ import annotations

from torch import nn

from engine.config import ModelConfig
from engine.models import backbones, upsampling  # noqa: F401  (register)
from engine.models.network import DownscalingNet
from engine.registry import BACKBONES, UPSAMPLERS


def build_model(cfg: ModelConfig, in_channels: int, static_channels: int, scale: int,
                time_window: int = 1, grid_shape: tuple[int, int] | None = None) -> nn.Module:
    """Build the network described by ``cfg`` (names are checked against the registries).

    Parameters
    ----------
    cfg : ModelConfig
    in_channels : int
        LR input channels per time step.
    static_channels : int
        Static fields at HR.
    scale : int
        HR / LR grid ratio.
    time_window : int
        T consecutive LR steps per sample (``data.time_window``); T > 1 takes x as (B, T, C, h, w).
    grid_shape : (int, int), optional
        (H, W) of the full HR grid; required when ``cfg.lcb`` (the localized convolution block
        holds per-pixel weights over that grid and reads each patch's ``offset``).
    """
    BACKBONES.check(cfg.backbone)
    UPSAMPLERS.check(cfg.upsampling)
    info = BACKBONES.info(cfg.backbone)
    if info.get("standalone"):  # a whole network (DeepESD), not a backbone in front of an upsampler
        allowed = info.get("upsampling")
        if allowed and cfg.upsampling not in allowed:
            raise ValueError(f"backbone {cfg.backbone!r} cannot be combined with upsampling {cfg.upsampling!r}; "
                             f"accepted: {', '.join(allowed)}")
        return BACKBONES.get(cfg.backbone)(cfg, in_channels, static_channels, scale, time_window=time_window,
                                           grid_shape=grid_shape)
    return DownscalingNet(cfg, in_channels, static_channels, scale, time_window=time_window, grid_shape=grid_shape)


def list_models() -> dict[str, list[str]]:
    """Registered names: ``{"backbone": [...], "upsampling": [...]}`` (the baselines every model is
    scored against are ``engine.registry.BASELINES``, registered by ``engine.inference.baselines``)."""
    return {"backbone": BACKBONES.names(), "upsampling": UPSAMPLERS.names()}


def set_mc_dropout(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Keep every spatial dropout layer active at inference (Monte-Carlo dropout) or not.

    Repeated forward passes in eval mode then sample an ensemble; ``enabled=False`` makes the
    network deterministic again. Dropout rates come from ``model.dropout`` (0 means no effect).
    """
    from engine.models.layers import SpatialDropout

    for module in model.modules():
        if isinstance(module, SpatialDropout):
            module.always_on = enabled
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
