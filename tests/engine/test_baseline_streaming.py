"""Bias corrections fitted block by block equal the whole-period fit: exactly for the means,
exactly for the quantiles while the training steps fit the sample budget, and within the sampling
error (stated below) when only an evenly spaced sample of steps is kept."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from engine.config import DataConfig
from engine.data.pairing import make_pair
from engine.inference import baselines as bl
from engine.inference.corrections import (
    MIN_QUANTILE_VALUES,
    BaselineError,
    BiasCorrection,
    CorrectionFit,
    sample_positions,
)

T, H, W = 90, 3, 4


def _data(seed=0):
    rng = np.random.default_rng(seed)
    times = pd.date_range("2001-01-01", periods=T)  # January, February, March
    truth = rng.normal(280, 5, size=(T, H, W)).astype(np.float32)
    interp = (truth + rng.normal(1.5, 2, size=(T, H, W))).astype(np.float32)
    truth[rng.random((T, H, W)) < 0.1] = np.nan  # a time-varying mask
    truth[:, 0, 0] = np.nan  # a cell never valid: outside the mask
    return times, interp, truth


def _streamed(methods, times, interp, truth, cuts=(7, 20, 21, 64), **kw):
    fit = CorrectionFit(methods, (H, W), T, **kw)
    for s in np.split(np.arange(T), cuts):
        fit.add(interp[s], truth[s], times[s])
    return fit.finish()


def test_streamed_means_equal_the_whole_period_exactly():
    times, interp, truth = _data()
    got = _streamed(("bias_cell", "bias_month"), times, interp, truth)
    d = interp.astype(np.float64) - truth
    valid = np.isfinite(d)
    whole = np.where(valid, d, 0).sum(0) / np.maximum(valid.sum(0), 1)  # the whole period at once
    np.testing.assert_allclose(got["bias_cell"].bias, whole, rtol=1e-12, atol=1e-12)
    assert got["bias_cell"].bias[0, 0] == 0.0  # no training truth: no correction
    for month in (1, 2, 3):
        sel = (times.month == month)[:, None, None] & valid
        expected = np.where(sel, d, 0).sum(0) / np.maximum(sel.sum(0), 1)
        np.testing.assert_allclose(got["bias_month"].monthly[month], expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got["bias_month"].monthly[7], whole, rtol=1e-12)  # unseen month: all-period bias


def test_streamed_quantiles_equal_the_whole_period_when_the_steps_fit():
    times, interp, truth = _data(1)
    streamed = _streamed(("quantile_map",), times, interp, truth)["quantile_map"]
    whole = BiasCorrection("quantile_map").fit(interp, truth, times)  # one block: the whole period
    valid = np.isfinite(truth)
    levels = np.linspace(0, 1, min(100, int(valid.sum(0).max())))  # levels: min(100, the most values in a cell)
    cell = np.where(valid[:, 1, 2], interp[:, 1, 2], np.nan).astype(np.float64)
    np.testing.assert_allclose(streamed.q_model[:, 1, 2], np.nanquantile(cell, levels), rtol=1e-12)
    np.testing.assert_array_equal(streamed.q_model, whole.q_model)
    np.testing.assert_array_equal(streamed.q_truth, whole.q_truth)
    assert not streamed.known[0, 0] and streamed.known[1:].all()
    probe = interp[:5] + 0.3
    np.testing.assert_array_equal(streamed.apply(probe, times[:5]), whole.apply(probe, times[:5]))
    assert streamed.apply(probe, times[:5])[:, 0, 0] == pytest.approx(probe[:, 0, 0])  # outside the mask: as is


def test_a_long_period_keeps_an_evenly_spaced_sample():
    steps, shape = 1000, (2, 2)
    budget = 8 * 4 * 100  # 100 steps of float32 interpolation + truth
    at = sample_positions(steps, shape, budget)
    assert len(at) == 100 and at[0] == 0 and at[-1] == steps - 1
    assert np.ptp(np.diff(at)) <= 1  # evenly spaced over the whole period
    assert len(sample_positions(50, shape, budget)) == 50  # fits: every step
    assert len(sample_positions(steps, shape, 1)) == 2 * MIN_QUANTILE_VALUES  # never fewer than 60

    rng = np.random.default_rng(2)
    times = pd.date_range("2001-01-01", periods=steps)
    x = rng.uniform(0, 100, size=(steps, *shape)).astype(np.float32)
    y = (2 * x + 1).astype(np.float32)
    fit = CorrectionFit(("quantile_map",), shape, steps, quantile_bytes=budget)
    for s in np.array_split(np.arange(steps), 9):
        fit.add(x[s], y[s], times[s])
    corr = fit.finish()["quantile_map"]
    # the tables are exactly the quantiles of the sampled steps ...
    np.testing.assert_allclose(corr.q_model[:, 1, 1], np.quantile(x[at, 1, 1].astype(float), corr.levels), rtol=1e-6)
    # ... and, the map being monotone, 2 x + 1 is still recovered inside the sampled range; the
    # tables of a uniform sample of 100 lie within a few % of the range of the whole period's
    whole = np.quantile(x[:, 1, 1].astype(float), corr.levels)
    assert np.abs(corr.q_model[:, 1, 1] - whole).max() < 10.0
    inside = x[:20].clip(corr.q_model[0].max(), corr.q_model[-1].min())
    np.testing.assert_allclose(corr.apply(inside, times[:20]), 2 * inside + 1, rtol=1e-5)


def test_the_streaming_fit_refuses_bad_blocks_and_short_cells():
    times, interp, truth = _data()
    fit = CorrectionFit(("bias_cell",), (H, W), 10)
    with pytest.raises(BaselineError, match=r"must be \(time, 3, 4\).*\(10, 4, 4\)"):
        fit.add(np.zeros((10, 4, 4)), np.zeros((10, 4, 4)), times[:10])
    with pytest.raises(BaselineError, match="set up for 10 training steps; 11 were added"):
        fit.add(interp[:11], truth[:11], times[:11])
    short = CorrectionFit(("quantile_map",), (H, W), 29)
    short.add(interp[:29], np.zeros((29, H, W), np.float32), times[:29])
    with pytest.raises(BaselineError, match=r"at least 30 training values.*fewest: 29"):
        short.finish()
    with pytest.raises(ValueError, match="bias correction 'bias_year' is not valid; accepted: bias_cell"):
        CorrectionFit(("bias_year",), (H, W), 10)


def test_baselines_read_the_periods_a_block_at_a_time(monkeypatch):
    """Baselines on a paired problem: the fits and the validation RMSE read at most one block
    (a tiny budget forces many blocks) and equal the whole-period computation."""
    days = 60
    times = pd.date_range("2001-01-01", periods=days)
    lat, lon = np.linspace(45, 46.75, 8), np.linspace(7, 8.75, 8)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    rng = np.random.default_rng(3)
    values = np.stack([270 + np.sin(la * 3) + np.cos(lo * 2) + 0.1 * k + rng.normal(0, 0.3, la.shape)
                       for k in range(days)]).astype(np.float32)
    hr = xr.DataArray(values, {"time": times, "lat": lat, "lon": lon}, ("time", "lat", "lon"), attrs={"units": "K"})
    pair = make_pair(DataConfig(highres="own", scale=2, static=()), highres=hr.to_dataset(name="t2m"))
    train, val = ("2001-01-01", "2001-02-14"), ("2001-02-15", "2001-03-01")

    monkeypatch.setattr(bl, "BLOCK_BYTES", 4 * bl._CELL_BYTES * 64)  # 4 steps of 8 x 8 cells
    seen = []
    real_truth = bl.Baselines._truth
    monkeypatch.setattr(bl.Baselines, "_truth", lambda self, pos: seen.append(len(pos)) or real_truth(self, pos))
    b = bl.Baselines(pair, train_period=train)
    rmse = b.rmse(val)
    assert max(seen) <= 4 and len(seen) >= (45 + 15) // 4

    # the whole-period computation, written out here
    truth_all = pair.hr.values
    tpos = np.flatnonzero((times >= train[0]) & (times <= train[1]))
    interp_train = bl.interpolate(b.native.isel(time=tpos), pair.hr, "bilinear")
    vpos = np.flatnonzero((times >= val[0]) & (times <= val[1]))
    fields = {}
    for name in bl.CORRECTIONS:
        whole = BiasCorrection(name).fit(interp_train, truth_all[tpos], times[tpos])
        streamed = b._correction(name)
        for attr in ("bias", "monthly", "q_model", "q_truth"):
            if hasattr(whole, attr):
                np.testing.assert_allclose(getattr(streamed, attr), getattr(whole, attr), rtol=1e-12)
        fields[name] = whole.apply(bl.interpolate(b.native.isel(time=vpos), pair.hr, "bilinear"), times[vpos])
    for name in bl.CORRECTIONS:
        expected = np.sqrt(np.mean((fields[name].astype(np.float64) - truth_all[vpos]) ** 2))
        assert rmse[name] == pytest.approx(expected, rel=1e-9)
    assert set(rmse) == set(b.available())
