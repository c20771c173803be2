"""Losses: every registered loss (and formula mixes) is mask-aware, finite, differentiable and
zero for a perfect prediction; the parser validates mixes with clear errors."""

from __future__ import annotations

import pytest
import torch

from engine.config import ConfigError, parse_loss
from engine.registry import LOSSES
from engine.training.losses import build_loss, dssim, mae, msdssim, spectral

NAMES = LOSSES.names() + ["0.8*dssim+0.2*mae", "mae + 0.1*spectral", "0.5*msdssim+0.5*mse"]


def _batch(size: int = 32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(3, 1, size, size, generator=g).cumsum(-1) / 4  # smooth-ish fields
    pred = target + 0.3 * torch.randn(3, 1, size, size, generator=g)
    mask = torch.ones_like(target)
    mask[:, :, : size // 3, : size // 2] = 0  # e.g. sea
    return pred, target, mask


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [16, 64])
def test_loss_is_mask_aware_finite_and_differentiable(name, size):
    loss = build_loss(name)
    pred, target, mask = _batch(size)
    pred.requires_grad_(True)
    value = loss(pred, target, mask)
    assert value.ndim == 0 and torch.isfinite(value) and value > 0
    value.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    assert (pred.grad * (1 - mask)).abs().sum() == 0  # nothing flows to masked pixels

    changed = pred.detach().clone()
    changed[mask == 0] += 100.0  # anything at all where the target is invalid
    assert torch.allclose(loss(changed, target, mask), value.detach(), atol=1e-6)

    assert float(loss(target, target, mask)) == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_loss_grows_with_the_error(name):
    loss = build_loss(name)
    pred, target, mask = _batch(32)
    noise = pred - target
    assert loss(target + 2 * noise, target, mask) > loss(target + 0.5 * noise, target, mask)


def test_mae_by_hand():
    pred = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    target = torch.zeros_like(pred)
    mask = torch.tensor([[[[1.0, 1.0], [0.0, 1.0]]]])
    assert float(mae(pred, target, mask)) == pytest.approx((1 + 2 + 4) / 3)
    assert float(mae(pred, target, torch.zeros_like(mask))) == 0.0  # fully masked batch: no NaN


def test_dssim_range_and_weighted_mix():
    pred, target, mask = _batch(32)
    assert 0 < float(dssim(pred, target, mask)) < 1
    assert 0 < float(msdssim(pred, target, mask)) < 1
    mix = build_loss("0.8*dssim+0.2*mae")(pred, target, mask)
    assert float(mix) == pytest.approx(0.8 * float(dssim(pred, target, mask)) + 0.2 * float(mae(pred, target, mask)), rel=1e-5)
    assert float(build_loss("dssim+mae")(pred, target, mask)) == pytest.approx(
        float(dssim(pred, target, mask)) + float(mae(pred, target, mask)), rel=1e-5)


def test_spectral_penalises_smoothing_more_than_mae_does():
    _, target, mask = _batch(64)
    mask = torch.ones_like(mask)
    target = target + 0.5 * torch.randn_like(target)  # fine-scale variance
    smooth = torch.nn.functional.avg_pool2d(target, 5, 1, 2, count_include_pad=False)
    noisy = target + (target - smooth).roll(7, -1)  # right spectrum, wrong phase
    assert float(spectral(smooth, target, mask)) > float(spectral(noisy, target, mask))


def test_losses_accept_bf16_predictions():
    pred, target, mask = _batch(32)
    for name in ("dssim", "msdssim", "spectral", "mae"):
        assert torch.isfinite(build_loss(name)(pred.bfloat16(), target, mask))


@pytest.mark.parametrize("spec, words", [
    ("l3", ["training.loss='l3'", "unknown loss 'l3'", "mae", "dssim"]),
    ("0.8*dssim+0.2*mea", ["unknown loss 'mea'", "mae"]),
    ("0.8*dssim+", ["cannot read the term ''", "0.8*dssim+0.2*mae"]),
    ("-1*mae", ["cannot read the term '-1*mae'"]),
    ("0*mae", ["weight of 'mae' must be > 0"]),
    ("", ["accepted"]),
])
def test_parser_errors_name_the_bad_term_and_the_accepted_losses(spec, words):
    with pytest.raises(ConfigError) as err:
        build_loss(spec)
    for word in words:
        assert word in str(err.value)


def test_parser_reads_weights():
    assert parse_loss("0.8*dssim + .2 * mae", ["dssim", "mae"]) == [(0.8, "dssim"), (0.2, "mae")]
    assert parse_loss("mae+spectral", ["mae", "spectral"]) == [(1.0, "mae"), (1.0, "spectral")]
    assert parse_loss("1e-1*spectral", ["spectral"]) == [(0.1, "spectral")]
    assert parse_loss("dssim+mae", ["dssim+mae"]) == [(1.0, "dssim+mae")]  # a registered mix
    with pytest.raises(ValueError, match="shape"):
        mae(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5), torch.ones(1, 1, 4, 5))


def test_msdssim_is_mask_aware_at_every_scale():
    """Masked pixels neither change MS-SSIM nor count as perfectly predicted: with the same error
    everywhere on a stationary field, masking half the domain leaves the loss (about) unchanged
    instead of halving it, wildly wrong predictions under the mask change nothing, and errors on
    valid pixels do."""
    g = torch.Generator().manual_seed(1)
    target = 3 * torch.nn.functional.avg_pool2d(torch.randn(4, 1, 72, 72, generator=g), 9, stride=1)  # 64 x 64
    pred = target + 0.2 * torch.randn(target.shape, generator=g)
    full = torch.ones_like(target)
    half = full.clone()
    half[..., 32:] = 0
    whole, masked = float(msdssim(pred, target, full)), float(msdssim(pred, target, half))
    assert masked == pytest.approx(whole, rel=0.2)  # masked pixels filled as "perfect" would give ~ whole / 2

    wrong = pred.clone()
    wrong[half == 0] = 1e3 * torch.randn(int((half == 0).sum()), generator=g)
    assert float(msdssim(wrong, target, half)) == pytest.approx(masked, abs=1e-6)

    worse = pred.clone()
    worse[half > 0] += 0.3 * torch.randn(int((half > 0).sum()), generator=g)
    assert float(msdssim(worse, target, half)) > masked + 0.01
