"""Generative downscaling: conditional and residual diffusion.

- :mod:`~engine.models.diffusion.denoiser`: the networks (our U-Net or diffusers' ``UNet2DModel``);
- :mod:`~engine.models.diffusion.sampling`: noise schedule and samplers from diffusers (DDPM, DDIM,
  DPM-Solver++), apart from the denoiser;
- :mod:`~engine.models.diffusion.downscaler`: :class:`DiffusionDownscaler`, mean (interpolation or
  a frozen zoo regression model) + sampled residual, with the zoo's ``forward(x, static_hr, offset)``.

:func:`build_diffusion` makes one from a :class:`~engine.config.ModelConfig`
(``model.denoiser``, ``filters``, ``blocks`` = U-Net levels, ``diffusion_steps``, ``sampler``,
``sampling_steps``, ``interpolation``).
"""

from __future__ import annotations

from torch import nn

from engine.config import ModelConfig
from engine.models.diffusion.denoiser import DENOISERS, DiffusersDenoiser, UNetDenoiser, build_denoiser
from engine.models.diffusion.downscaler import DiffusionDownscaler
from engine.models.diffusion.sampling import SAMPLERS, make_scheduler, sample

__all__ = ["DENOISERS", "SAMPLERS", "DiffusersDenoiser", "DiffusionDownscaler", "UNetDenoiser", "build_denoiser",
           "build_diffusion", "make_scheduler", "sample"]


def build_diffusion(cfg: ModelConfig, in_channels: int, static_channels: int, scale: int,
                    regression: nn.Module | None = None) -> DiffusionDownscaler:
    """The diffusion model that ``cfg`` describes; ``regression`` (a zoo model) gives the mean for
    residual diffusion (None: the interpolated LR target)."""
    levels = max(1, min(4, int(cfg.blocks)))
    denoiser = build_denoiser(cfg.denoiser, in_channels + static_channels + 1, int(cfg.filters), levels)
    return DiffusionDownscaler(denoiser, in_channels, static_channels, scale, regression=regression,
                               interpolation=cfg.interpolation, train_steps=cfg.diffusion_steps,
                               sampler=cfg.sampler, sampling_steps=cfg.sampling_steps)
