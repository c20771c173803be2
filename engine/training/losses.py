"""Mask-aware training losses, registered in ``LOSSES``.

Every loss is ``loss(pred, target, mask) -> scalar`` with ``pred``, ``target`` and ``mask`` of
shape (B, 1, H, W); ``mask`` is 1 where the target is valid (land for a sea-masked field,
inside the radar range, ...) and 0 elsewhere. Masked pixels contribute nothing: pixel losses
average over valid pixels only; the structural (SSIM) and spectral losses first fill masked
pixels of ``pred`` with the target's values, so that whatever the network predicts there cannot
change the loss, and SSIM maps are averaged over valid pixels.

Losses: ``mae``, ``mse``, ``dssim`` = (1 - SSIM) / 2, ``msdssim`` = (1 - MS-SSIM) / 2 (masked at every scale),
``spectral`` (L1 between log Fourier amplitude spectra: penalises the loss of fine-scale variance,
i.e. over-smoothing, which pixel losses reward), and weighted mixes. Registered mixes:
``dssim+mae``, ``msdssim+mae``, ``mae+spectral``; any other mix is written as a formula,
``"0.8*dssim+0.2*mae"`` (parsed and validated by :func:`engine.config.parse_loss`).

Example
-------
>>> loss = build_loss("0.8*dssim+0.2*mae")
>>> float(loss(torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 16), torch.ones(1, 1, 16, 16)))
0.0
"""

from __future__ import annotations

from typing import Callable

import torch

from engine.config import parse_loss
from engine.registry import LOSSES

