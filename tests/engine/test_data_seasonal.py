"""The smooth seasonal climatology (engine.data.seasonal, data.normalisation = seasonal_pixel)."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from engine.config import DataConfig
from engine.data import DataError, make_pair
from engine.data import seasonal
from engine.data.normalise import create, from_dict


def test_year_phase_by_hand():
    # 2000 is a leap year: 31 Dec 12:00 is day 366 of 366, half gone
    t = pd.DatetimeIndex(["2001-01-01 00:00", "2001-07-02 12:00", "2000-12-31 12:00"])
    np.testing.assert_allclose(seasonal.year_phase(t), [0.0, (182 + 0.5) / 365, (365 + 0.5) / 366])
    # 360_day: 1 July is day 181 of 360 -> exactly half the year
    t360 = xr.CFTimeIndex(np.array([xr.coding.cftime_offsets.get_date_type("360_day")(2001, 7, 1)]))
    np.testing.assert_allclose(seasonal.year_phase(t360), [0.5])
    # noleap: 1 March is day 60 of 365 whatever the year
    tnl = xr.CFTimeIndex(np.array([xr.coding.cftime_offsets.get_date_type("noleap")(2000, 3, 1)]))
    np.testing.assert_allclose(seasonal.year_phase(tnl), [59 / 365])


def _times(calendar: str, freq: str, years: int = 2):
    if calendar == "standard":
        return pd.date_range("2000-01-01", periods=int(years * 365.25 * {"D": 1, "6h": 4}[freq]), freq=freq)
    n = {"noleap": 365, "360_day": 360}[calendar] * years * {"D": 1, "6h": 4}[freq]
    return xr.date_range("2000-01-01", periods=n, freq=freq, calendar=calendar, use_cftime=True)


@pytest.mark.parametrize("calendar,freq", [("standard", "D"), ("noleap", "6h"), ("360_day", "D")])
def test_fit_recovers_a_two_harmonic_cycle_from_its_monthly_means(calendar, freq):
    times = _times(calendar, freq)
    phase = seasonal.year_phase(times)
    true = 10 + 8 * np.cos(2 * np.pi * phase) - 3 * np.sin(2 * np.pi * phase) + 1.5 * np.cos(4 * np.pi * phase)
    months = np.asarray(times.month)
    monthly = np.array([true[months == k].mean() for k in range(1, 13)])
    coef = seasonal.fit(monthly, times)
    np.testing.assert_allclose(coef, [10, 8, -3, 1.5, 0], atol=1e-9)
    np.testing.assert_allclose(seasonal.basis(times) @ coef, true, atol=1e-9)


def test_fit_refuses_too_few_months_and_nan():
    times = pd.date_range("2001-01-01", "2001-03-31", freq="D")  # 3 months < 5 coefficients
    with pytest.raises(DataError, match="at least 5 calendar months"):
        seasonal.fit(np.ones(12), times)
    full = pd.date_range("2001-01-01", "2001-12-31", freq="D")
    bad = np.ones(12)
    bad[4] = np.nan
    with pytest.raises(DataError, match="NaN"):
        seasonal.fit(bad, full)
    with pytest.raises(DataError, match="12 monthly values"):
        seasonal.fit(np.ones(11), full)


@pytest.fixture(scope="module")
def cycle_pair(data_small_demo):
    """The small demo's grid, with a target that is a steep seasonal cycle plus N(0, 1 K) noise."""
    hr, _ = data_small_demo
    hr = hr[["t2m"]].copy()
    phase = seasonal.year_phase(hr.time.values)
    rng = np.random.default_rng(0)
    amplitude = np.linspace(5, 15, hr.sizes["lon"])  # a different cycle in every column
    cycle = 280 + amplitude[None, None, :] * np.cos(2 * np.pi * phase)[:, None, None]
    noise = rng.normal(0, 1.0, hr.t2m.shape)
    hr["t2m"] = (hr.t2m.dims, (cycle + noise).astype(np.float32), hr.t2m.attrs)
    return make_pair(DataConfig(variable="t2m", predictors=(), scale=4, static=()), highres=hr), noise


def test_seasonal_removes_the_drift_within_months_that_monthly_steps_leave(cycle_pair):
    pair, noise = cycle_pair
    train = ("2001-01-01", "2001-12-31")
    residual = {}
    for name in ("monthly_pixel", "seasonal_pixel"):
        norm = create(name).fit(pair, train)
        y = norm.hr(pair.hr).values
        mean, std = norm._broadcast(norm.hr_stats, pair.times, y.shape)
        residual[name] = np.sqrt(np.mean((pair.hr.values - mean) ** 2))  # what the climatology leaves
    assert np.asarray(create("seasonal_pixel").fit(pair, train).hr_stats[0]).shape == (5, 16, 32)
    noise_rms = np.sqrt(np.mean(noise**2))
    # the smooth climatology leaves the noise only; month steps leave about 1 K of drift besides
    assert residual["seasonal_pixel"] == pytest.approx(noise_rms, rel=0.02)
    assert residual["monthly_pixel"] > 1.25 * noise_rms


def test_without_every_month_the_monthly_steps_are_kept(cycle_pair):
    pair, _ = cycle_pair
    norm = create("seasonal_pixel").fit(pair, ("2001-01-01", "2001-08-31"))
    assert np.asarray(norm.hr_stats[0]).shape == (12, 16, 32)
    monthly = create("monthly_pixel").fit(pair, ("2001-01-01", "2001-08-31"))
    np.testing.assert_allclose(norm.hr(pair.hr).values, monthly.hr(pair.hr).values)


def test_round_trip_through_json_and_inverse(cycle_pair):
    import json

    pair, _ = cycle_pair
    norm = create("seasonal_pixel").fit(pair, ("2001-01-01", "2001-12-31"))
    y = norm.hr(pair.hr)
    again = from_dict(json.loads(json.dumps(norm.to_dict(), allow_nan=False)))
    np.testing.assert_allclose(again.hr(pair.hr).values, y.values, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(again.inverse_hr(y.values[:, None], pair.times)[:, 0], pair.hr.values, rtol=1e-5, atol=1e-3)
