"""Climate indices (engine.evaluation.indices): hand-worked values, every cftime calendar, seasons,
and agreement with the CORDEX ML-Bench repository's own definitions (re-implemented below in a
few lines from reading WCRP-CORDEX/ml-benchmark evaluation/indices.py) on the same arrays."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from engine.evaluation._common import MetricError
from engine.evaluation.indices import INDICES, compute_index, list_indices, select_season


def series(values, calendar="noleap", start="2001-01-01", units="K", cells=1):
    values = np.asarray(values, dtype=float)
    t = xr.date_range(start, periods=values.shape[0], freq="D", calendar=calendar, use_cftime=True)
    data = np.repeat(values[:, None], cells, axis=1)
    return xr.DataArray(data, dims=("time", "x"), coords={"time": t}, attrs={"units": units})


# -- hand-worked values --------------------------------------------------------------------------

def test_temperature_indices_by_hand():
    # two noleap years: year 1 at 290 K with one 300 K day, year 2 at 280 K with one 270 K day
    y1 = np.full(365, 290.0); y1[100] = 300.0
    y2 = np.full(365, 280.0); y2[200] = 270.0
    tx = series(np.r_[y1, y2])
    assert float(compute_index(tx, "txx")[0]) == pytest.approx((300 + 280) / 2)
    assert float(compute_index(tx, "txn")[0]) == pytest.approx((290 + 270) / 2)
    # summer days: tasmax > 25 degC = 298.15 K: only the 300 K day
    assert float(compute_index(tx, "su")[0]) == pytest.approx(0.5)
    assert float(compute_index(tx, "su", threshold="285 K")[0]) == pytest.approx(365 / 2)
    assert float(compute_index(tx, "mean")[0]) == pytest.approx(np.r_[y1, y2].mean())
    # interannual variability: std (ddof 0) of the two yearly means
    means = [y1.mean(), y2.mean()]
    assert float(compute_index(tx, "interannual_var")[0]) == pytest.approx(np.std(means))


def test_precipitation_indices_by_hand():
    y1 = np.zeros(365); y1[[10, 11, 12]] = [2.0, 4.0, 0.5]  # wet spell of 2 days, then 0.5 (dry)
    y2 = np.zeros(365); y2[50] = 10.0
    pr = series(np.r_[y1, y2], units="mm/day")
    assert float(compute_index(pr, "rx1day")[0]) == pytest.approx((4 + 10) / 2)
    # SDII pooled over the period (the benchmark's definition): (2 + 4 + 10) / 3, not the mean of
    # the yearly intensities (3 + 10) / 2
    assert float(compute_index(pr, "sdii")[0]) == pytest.approx(16 / 3)
    assert float(compute_index(pr, "cwd")[0]) == pytest.approx((2 + 1) / 2)
    # longest dry run (< 1 mm): year 1 = days 12..364 (the 0.5 mm day is dry) = 353 days,
    # year 2 = days 51..364 = 314
    assert float(compute_index(pr, "cdd")[0]) == pytest.approx((353 + 314) / 2)


def test_lag1_autocorrelation_and_quantile_by_hand():
    alternating = series(np.tile([1.0, -1.0], 200))
    assert float(compute_index(alternating, "lag1_autocorr")[0]) == pytest.approx(-1.0)
    ramp = series(np.arange(101.0))
    assert float(compute_index(ramp, "quantile", q=0.98)[0]) == pytest.approx(98.0)


@pytest.mark.parametrize("season", [None, "JJA", "DJF"])
def test_spells_equal_xclims(season):
    import xclim.indices as xi
    from xclim.indices.generic import select_time

    rng = np.random.default_rng(5)
    t = xr.date_range("1990-01-01", periods=3 * 365, freq="D", calendar="noleap", use_cftime=True)
    pr = xr.DataArray(rng.gamma(0.4, 4.0, (t.size, 6)) * (rng.random((t.size, 6)) < 0.6), dims=("time", "x"),
                      coords={"time": t}, attrs={"units": "mm/day"})
    x = pr if season is None else select_time(pr, season=season)
    for ours, theirs in (("cdd", xi.maximum_consecutive_dry_days), ("cwd", xi.maximum_consecutive_wet_days)):
        expected = theirs(x, thresh="1 mm/day", freq="YS").mean("time")
        np.testing.assert_allclose(compute_index(pr, ours, season=season).values, expected.values)


def test_pr_in_kg_m2_s1_is_converted_by_xclim():
    mmday = np.zeros(365); mmday[[3, 4]] = [5.0, 12.0]
    flux = series(mmday / 86400.0, units="kg m-2 s-1")
    assert float(compute_index(flux, "sdii")[0]) * 86400 == pytest.approx(8.5)
    assert float(compute_index(flux, "cwd")[0]) == pytest.approx(2.0)


# -- calendars and seasons ---------------------------------------------------------------------

@pytest.mark.parametrize("calendar, days", [("noleap", 365), ("360_day", 360), ("proleptic_gregorian", 365),
                                            ("standard", 365), ("all_leap", 366)])
def test_every_calendar(calendar, days):
    n = 3 * 366
    tx = series(280 + 10 * np.sin(np.arange(n) / 30.0), calendar=calendar)
    assert np.isfinite(compute_index(tx, "txx")).all()
    djf = select_season(tx, "winter")
    assert set(djf.time.dt.month.values) == {12, 1, 2}
    assert djf.sizes["time"] == int((tx.time.dt.season == "DJF").sum())
    # a 360-day year has 30-day months: DJF of the first full year has 90 days
    if calendar == "360_day":
        assert int((djf.time.dt.year == 2001).sum()) == 90


def test_winter_spells_end_with_the_season():
    t = xr.date_range("2001-01-01", periods=365, freq="D", calendar="noleap", use_cftime=True)
    values = np.full(365, 5.0)
    values[(t.month == 2) & (t.day >= 19)] = 0.0  # last 10 days of February dry
    values[(t.month == 12) & (t.day <= 10)] = 0.0  # first 10 days of December dry
    pr = series(values, units="mm/day")
    assert float(compute_index(pr, "cdd", season="DJF")[0]) == 10.0  # not 20: the spells do not join


def test_seasonal_txx_uses_only_that_season():
    t = xr.date_range("2001-01-01", periods=365, freq="D", calendar="noleap", use_cftime=True)
    values = np.where(t.month == 7, 305.0, 280.0)
    values[10] = 290.0  # January
    tx = series(values)
    assert float(compute_index(tx, "txx", season="JJA")[0]) == 305.0
    assert float(compute_index(tx, "txx", season="DJF")[0]) == 290.0


# -- the benchmark's own definitions, on the same arrays -----------------------------------------

def _mlbench_filter(x, season):  # evaluation/indices.py::_filter_by_season
    code = {"winter": "DJF", "summer": "JJA", "spring": "MAM", "autumn": "SON"}.get(season)
    return x if code is None else x.where(x["time.season"] == code, drop=True)


def _mlbench_max_spell(condition):  # evaluation/indices.py::_resample_max_spell with _max_spell_length
    def longest(flags):
        best = run = 0
        for f in flags:
            run = run + 1 if f else 0
            best = max(best, run)
        return float(best)

    def per_year(arr):
        return xr.apply_ufunc(longest, arr, input_core_dims=[["time"]], vectorize=True)

    return condition.resample(time="1YE").map(per_year).mean("time")


MLBENCH = {
    "txx": lambda x, s: _mlbench_filter(x, s).resample(time="1YE").max().mean("time"),
    "txn": lambda x, s: _mlbench_filter(x, s).resample(time="1YE").min().mean("time"),
    "su": lambda x, s: (_mlbench_filter(x, s) > 298.15).groupby("time.year").sum("time").mean("year"),
    "rx1day": lambda x, s: _mlbench_filter(x, s).resample(time="1YE").max().mean("time"),
    "sdii": lambda x, s: _mlbench_filter(x, s).where(_mlbench_filter(x, s) >= 1.0).mean("time"),
    "cdd": lambda x, s: _mlbench_max_spell(_mlbench_filter(x, s) < 1.0),
    "cwd": lambda x, s: _mlbench_max_spell(_mlbench_filter(x, s) >= 1.0),
    "mean": lambda x, s: _mlbench_filter(x, s).mean("time"),
    "lag1_autocorr": lambda x, s: xr.corr(_mlbench_filter(x, s), _mlbench_filter(x, s).shift(time=1), dim="time"),
    "interannual_var": lambda x, s: _mlbench_filter(x, s).groupby("time.year").mean("time").std("year"),
}


@pytest.fixture(scope="module")
def random_fields():
    rng = np.random.default_rng(7)
    t = xr.date_range("1981-01-01", "1983-12-31", freq="D", calendar="standard", use_cftime=True)
    n = t.size
    seasonal = 12 * np.sin(2 * np.pi * (np.arange(n) - 100) / 365.25)
    tas = 288 + seasonal[:, None, None] + 4 * rng.standard_normal((n, 3, 4))
    pr = rng.gamma(0.6, 5.0, (n, 3, 4)) * (rng.random((n, 3, 4)) < 0.5)
    coords = {"time": t}
    return (xr.DataArray(tas, dims=("time", "y", "x"), coords=coords, attrs={"units": "K"}),
            xr.DataArray(pr, dims=("time", "y", "x"), coords=coords, attrs={"units": "mm/day"}))


@pytest.mark.parametrize("season", [None, "summer", "winter"])
@pytest.mark.parametrize("name", list(MLBENCH))
def test_agrees_with_the_benchmark_definitions(random_fields, name, season):
    tas, pr = random_fields
    da = pr if name in ("rx1day", "sdii", "cdd", "cwd") else tas
    ours = compute_index(da, name, season=season)
    theirs = MLBENCH[name](da, season)
    if season == "winter" and name in ("cdd", "cwd"):
        # documented difference: our spells end with the season, the benchmark joins February to
        # December, so ours are never longer
        assert (ours.values <= theirs.values).all() and np.isclose(ours.values, theirs.values).mean() > 0.5
        return
    np.testing.assert_allclose(ours.values, theirs.values, rtol=1e-10, atol=1e-10)


# -- bad input -----------------------------------------------------------------------------------

def test_bad_input_is_named():
    tx = series(np.full(365, 290.0))
    with pytest.raises(MetricError, match="unknown index 'tx_max'; known indices: mean, quantile, txx"):
        compute_index(tx, "tx_max")
    with pytest.raises(MetricError, match="season 'wet' is not valid; accepted: annual, DJF"):
        compute_index(tx, "txx", season="wet")
    with pytest.raises(MetricError, match="no 'units' attribute"):
        compute_index(tx.assign_attrs(units=""), "txx")
    assert float(compute_index(tx.assign_attrs(units=""), "txx", units="K")[0]) == 290.0
    with pytest.raises(MetricError, match="'time' dimension"):
        compute_index(tx.isel(time=0), "mean")
    with pytest.raises(MetricError, match="index 'txx' \\(meant for tasmax\\) cannot use .*temperature"):
        compute_index(tx.assign_attrs(units="mm/day"), "txx")
    with pytest.raises(MetricError, match="q=1.5"):
        compute_index(tx, "quantile", q=1.5)


def test_index_lists():
    assert set(list_indices("tasmax")) >= {"txx", "txn", "su", "mean"} and "rx1day" not in list_indices("tasmax")
    assert set(list_indices("pr")) >= {"rx1day", "sdii", "cdd", "cwd"} and "txx" not in list_indices("pr")
    assert set(list_indices()) == set(INDICES)