Loss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def _check(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> None:
    if pred.ndim != 4 or pred.shape != target.shape or mask.shape != target.shape:
        raise ValueError(
            f"loss expects pred, target and mask of one shape (B, 1, H, W), got "
            f"{tuple(pred.shape)}, {tuple(target.shape)}, {tuple(mask.shape)}"
        )


def _filled(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``pred`` with masked pixels replaced by the target (no gradient flows through them)."""
    return torch.where(mask > 0, pred, target)


@LOSSES.register("mae", description="mean absolute error")
def mae(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    _check(pred, target, mask)
    return _masked_mean((pred - target).abs(), mask)


@LOSSES.register("mse", description="mean squared error")
def mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    _check(pred, target, mask)
    return _masked_mean((pred - target).pow(2), mask)


def _data_range(target: torch.Tensor, mask: torch.Tensor) -> float:
    """The target's range over valid pixels: SSIM's constants scale with it (normalised data have
    no fixed range; the target's, not the prediction's, so the loss cannot be gamed by scaling)."""
    valid = target[mask > 0]
    if valid.numel() == 0:
        return 1.0
    return max(float(valid.max() - valid.min()), 1e-3)


def _kernel(height: int, width: int, preferred: int = 11) -> int:
    """The largest odd Gaussian window up to ``preferred`` that fits the image."""
    size = min(preferred, height, width)
    return max(3, size - (1 - size % 2))


@LOSSES.register("dssim", description="structural dissimilarity (1 - SSIM) / 2")
def dssim(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    from torchmetrics.functional.image import structural_similarity_index_measure as ssim

    _check(pred, target, mask)
    pred, target = pred.float(), target.float()
    kernel = _kernel(*pred.shape[-2:])
    _, ssim_map = ssim(_filled(pred, target, mask), target, data_range=_data_range(target, mask),
                       kernel_size=kernel, sigma=1.5 * kernel / 11, reduction="none", return_full_image=True)
    return (1.0 - _masked_mean(ssim_map, mask)) / 2.0


_MS_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _gaussian_window(kernel: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    x = torch.arange(kernel, dtype=like.dtype, device=like.device) - (kernel - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(1, 1, kernel, kernel)


def _ssim_maps(pred: torch.Tensor, target: torch.Tensor, window: torch.Tensor, data_range: float):
    """SSIM and contrast-structure maps over the window's valid positions (no padding):
    (B, 1, H - k + 1, W - k + 1) each. Computed here because torchmetrics returns the
    contrast-structure term only as an image mean, which cannot be masked."""
    import torch.nn.functional as F

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_p, mu_t = F.conv2d(pred, window), F.conv2d(target, window)
    var_p = F.conv2d(pred * pred, window) - mu_p**2
    var_t = F.conv2d(target * target, window) - mu_t**2
    cov = F.conv2d(pred * target, window) - mu_p * mu_t
    cs = (2 * cov + c2) / (var_p + var_t + c2)
    luminance = (2 * mu_p * mu_t + c1) / (mu_p**2 + mu_t**2 + c1)
    return luminance * cs, cs


@LOSSES.register("msdssim", description="multi-scale structural dissimilarity (1 - MS-SSIM) / 2")
def msdssim(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MS-SSIM with as many of the standard 5 scales as the patch allows (a 64x64 patch gets 3
    with a 7-pixel window), mask-aware like :func:`dssim`: masked pixels of ``pred`` are filled
    with the target, and at every scale the contrast-structure (and, at the coarsest, the SSIM)
    map is averaged over valid pixels only, weighted by the mask average-pooled to that scale, so
    that masked pixels neither change the loss nor dilute it as "perfect". Per-image values are
    combined as in MS-SSIM (product of the scales' terms, clamped at 0, to the betas' powers) and
    averaged over images that have valid pixels."""
    import torch.nn.functional as F

    _check(pred, target, mask)
    pred, target, mask = pred.float(), target.float(), (mask > 0).float()
    size = min(pred.shape[-2:])
    kernel = _kernel(size, size, 7)
    scales = 1
    while scales < len(_MS_BETAS) and size // 2**scales > kernel - 1:
        scales += 1
    if scales == 1:
        return dssim(pred, target, mask)
    betas = torch.tensor(_MS_BETAS[:scales])
    betas = betas / betas.sum()
    data_range = _data_range(target, mask)
    window = _gaussian_window(kernel, 1.5 * kernel / 11, pred)
    x, y, m = _filled(pred, target, mask), target, mask
    terms = []
    for scale in range(scales):
        ssim_map, cs_map = _ssim_maps(x, y, window, data_range)
        # The map at a position is the window around it: weight it by the mask at its centre.
        half = (kernel - 1) // 2
        weight = m[..., half : half + ssim_map.shape[-2], half : half + ssim_map.shape[-1]]
        term_map = ssim_map if scale == scales - 1 else cs_map
        terms.append((term_map * weight).sum((1, 2, 3)) / weight.sum((1, 2, 3)).clamp_min(1e-6))
        if scale < scales - 1:
            x, y, m = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2), F.avg_pool2d(m, 2)
    per_image = torch.ones_like(terms[0])
    for term, beta in zip(terms, betas):
        per_image = per_image * term.clamp_min(0.0) ** float(beta)
    valid = (mask.sum((1, 2, 3)) > 0).float()
    value = (per_image * valid).sum() / valid.sum().clamp_min(1.0)
    return (1.0 - value) / 2.0 * (valid.sum() > 0)


@LOSSES.register("spectral", description="L1 between log Fourier amplitude spectra (fights over-smoothing)")
def spectral(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean |log(1 + |FFT(pred)|) - log(1 + |FFT(target)|)| over all 2-D frequencies.

    The amplitude spectrum ignores phase (where a feature is), so this term only asks for the right
    amount of variance at each scale; pair it with a pixel loss (``mae+spectral``).
    """
    _check(pred, target, mask)
    pred, target = pred.float(), target.float()
    amp_pred = torch.fft.rfft2(_filled(pred, target, mask), norm="ortho").abs()
    amp_true = torch.fft.rfft2(target, norm="ortho").abs()
    return (torch.log1p(amp_pred) - torch.log1p(amp_true)).abs().mean()


class WeightedLoss:
    """A weighted sum of registered losses, e.g. ``WeightedLoss([(0.8, "dssim"), (0.2, "mae")])``."""

    def __init__(self, terms: list[tuple[float, str]]):
        self.terms = [(float(w), LOSSES.get(name)) for w, name in terms]
        self.spec = "+".join(f"{w:g}*{name}" for w, name in terms)

    def __call__(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        total = None
        for weight, fn in self.terms:
            value = weight * fn(pred, target, mask)
            total = value if total is None else total + value
        return total

    def __repr__(self) -> str:
        return f"WeightedLoss({self.spec!r})"


# The mixes the benchmark and the dashboard offer by name (unit weights; other weights by formula).
for _mix in ("dssim+mae", "msdssim+mae", "mae+spectral"):
    LOSSES.register(_mix, description=f"sum of {_mix.replace('+', ' and ')}")(
        WeightedLoss([(1.0, n) for n in _mix.split("+")]))


def build_loss(spec: str) -> Loss:
    """The loss named ``spec`` (a registered name or a formula such as ``"0.8*dssim+0.2*mae"``).

    Raises :class:`engine.config.ConfigError` naming the bad term and the registered losses.
    """
    terms = parse_loss(spec, LOSSES.names())
    if len(terms) == 1 and terms[0][0] == 1.0:
        return LOSSES.get(terms[0][1])
    return WeightedLoss(terms)
