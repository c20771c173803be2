"""Conditional (residual) diffusion downscaling: a mean, plus a residual drawn by a diffusion model.

The generated field is ``mean + residual_scale * r`` where ``r`` is sampled by the reverse process
of a denoiser conditioned on ``cond = [interpolated LR inputs, static fields at HR, mean]``:

- plain conditional diffusion (DeepR, DPDM): ``mean`` is the interpolated LR target (bicubic), so
  the diffusion model generates everything the interpolation misses;
- residual diffusion (CorrDiff): ``mean`` is a deterministic zoo model (``regression``, frozen, e.g.
  the best checkpoint of an existing run), and the diffusion model generates only its residual,
  a smaller and more local signal.

``residual_scale`` (a buffer, set by the trainer from training data) makes the residual roughly
unit-variance, as the noise schedule expects. The network is trained with the standard
noise-prediction objective (:meth:`DiffusionDownscaler.loss`); the sampler and its number of steps
are chosen when sampling (:meth:`DiffusionDownscaler.sample`).

``forward(x, static_hr, offset)`` draws one sample with the default sampler, so a diffusion model
fits wherever a zoo model does (``(B, 1, H, W)`` out); ensembles call :meth:`sample` with a
generator per member.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from engine.models.diffusion.sampling import SAMPLERS, sample, training_schedule
from engine.models.network import check_inputs
from engine.models.upsampling import interpolate


class DiffusionDownscaler(nn.Module):
    """Generative downscaling model (see the module docstring).

    Parameters
    ----------
    denoiser : module (z_t (B, 1, H, W), t (B,), cond (B, C_cond, H, W)) -> (B, 1, H, W)
        with ``C_cond = in_channels + static_channels + 1``.
    in_channels, static_channels, scale : as for the zoo models.
    regression : a zoo model ``forward(x, static_hr, offset) -> (B, 1, H, W)`` for the mean, or None
        for the interpolated LR target. It is frozen (no gradients, always in eval mode).
    interpolation : method for the LR inputs (and the mean without regression).
    train_steps : length of the training noise schedule.
    sampler, sampling_steps : defaults for :meth:`sample` and ``forward``.

    Examples
    --------
    >>> from engine.models.diffusion.denoiser import UNetDenoiser
    >>> model = DiffusionDownscaler(UNetDenoiser(3 + 2 + 1, 4, 1), 3, 2, 4, train_steps=50, sampling_steps=3)
    >>> model(torch.zeros(2, 3, 4, 4), torch.zeros(2, 2, 16, 16)).shape
    torch.Size([2, 1, 16, 16])
    """

    stochastic = True

    def __init__(self, denoiser: nn.Module, in_channels: int, static_channels: int, scale: int,
                 regression: nn.Module | None = None, interpolation: str = "bicubic", train_steps: int = 1000,
                 sampler: str = "sde-dpmsolver++", sampling_steps: int = 20):
        super().__init__()
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; accepted: {', '.join(SAMPLERS)}")
        self.denoiser = denoiser
        self.regression = regression
        if regression is not None:
            regression.requires_grad_(False)
            regression.eval()
        self.in_channels, self.static_channels, self.scale = in_channels, static_channels, scale
        self.interpolation = interpolation
        self.train_steps, self.sampler, self.sampling_steps = int(train_steps), sampler, int(sampling_steps)
        self.register_buffer("alphas_cumprod", training_schedule(train_steps).float(), persistent=False)
        self.register_buffer("residual_scale", torch.ones(()))

    def train(self, mode: bool = True):
        super().train(mode)
        if self.regression is not None:  # frozen: its dropout / batch norm stay in inference mode
            self.regression.eval()
        return self

    # -- pieces -----------------------------------------------------------------------------------
    def check_shapes(self, x: torch.Tensor, static_hr: torch.Tensor | None) -> None:
        check_inputs(x, static_hr, self.in_channels, self.static_channels, self.scale)

    @torch.no_grad()
    def mean(self, x: torch.Tensor, static_hr: torch.Tensor | None, offset: torch.Tensor | None = None) -> torch.Tensor:
        """The deterministic part (B, 1, H, W): the regression model or the interpolated LR target."""
        if self.regression is not None:
            return self.regression(x, static_hr, offset).float()
        return interpolate(x[:, :1], self.scale, self.interpolation)

    def condition(self, x: torch.Tensor, static_hr: torch.Tensor | None, mean: torch.Tensor) -> torch.Tensor:
        """(B, C_in + S + 1, H, W): interpolated LR inputs, static fields, the mean."""
        parts = [interpolate(x, self.scale, self.interpolation)]
        if self.static_channels:
            parts.append(static_hr)
        parts.append(mean)
        return torch.cat(parts, dim=1)

    # -- training ---------------------------------------------------------------------------------
    def loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> torch.Tensor:
        """Masked noise-prediction loss mean(mask * (eps_hat - eps)^2) on a batch of the dataset
        (``x``, ``static_hr``, ``y``, ``mask``, ``offset``), timesteps uniform over the schedule.
        ``generator`` (CPU) makes the timesteps and noise reproducible (validation)."""
        x, static_hr, y, mask = batch["x"], batch["static_hr"], batch["y"], batch["mask"]
        self.check_shapes(x, static_hr)
        mean = self.mean(x, static_hr, batch.get("offset"))
        # Invalid pixels carry fill values (0 in the dataset); a zero residual there keeps them out of
        # the noisy input, which the convolutions would otherwise spread into valid pixels.
        r0 = (y - mean) / self.residual_scale * mask
        B = y.shape[0]
        t = torch.randint(0, self.train_steps, (B,), generator=generator).to(y.device)
        eps = torch.randn(y.shape, generator=generator).to(y.device)
        a = self.alphas_cumprod[t].view(B, 1, 1, 1)
        z = a.sqrt() * r0 + (1 - a).sqrt() * eps
        eps_hat = self.denoiser(z, t, self.condition(x, static_hr, mean)).float()
        return ((eps_hat - eps) ** 2 * mask).sum() / mask.sum().clamp_min(1.0)

    @torch.no_grad()
    def fit_residual_scale(self, batches) -> float:
        """Set ``residual_scale`` to the RMS of ``y - mean`` over the valid pixels of ``batches``."""
        sq, n = 0.0, 0.0
        for batch in batches:
            mean = self.mean(batch["x"], batch["static_hr"], batch.get("offset"))
            sq += float((((batch["y"] - mean) ** 2) * batch["mask"]).sum())
            n += float(batch["mask"].sum())
        value = (sq / max(n, 1.0)) ** 0.5
        self.residual_scale.fill_(max(value, 1e-3))
        return float(self.residual_scale)

    # -- sampling ---------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, x: torch.Tensor, static_hr: torch.Tensor | None = None, offset: torch.Tensor | None = None, *,
               sampler: str | None = None, steps: int | None = None, generator: torch.Generator | None = None,
               tiler: Callable | None = None) -> torch.Tensor:
        """Draw one sample per input.

        Parameters
        ----------
        x : (B, C_in, h, w); static_hr : (B, S, H, W) or None; offset : (B, 2), passed to the regression
        sampler, steps : default ``self.sampler`` / ``self.sampling_steps``
        generator : CPU generator (one per ensemble member makes members reproducible)
        tiler : ``callable(fn, hr_tensors) -> (B, 1, H, W)`` that applies the denoiser tile by tile
            (:func:`engine.inference.ensembles.diffusion_tiler`); None = the whole field at once.

        Returns
        -------
        (B, 1, H, W) in the normalised units of the target.
        """
        self.check_shapes(x, static_hr)
        sampler = sampler or self.sampler
        steps = int(steps or self.sampling_steps)
        if tiler is None:
            mean = self.mean(x, static_hr, offset)
        else:  # the regression is a zoo model: tile it too
            mean = tiler.mean(self, x, static_hr, offset)
        cond = self.condition(x, static_hr, mean)

        if tiler is None:
            def denoise(z, t):
                return self.denoiser(z, t, cond)
        else:
            def denoise(z, t):
                # every tile is at the same timestep: one value, expanded to the tile batch
                return tiler(lambda hr: self.denoiser(hr[0], t[:1], hr[1]), [z, cond])

        r = sample(denoise, (x.shape[0], 1, *cond.shape[-2:]), sampler=sampler, steps=steps,
                   train_steps=self.train_steps, generator=generator, device=x.device)
        return mean + self.residual_scale * r

    def forward(self, x: torch.Tensor, static_hr: torch.Tensor | None = None,
                offset: torch.Tensor | None = None) -> torch.Tensor:
        """One sample (B, 1, H, W) with the default sampler and steps (see :meth:`sample`)."""
        return self.sample(x, static_hr, offset)
