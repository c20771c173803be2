"""Mask-aware training losses, registered in ``LOSSES``.

Every loss is ``loss(pred, target, mask) -> scalar`` with ``pred``, ``target`` and ``mask`` of
shape (B, 1, H, W); ``mask`` is 1 where the target is valid (land for a sea-masked field,
inside the radar range, ...) and 0 elsewhere. Masked pixels contribute nothing, and the mean is
over valid pixels only, so a mostly-masked patch weighs the same per valid pixel.
"""

from __future__ import annotations

import torch

from engine.registry import LOSSES


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def _check(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> None:
    if pred.shape != target.shape or mask.shape != target.shape:
        raise ValueError(
            f"loss expects pred, target and mask of one shape (B, 1, H, W), got "
            f"{tuple(pred.shape)}, {tuple(target.shape)}, {tuple(mask.shape)}"
        )


@LOSSES.register("mae", description="mean absolute error")
def mae(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    _check(pred, target, mask)
    return _masked_mean((pred - target).abs(), mask)


@LOSSES.register("mse", description="mean squared error")
def mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    _check(pred, target, mask)
    return _masked_mean((pred - target).pow(2), mask)


def build_loss(name: str):
    """The loss function registered as ``name``."""
    return LOSSES.get(name)
