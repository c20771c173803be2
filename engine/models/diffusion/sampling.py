"""Noise schedules and samplers, from diffusers, apart from the denoiser.

:func:`make_scheduler` builds a fresh diffusers scheduler (they hold state while sampling) for
``ddpm`` (ancestral, stochastic), ``ddim`` (eta = 0, deterministic given the initial noise),
``dpmsolver++`` (multistep DPM-Solver++, 2nd order, an ODE solver) or ``sde-dpmsolver++`` (its
stochastic variant, which draws fresh noise at every step as DDPM does). With a denoiser trained on
a small budget the ODE samplers leave visible noise (spread/skill above 1, CRPS ~20 % worse than
DDPM-1000), while the stochastic ones at 20-50 steps match DDPM-1000: the injected noise corrects
the denoiser's errors instead of carrying them along the trajectory. All share one training noise schedule
(DDPM's linear betas, rescaled to ``train_steps``; epsilon prediction; no sample clipping, since the
fields are standardised residuals, not images in [-1, 1]) and use "trailing" timestep spacing,
which starts few-step sampling at the last training timestep (pure noise) rather than before it.

:func:`sample` runs the reverse process with any denoiser callable: the number of steps is chosen
at run time, not at training time.

Example
-------
>>> eps = lambda z, t: torch.zeros_like(z)
>>> sample(eps, (1, 1, 4, 4), sampler="ddim", steps=5, train_steps=100).shape
torch.Size([1, 1, 4, 4])
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch

from engine.config import SAMPLERS  # noqa: E402  (one list: the configuration validates against it)
SCHEDULE = "linear"
CLIP = 8.0
STOCHASTIC = ("ddpm", "sde-dpmsolver++")  # samplers that draw fresh noise at every step


def make_scheduler(sampler: str, train_steps: int = 1000):
    """A new diffusers scheduler for ``sampler`` over ``train_steps`` training timesteps."""
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    # DDPM's linear betas (1e-4 .. 0.02 over 1000 steps), rescaled so that the same continuous
    # schedule results for any train_steps: alpha_bar at the last step is ~4e-5 (pure noise, yet not
    # 0). The cosine schedule's alpha_bar ~1e-9 there makes epsilon prediction blow up the first
    # x0 estimate (error / sqrt(alpha_bar)) when few-step sampling starts at that step.
    k = 1000.0 / float(train_steps)
    common = dict(num_train_timesteps=int(train_steps), beta_schedule=SCHEDULE, beta_start=1e-4 * k,
                  beta_end=min(0.02 * k, 0.999), prediction_type="epsilon", timestep_spacing="trailing")
    if sampler == "ddpm":
        return DDPMScheduler(clip_sample=False, **common)
    if sampler == "ddim":
        return DDIMScheduler(clip_sample=False, set_alpha_to_one=True, **common)
    if sampler == "dpmsolver++":
        return DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2, **common)
    if sampler == "sde-dpmsolver++":
        return DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++", solver_order=2, **common)
    raise ValueError(f"unknown sampler {sampler!r}; accepted: {', '.join(SAMPLERS)}")


def _set_timesteps(scheduler, steps: int, device) -> None:
    with warnings.catch_warnings():
        # diffusers' DPM-Solver converts a tensor with np.array(copy=False) semantics (NumPy 2).
        warnings.filterwarnings("ignore", message=r"__array__ implementation doesn't accept a copy keyword",
                                category=DeprecationWarning)
        scheduler.set_timesteps(int(steps), device=device)


def training_schedule(train_steps: int = 1000) -> torch.Tensor:
    """alphas_cumprod (train_steps,) of the shared noise schedule (for the training objective)."""
    return make_scheduler("ddpm", train_steps).alphas_cumprod.clone()


@torch.no_grad()
def sample(denoise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], shape: tuple[int, ...], *,
           sampler: str = "ddim", steps: int = 50, train_steps: int = 1000,
           generator: torch.Generator | None = None, device=None, clip: float | None = CLIP) -> torch.Tensor:
    """Draw samples from the reverse process.

    Parameters
    ----------
    denoise : callable(z_t (B, 1, H, W), t (B,) long) -> predicted noise (B, 1, H, W)
    shape : (B, 1, H, W)
    sampler : ``ddpm``, ``ddim`` or ``dpmsolver++``
    steps : sampling steps (1 .. ``train_steps``)
    generator : a CPU torch.Generator for the initial noise and DDPM's noise (reproducible members)
    clip : bound of the implied clean sample (standardised units); None = no clipping

    Returns
    -------
    (B, 1, H, W) samples in the denoiser's (standardised) units.
    """
    if not 1 <= int(steps) <= int(train_steps):
        raise ValueError(f"steps={steps!r} is not valid; accepted: 1 .. {train_steps} (the training timesteps)")
    scheduler = make_scheduler(sampler, train_steps)
    device = device or torch.device("cpu")
    _set_timesteps(scheduler, steps, device)
    # Noise drawn on the CPU generator, then moved: the same members on any device.
    z = torch.randn(shape, generator=generator).to(device) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        tt = torch.full((shape[0],), int(t), device=device, dtype=torch.long)
        eps = denoise(scheduler.scale_model_input(z, t), tt).float()
        if clip is not None:
            # Clip the implied clean sample to +-clip (standardised units) and re-derive the noise,
            # for every sampler alike: near the last timestep an epsilon error is amplified by
            # 1 / sqrt(alpha_bar) (~160) in the x0 estimate, which an under-trained denoiser turns
            # into absurd fields. A trained one stays well inside +-8 standard deviations.
            a = scheduler.alphas_cumprod[int(t)].to(z.device)
            x0 = ((z - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-clip, clip)
            eps = (z - a.sqrt() * x0) / (1 - a).sqrt()
        if sampler in STOCHASTIC:
            # diffusers draws the step's noise on the generator's device; keep it on the CPU.
            z = scheduler.step(eps.cpu(), t.cpu(), z.cpu(), generator=generator).prev_sample.to(device)
        else:
            z = scheduler.step(eps, t, z).prev_sample
    return z
