"""Diffusion in the ML-Bench protocol: a denoiser conditioned on the predictors, sampled into the
benchmark's ensemble members.

The engine's :class:`engine.models.diffusion.DiffusionDownscaler` generates ``mean + scale * r``
with ``r`` drawn by the reverse process of a denoiser conditioned on the interpolated inputs, the
static fields and the mean. In the protocol the inputs are the standardised predictors (16 x 16,
index-space interpolated to 128 x 128 for the conditioning: the network learns the Lambert warp)
and the orography, and the target is the per-cell standardised anomaly of the training days
(tasmax after the interpolated-t850 first guess, as the zoo models; see
:mod:`engine.mlbench.experiments`). Its mean is therefore **the training climatology**, zero in
those units (:class:`ClimatologyMean`): the diffusion model generates the whole anomaly from the
predictors, the conditional diffusion of DeepR / DPDM without an interpolated target (the
predictors hold no coarse tasmax or pr to interpolate).

Training uses the engine's noise-prediction objective (:meth:`DiffusionDownscaler.loss`);
the epoch is chosen on the held-out days' loss with fixed timesteps and noise. Prediction draws
:data:`engine.mlbench.submission.ENSEMBLE_MEMBERS` members (the submission README's requirement
for generative models), member ``k`` from a CPU generator seeded ``seed + k`` (reproducible).
"""

from __future__ import annotations

import torch
from torch import nn

from engine.config import ModelConfig

VAL_FIELDS = 16  # held-out days sampled per epoch for val_rmse
VAL_STEPS = 10  # DDIM steps of that validation sample


class ClimatologyMean(nn.Module):
    """The diffusion model's mean: zero in per-cell standardised units, i.e. the training climatology
    (plus the interpolation first guess where the target is its correction)."""

    def __init__(self, scale: int):
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor, static_hr: torch.Tensor | None = None, offset=None) -> torch.Tensor:
        return x.new_zeros(x.shape[0], 1, x.shape[-2] * self.scale, x.shape[-1] * self.scale)


def build(model_cfg: ModelConfig, in_channels: int, static_channels: int, scale: int) -> nn.Module:
    """The protocol's diffusion model (:func:`engine.models.diffusion.build_diffusion` with the
    climatology mean)."""
    from engine.models.diffusion import build_diffusion

    return build_diffusion(model_cfg, in_channels, static_channels, scale, regression=ClimatologyMean(scale))


def batch(x, static, y, mask) -> dict:
    return {"x": x, "static_hr": static, "y": y, "mask": mask}


@torch.no_grad()
def validation_sample(net, x, static, generator) -> torch.Tensor:
    """One few-step DDIM sample (B, 1, H, W) for the validation RMSE (cheap; not the submission's sampler)."""
    return net.sample(x, static, sampler="ddim", steps=min(VAL_STEPS, net.train_steps), generator=generator)


@torch.no_grad()
def sample_members(net, xn: torch.Tensor, static: torch.Tensor | None, members: int, seed: int = 0,
                   chunk: int = 16) -> torch.Tensor:
    """``members`` samples of every day: (M, T, H, W) in standardised units, member ``k`` drawn
    with a generator seeded ``seed + k`` over the days in order (chunks of ``chunk`` days)."""
    out = []
    for k in range(int(members)):
        gen = torch.Generator().manual_seed(int(seed) + k)
        parts = []
        for part in xn.split(chunk):
            s = None if static is None else static.expand(len(part), -1, -1, -1)
            parts.append(net.sample(part, s, generator=gen)[:, 0])
        out.append(torch.cat(parts))
    return torch.stack(out)
