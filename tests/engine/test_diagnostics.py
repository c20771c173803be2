"""ML-Bench diagnostics (engine.evaluation.diagnostics): hand values, the benchmark repository's own
definitions re-implemented in a few lines (WCRP-CORDEX/ml-benchmark evaluation/diagnostics.py),
and the metric-registry entries every run can be scored with."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from scipy.stats import wasserstein_distance

from engine.evaluation._common import MetricError
from engine.evaluation.diagnostics import (
    correlation_bias, index_bias, index_ratio, radial_psd, ralsd, ralsd_of, reduce_map, wasserstein,
)
from engine.registry import METRICS


def field(values, units="K", calendar="noleap", dims=("time", "y", "x")):
    values = np.asarray(values, dtype=float)
    t = xr.date_range("2001-01-01", periods=values.shape[0], freq="D", calendar=calendar, use_cftime=True)
    return xr.DataArray(values, dims=dims, coords={"time": t}, attrs={"units": units})


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(3)
    truth = field(285 + 5 * rng.standard_normal((730, 12, 16)))
    pred = truth + 0.5 * rng.standard_normal(truth.shape)
    pred.attrs = {"units": "K"}
    return pred, truth


# -- hand values ---------------------------------------------------------------------------------

def test_index_bias_and_its_one_number_by_hand():
    truth = field(np.full((365, 2, 2), 290.0))
    shift = xr.DataArray([[1.0, -3.0], [0.0, 2.0]], dims=("y", "x"))
    pred = (truth + shift).assign_attrs(units="K")
    b = index_bias(pred, truth, "txx")
    np.testing.assert_allclose(b.values, shift.values)
    assert float(reduce_map(b)) == pytest.approx((1 + 3 + 0 + 2) / 4)
    w = xr.DataArray([[1.0, 1.0], [0.0, 2.0]], dims=("y", "x"))
    assert float(reduce_map(b, w)) == pytest.approx((1 + 3 + 4) / 4)
    assert float(METRICS.get("bias_txx")(pred, truth)) == pytest.approx(1.5)
    rel = index_bias(pred, truth, "mean", relative=True)
    assert float(rel[0, 0]) == pytest.approx(1 / 290)
    assert float(index_ratio(pred, truth, "mean")[0, 1]) == pytest.approx(287 / 290)


def test_ralsd_by_hand(pair):
    _, truth = pair
    assert float(ralsd(truth, truth)) == 0.0
    double = (2 * truth).assign_attrs(units="K")  # 4x the power at every wavenumber
    assert float(ralsd(double, truth)) == pytest.approx((10 * np.log10(0.25)) ** 2)


def test_wasserstein_by_hand():
    truth = field(np.array([0.0, 1.0, 2.0, 3.0])[:, None, None] * np.ones((1, 1, 2)))
    pred = (truth + 2.0).assign_attrs(units="K")
    assert float(wasserstein(pred, truth)) == pytest.approx(2.0)
    np.testing.assert_allclose(wasserstein(pred, truth, dim="time").values, [[2.0, 2.0]])


def test_correlation_bias_by_hand():
    x = np.sin(np.arange(100.0))[:, None, None]
    truth = xr.Dataset({"tasmax": field(x), "pr": field(2 * x, "mm/day")})
    pred = xr.Dataset({"tasmax": field(x), "pr": field(-x, "mm/day")})
    out = correlation_bias(pred, truth)
    assert float(out.correlation_truth.squeeze()) == pytest.approx(1.0)
    assert float(out.correlation_bias.squeeze()) == pytest.approx(-2.0)
    with pytest.raises(MetricError, match=r"lacks \['pr'\]"):
        correlation_bias(pred[["tasmax"]], truth)


# -- the benchmark's own definitions --------------------------------------------------------------

def _mlbench_radial_average(a):  # diagnostics.py::_radial_average
    y, x = np.indices(a.shape)
    center = np.array([(x.max() - x.min()) / 2.0, (y.max() - y.min()) / 2.0])
    r = np.hypot(x - center[0], y - center[1]).astype(np.int32)
    return np.bincount(r.ravel(), a.ravel()) / np.maximum(np.bincount(r.ravel()), 1)


def _mlbench_psd(da):  # diagnostics.py::psd for one dataset
    f = np.fft.fftshift(np.fft.fft2(np.nan_to_num(da.values, nan=0.0), axes=(-2, -1)), axes=(-2, -1))
    return np.mean([_mlbench_radial_average(p) for p in np.abs(f) ** 2], axis=0)


def _mlbench_ralsd(p0, p1):  # diagnostics.py::ralsd
    return float(np.mean((10 * np.log10(np.maximum(p0 / np.maximum(p1, 1e-30), 1e-30))) ** 2))


@pytest.mark.parametrize("shape", [(16, 16), (12, 16), (15, 9)])
def test_psd_and_ralsd_match_the_benchmark(shape):
    rng = np.random.default_rng(1)
    truth = field(rng.standard_normal((20, *shape)))
    smooth = truth.rolling(x=3, center=True, min_periods=1).mean().assign_attrs(units="K")
    smooth[0, 0, 0] = np.nan  # NaN -> 0 in both definitions
    np.testing.assert_allclose(radial_psd(truth).values, _mlbench_psd(truth), rtol=1e-10)
    np.testing.assert_allclose(radial_psd(smooth).values, _mlbench_psd(smooth), rtol=1e-10)
    ours = ralsd_of(radial_psd(truth), radial_psd(smooth))
    assert ours == pytest.approx(_mlbench_ralsd(_mlbench_psd(truth), _mlbench_psd(smooth)), rel=1e-10)
    assert ours > 1.0  # smoothing loses small-scale power


def test_wasserstein_matches_scipy(pair):
    pred, truth = pair
    assert float(wasserstein(pred, truth)) == pytest.approx(
        wasserstein_distance(pred.values.ravel(), truth.values.ravel()), rel=1e-10)
    per_cell = wasserstein(pred, truth, dim="time")
    for j, i in [(0, 0), (5, 7), (11, 15)]:
        assert float(per_cell[j, i]) == pytest.approx(
            wasserstein_distance(pred.values[:, j, i], truth.values[:, j, i]), rel=1e-10)


def test_seasonal_diagnostics(pair):
    pred, truth = pair
    summer = float(METRICS.get("bias_txx")(pred, truth, season="JJA"))
    manual = reduce_map(index_bias(pred.sel(time=pred.time.dt.season == "JJA"),
                                   truth.sel(time=truth.time.dt.season == "JJA"), "txx"))
    assert summer == pytest.approx(float(manual))


# -- registry and bad input ----------------------------------------------------------------------

def test_registered_and_usable_on_any_run(pair):
    pred, truth = pair
    for name in ("bias_mean", "bias_q98", "bias_txx", "bias_txn", "bias_su", "bias_lag1_autocorr",
                 "bias_interannual_var", "ralsd", "wasserstein"):
        info = METRICS.info(name)
        assert info["kind"] in ("distribution", "spectral") and info["higher_is_better"] is False
        value = METRICS.get(name)(pred, truth)
        assert value.ndim == 0 and np.isfinite(value) and float(value) >= 0, name
    assert METRICS.info("bias_rx1day")["variables"] == ("pr",)
    bias_map = METRICS.get("bias_txx")(pred, truth, dim="time")
    assert bias_map.dims == ("y", "x")


def test_masks_exclude_cells(pair):
    pred, truth = pair
    bad = pred.copy()
    bad[:, 0, 0] = 1e6
    mask = xr.DataArray(np.ones((12, 16), bool), dims=("y", "x"))
    mask[0, 0] = False
    assert float(METRICS.get("bias_mean")(bad, truth, mask=mask)) == pytest.approx(
        float(METRICS.get("bias_mean")(pred, truth, mask=mask)))
    assert np.isnan(METRICS.get("bias_mean")(bad, truth, mask=mask, dim="time")[0, 0])


def test_bad_input_is_named(pair):
    pred, truth = pair
    with pytest.raises(MetricError, match=r"dim=\('y', 'x'\) is not valid; accepted: None"):
        METRICS.get("bias_txx")(pred, truth, dim=("y", "x"))
    with pytest.raises(MetricError, match="accepted: None"):
        ralsd(pred, truth, dim="time")
    with pytest.raises(MetricError, match="different grids|differ along"):
        ralsd(pred.isel(x=slice(0, 8)), truth)
    with pytest.raises(MetricError, match="unknown index"):
        index_bias(pred, truth, "tx99")
    with pytest.raises(MetricError, match="2-D grid"):
        radial_psd(truth.isel(y=0))
