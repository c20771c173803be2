"""Time axes in every CF calendar: pairing, splits, normalisation, messages for bad times."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from engine.config import DataConfig
from engine.data import DataError, make_pair
from engine.data.normalise import create
from engine.data.splits import period_mask, period_times
from engine.data.timeaxis import calendar_of, check_times, keys, match_times, step_seconds, time_index

CALENDARS = ("standard", "proleptic_gregorian", "noleap", "365_day", "all_leap", "360_day")


def _times(calendar, start="2001-01-01", periods=400, freq="D", hour=0):
    t = xr.date_range(start, periods=periods, freq=freq, calendar=calendar, use_cftime=calendar not in ("standard", "proleptic_gregorian"))
    return t + pd.Timedelta(hours=hour) if hour else t


def _ds(times, var="t2m", H=4, W=4, lat0=45.0, lon0=7.0, res=0.25, units="K", seed=0):
    rng = np.random.default_rng(seed)
    T = len(times)
    return xr.Dataset(
        {var: (("time", "lat", "lon"), (280 + rng.normal(size=(T, H, W))).astype(np.float32), {"units": units})},
        coords={"time": times, "lat": lat0 + res * (np.arange(H) + 0.5), "lon": lon0 + res * (np.arange(W) + 0.5)},
    )


@pytest.mark.parametrize("calendar", CALENDARS)
def test_each_calendar_pairs_splits_and_normalises(calendar, tmp_path):
    ds = _ds(_times(calendar))
    # written and read back as a real file would be: the calendar survives decoding
    ds.to_netcdf(tmp_path / "x.nc", encoding={"time": {"units": "days since 2000-01-01", "calendar": calendar}})
    back = xr.open_dataset(tmp_path / "x.nc")
    family = {"standard": "proleptic_gregorian", "365_day": "noleap"}.get(calendar, calendar)
    assert calendar_of(back.time) in (calendar, family)
    pair = make_pair(DataConfig(scale=2, static=(), train_period=("2001-01-01", "2001-06-30")), highres=back)
    assert len(pair.times) == 400 and calendar_of(pair.times) == calendar_of(back.time)
    train = period_times(pair.times, ("2001-01-01", "2001-06-30"))
    # days in the first half year of each calendar, worked out by hand
    expected = {"360_day": 180, "all_leap": 182, "noleap": 181, "365_day": 181}.get(calendar, 181)
    assert train.size == expected
    norm = create("monthly_domain").fit(pair, ("2001-01-01", "2001-06-30"))
    y = norm.hr(pair.hr)
    back_phys = norm.inverse_hr(y.values, pair.times)
    np.testing.assert_allclose(back_phys, pair.hr.values, atol=1e-3)
    inst = create("instance").fit(pair, train)
    inst.lr(pair.lr)
    np.testing.assert_allclose(inst.inverse_hr(inst.hr(pair.hr).values, pair.times), pair.hr.values, atol=1e-3)


def test_360_day_dates_in_periods():
    t = _times("360_day")
    sel = period_mask(t, ("2001-02-29", "2001-02-30"))
    assert [f"{x.month}-{x.day}" for x in t[sel]] == ["2-29", "2-30"]
    with pytest.raises(DataError, match=r"'2001-02-30' is not a date of the data's 'proleptic_gregorian' calendar"):
        period_mask(_times("standard"), ("2001-02-01", "2001-02-30"))
    with pytest.raises(DataError, match=r"'2001-02-29' is not a date of the data's 'noleap'.*never February 29"):
        period_mask(_times("noleap"), ("2001-02-29", "2001-03-01"))
    with pytest.raises(DataError, match=r"contains no time step of the data, which cover 2001-01-01 .* 360_day"):
        period_mask(t, ("1990-01-01", "1990-12-30"))


def test_date_only_end_covers_the_whole_day():
    t = pd.date_range("2001-01-01", periods=48, freq="h")
    assert period_mask(t, ("2001-01-01", "2001-01-01")).sum() == 24
    assert period_mask(t, ("2001-01-01", "2001-01-01T06:00")).sum() == 7


def test_daily_00_and_12_stamps_pair_by_day():
    hr = _ds(_times("noleap", periods=10), H=8, W=8, lat0=45.0, lon0=7.0, res=0.125)
    lr = _ds(_times("noleap", start="2001-01-03", periods=20, hour=12), H=6, W=6, lat0=44.5, lon0=6.5, res=0.5, seed=1)
    pos_hr, pos_lr = match_times(hr.time, lr.time, "hr", "lr")
    assert pos_hr.tolist() == list(range(2, 10)) and pos_lr.tolist() == list(range(8))
    pair = make_pair(DataConfig(downscaling="mos", lowres="gcm", scale=4, static=()), highres=hr, lowres=lr)
    # the target's stamps are kept; the input of day d is the 12:00 field of day d
    assert keys(pair.times).tolist() == keys(hr.time[2:]).tolist()
    assert pair.lr.t2m.shape == (8, 2, 2)


def test_monthly_means_pair_by_month():
    a = xr.date_range("2001-01-01", periods=12, freq="MS", calendar="360_day", use_cftime=True)
    b = a + pd.Timedelta(days=15)  # mid-month stamps
    pos_a, pos_b = match_times(a, b[3:], "a", "b")
    assert pos_a.tolist() == list(range(3, 12)) and pos_b.tolist() == list(range(9))


def test_hourly_stamps_match_exactly():
    a = pd.date_range("2001-01-01", periods=24, freq="h")
    b = pd.date_range("2001-01-01T00:30", periods=24, freq="h")
    assert step_seconds(a) == 3600
    with pytest.raises(DataError, match=r"no common time steps.*matched by time stamp"):
        match_times(a, b, "entry 'a'", "entry 'b'")


def test_duplicated_and_unsorted_times_named():
    t = list(pd.date_range("2001-01-01", periods=6))
    dup = t[:3] + [t[2]] + t[3:]
    with pytest.raises(DataError, match=r"entry 'x' has 1 duplicated time stamp\(s\), the first 2001-01-03 00:00:00 at positions 2 and 3"):
        check_times(dup, "entry 'x'")
    unsorted = [t[0], t[2], t[1], t[3]]
    with pytest.raises(DataError, match=r"not in increasing order: 2001-01-03 00:00:00 \(position 1\) is followed by 2001-01-02"):
        check_times(unsorted, "entry 'x'")
    ds = _ds(pd.DatetimeIndex(unsorted))
    with pytest.raises(DataError, match=r"not in increasing order"):
        make_pair(DataConfig(scale=2, static=()), highres=ds)
    cf = _times("360_day", periods=4)
    with pytest.raises(DataError, match=r"duplicated time stamp\(s\), the first 2001-01-02"):
        check_times(xr.CFTimeIndex([cf[0], cf[1], cf[1], cf[2]]), "entry 'y'")


def test_calendars_of_different_families_refused_and_aliases_pair():
    hr = _ds(_times("360_day", periods=30), H=8, W=8, res=0.125)
    lr = _ds(_times("standard", periods=30), H=6, W=6, lat0=44.5, lon0=6.5, res=0.5)
    with pytest.raises(DataError, match=r"uses the '360_day' calendar and .* the 'proleptic_gregorian' calendar"):
        make_pair(DataConfig(downscaling="mos", lowres="gcm", scale=4, static=()), highres=hr, lowres=lr)
    lr365 = _ds(_times("365_day", periods=30), H=6, W=6, lat0=44.5, lon0=6.5, res=0.5)
    hr_noleap = _ds(_times("noleap", periods=30), H=8, W=8, res=0.125)
    assert len(make_pair(DataConfig(downscaling="mos", lowres="gcm", scale=4, static=()),
                         highres=hr_noleap, lowres=lr365).times) == 30


def test_time_index_kinds():
    assert isinstance(time_index(np.array(["2001-01-01"], dtype="datetime64[s]")), pd.DatetimeIndex)
    assert isinstance(time_index(_times("all_leap", periods=2).values), xr.CFTimeIndex)
    assert keys(["2001-02-03T04:05:06"]).tolist() == [20010203040506]


@pytest.mark.slow
@pytest.mark.parametrize("calendar,test_period", [("noleap", ("2000-02-21", "2000-02-28")),
                                                  ("360_day", ("2000-02-21", "2000-02-30"))])
def test_training_on_a_non_standard_calendar(calendar, test_period, tmp_path, monkeypatch, tiny_config):
    import yaml

    from engine.data import synthetic
    from engine.inference import write_predictions
    from engine.runs import RunStore
    from engine.training.trainer import train

    monkeypatch.setenv("FINESCALE_DATA_ROOTS", str(tmp_path))
    hr = synthetic.regular(lat=(44.0, 46.0), lon=(6.0, 8.0), res=0.125, ntime=60, start="2000-01-01", calendar=calendar)
    lr = synthetic.regular(lat=(43.0, 47.0), lon=(5.0, 9.0), res=0.5, ntime=60, start="2000-01-01", calendar=calendar)
    sources = {}
    for name, ds, role in (("rcm", hr, "highres"), ("gcm", lr, "lowres")):
        path = synthetic.write(ds, tmp_path / f"{name}.nc")
        sources[name] = {"driver": "netcdf", "args": {"urlpath": str(path), "xarray_kwargs": {"engine": "netcdf4"}},
                         "metadata": {"role": role}}
    (tmp_path / "catalog.yaml").write_text(yaml.safe_dump({"sources": sources}))
    cfg = tiny_config.replace(data={"highres": "rcm", "lowres": "gcm", "downscaling": "mos", "variable": "tas",
                                    "catalog": str(tmp_path / "catalog.yaml"), "static": [], "patch_size": 8,
                                    "train_period": ["2000-01-01", "2000-02-10"],
                                    "val_period": ["2000-02-11", "2000-02-20"], "test_period": list(test_period)},
                              training={"epochs": 1, "samples_per_epoch": 16})
    run = RunStore(tmp_path / "runs").create(cfg.validate())
    train(run)
    assert run.status()["state"] in ("running", "completed") and run.epochs()
    write_predictions(run)
    with xr.open_dataset(run.predictions_path) as out:
        assert calendar_of(out.time) == calendar and out.time.encoding["calendar"] == calendar
        last = out.time.values[-1]
        assert (last.month, last.day) == (2, int(test_period[1][-2:]))  # 2000-02-30 exists in 360_day
        assert np.isfinite(out.model.values).all() and out.model.attrs["units"] == "K"
