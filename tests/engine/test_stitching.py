"""Patch stitching: tiles vs whole field, the blending window, memory bounded by the tile batch,
and clear errors for tiles that cannot work."""

from __future__ import annotations

import pytest
import torch

from engine.config import ModelConfig
from engine.inference.stitching import (
    StitchingError,
    predict_tiled,
    receptive_field,
    tile_starts,
    tiled_apply,
    window_1d,
)
from engine.models import build_model


def _net(**changes):
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="convnet", upsampling="spc", filters=4, blocks=1, **changes)
    return build_model(cfg, 3, 2, 4).eval()


def _inputs(h=12, w=20, batch=2):
    g = torch.Generator().manual_seed(1)
    return torch.randn(batch, 3, h, w, generator=g), torch.randn(batch, 2, h * 4, w * 4, generator=g)


def test_tile_starts_cover_the_domain():
    for size, tile, overlap in [(48, 16, 8), (50, 16, 4), (16, 32, 8), (80, 24, 8)]:
        starts = tile_starts(size, min(tile, size), overlap)
        covered = torch.zeros(size, dtype=torch.bool)
        for s in starts:
            covered[s : s + min(tile, size)] = True
        assert covered.all() and starts[0] == 0 and starts[-1] + min(tile, size) == size


def test_window_is_smooth_zero_in_the_halo_and_one_at_domain_borders():
    w = window_1d(32, 16, 3, left=True, right=False)
    assert torch.all(w[:3] == 0) and torch.all(w[3:13] > 0) and torch.all(w[13:] == 1)
    assert torch.all(torch.diff(w[:13]) >= 0)  # monotone ramp
    assert torch.all(window_1d(32, 16, 3, left=False, right=False) == 1)


def test_tiled_equals_whole_field_for_a_translation_equivariant_model():
    net = _net()
    x, static = _inputs()
    rf = receptive_field(net, 3, 2, 4)
    radius = rf // 2
    assert 4 < radius < 48
    with torch.no_grad():
        whole = net(x, static)
    overlap = 4 * -(-2 * radius // 4)  # >= 2 * radius, a multiple of the scale
    tile = overlap + 16
    tiled = predict_tiled(net, x, static, scale=4, tile=tile, overlap=overlap, halo=radius, tile_batch=3)
    assert tiled.shape == whole.shape
    inner = (slice(None), slice(None), slice(radius, -radius), slice(radius, -radius))
    torch.testing.assert_close(tiled[inner], whole[inner], rtol=1e-5, atol=1e-5)
    # with this halo the model never sees a tile edge: exact at the domain borders too
    torch.testing.assert_close(tiled, whole, rtol=1e-5, atol=1e-5)


def test_without_halo_the_seams_are_smooth_and_small():
    net = _net()
    x, static = _inputs()
    with torch.no_grad():
        whole = net(x, static)
    tiled = predict_tiled(net, x, static, scale=4, tile=24, overlap=8, halo=0, receptive=1)
    err = (tiled - whole).abs()
    assert float(err.max()) < 0.5 * float(whole.std())  # a cross-fade, not a jump


def test_memory_is_bounded_by_the_tile_batch():
    seen = []

    def fn(lr, hr, off):
        seen.append(lr[0].shape[0])
        return hr[0][:, :1] * 2.0

    x, static = _inputs(h=16, w=16, batch=1)
    out = tiled_apply(fn, [x], [static], scale=4, tile=16, overlap=8, halo=2, tile_batch=5)
    assert max(seen) <= 5 and sum(seen) == 7 * 7
    torch.testing.assert_close(out, static[:, :1] * 2.0)  # linear in the tiles: exact


def test_offsets_locate_each_tile():
    offsets = []

    def fn(lr, hr, off):
        offsets.append(off)
        return torch.zeros(off.shape[0], 1, *hr[0].shape[-2:])

    x, static = _inputs(h=8, w=8, batch=1)
    tiled_apply(fn, [x], [static], scale=4, tile=16, overlap=8, offset=torch.tensor([[100, 200]]))
    off = torch.cat(offsets)
    assert off[0].tolist() == [100, 200] and off[:, 0].max() == 100 + 16


def test_bad_tiles_are_clear_errors():
    net = _net()
    x, static = _inputs()
    with pytest.raises(StitchingError, match=r"tile=8 HR pixels is smaller than the model's receptive field"):
        predict_tiled(net, x, static, scale=4, tile=8, overlap=4)
    with pytest.raises(StitchingError, match=r"tile=10 is not valid; accepted: a positive multiple of the scale 4"):
        predict_tiled(net, x, static, scale=4, tile=10, overlap=4, receptive=1)
    with pytest.raises(StitchingError, match=r"overlap=32 must be smaller than tile=32"):
        predict_tiled(net, x, static, scale=4, tile=32, overlap=32, receptive=1)
    with pytest.raises(StitchingError, match=r"overlap=4 is smaller than twice the halo=4"):
        predict_tiled(net, x, static, scale=4, tile=32, overlap=4, halo=4, receptive=1)
