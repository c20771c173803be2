"""Pairing: PerfectProg block means, MOS with a non-integer ratio, boxes, times, masks, bad input."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from engine.config import DataConfig
from engine.data import DataError, make_pair
from engine.data.regrid import block_mean


def _grid_ds(values, lat0=45.0, lon0=7.0, res=0.25, start="2001-01-01", var="t2m"):
    values = np.asarray(values, dtype=np.float32)
    T, H, W = values.shape
    return xr.Dataset(
        {var: (("time", "lat", "lon"), values, {"units": "K"})},
        coords={
            "time": pd.date_range(start, periods=T, freq="D"),
            "lat": lat0 + res * (np.arange(H) + 0.5),
            "lon": lon0 + res * (np.arange(W) + 0.5),
        },
    )


def test_perfectprog_block_mean_by_hand_with_nan():
    v = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4)
    v[0, 0, 0] = np.nan  # one NaN in a block: mean of the other three
    v[1, 2:, 2:] = np.nan  # a whole block NaN: stays NaN
    pair = make_pair(DataConfig(scale=2, static=()), highres=_grid_ds(v))
    lr = pair.lr.t2m.values
    assert lr.shape == (2, 2, 2)
    assert lr[0, 0, 0] == pytest.approx((1 + 4 + 5) / 3)
    assert lr[0, 1, 1] == pytest.approx((10 + 11 + 14 + 15) / 4)
    assert np.isnan(lr[1, 1, 1])
    # coordinates are block centres
    np.testing.assert_allclose(pair.lr.lat.values, 45.0 + 0.5 * (np.arange(2) + 0.5))
    # the mask: NaN at every time step -> invalid; NaN at some -> still part of the domain
    assert pair.mask.dtype == bool and pair.mask.shape == (4, 4) and pair.mask.values.all()
    assert pair.scale == 2 and pair.hr.dims == ("time", "lat", "lon")


def test_mask_marks_always_missing_cells():
    v = np.ones((3, 4, 4), np.float32)
    v[:, 0, :] = np.nan  # e.g. sea in a land-only dataset
    pair = make_pair(DataConfig(scale=2, static=()), highres=_grid_ds(v))
    assert not pair.mask.values[0].any() and pair.mask.values[1:].all()


def test_scale_not_dividing_grid_pads_reversibly(caplog):
    v = np.arange(2 * 6 * 10, dtype=np.float32).reshape(2, 6, 10)
    ds = _grid_ds(v)
    with caplog.at_level("INFO", logger="engine.data.grid"):
        pair = make_pair(DataConfig(scale=4, static=()), highres=ds)
    assert "6 x 10 is not a multiple of data.scale=4; padded by 2 row(s) and 2 column(s)" in caplog.text
    assert pair.hr.shape == (2, 8, 12) and pair.lr.t2m.shape == (2, 2, 3)
    assert pair.padding == {"dims": ("lat", "lon"), "shape": (6, 10), "pad": (2, 2)}
    # padded cells are invalid; their coordinates continue the grid
    assert not pair.mask.values[6:].any() and not pair.mask.values[:, 10:].any() and pair.mask.values[:6, :10].all()
    np.testing.assert_allclose(pair.hr.lat.values, 45.0 + 0.25 * (np.arange(8) + 0.5))
    # the last block's mean is over its real cells only
    assert pair.lr.t2m.values[0, 1, 2] == pytest.approx(np.mean(v[0, 4:6, 8:10]))
    # and cutting back gives the original grid exactly
    from engine.data.pairing import unpad

    back = unpad(pair.hr, pair)
    np.testing.assert_array_equal(back.values, v)
    np.testing.assert_array_equal(back.lon.values, ds.lon.values)


def test_scale_larger_than_domain():
    with pytest.raises(DataError, match=r"data.scale=8 is larger than the grid of .* \(6 x 10\); accepted: a scale of at most 6"):
        make_pair(DataConfig(scale=8, static=()), highres=_grid_ds(np.zeros((2, 6, 10))))


def test_bbox_outside_data():
    with pytest.raises(DataError, match=r"bbox=.*contains no grid cell.*covers lat 45..45.5"):
        make_pair(DataConfig(scale=2, static=(), bbox=(10.0, 11.0, 0.0, 1.0)), highres=_grid_ds(np.zeros((1, 2, 2))))


def test_all_nan_target():
    with pytest.raises(DataError, match=r"target 't2m' .* is all NaN"):
        make_pair(DataConfig(scale=2, static=()), highres=_grid_ds(np.full((2, 4, 4), np.nan)))


def test_unknown_variable_and_predictor_list_the_variables():
    ds = _grid_ds(np.zeros((2, 4, 4)))
    with pytest.raises(DataError, match=r"target variable 'tas' is not in entry .*; its variables: t2m"):
        make_pair(DataConfig(variable="tas", scale=2, static=()), highres=ds)
    with pytest.raises(DataError, match=r"predictor variable 'z500' .*its variables: t2m"):
        make_pair(DataConfig(scale=2, static=(), predictors=("z500",)), highres=ds)


def test_unknown_entry_through_config():
    with pytest.raises(DataError, match="unknown catalogue entry 'nope'"):
        make_pair(DataConfig(highres="nope"))


def test_mos_non_integer_ratio(data_small_demo):
    hr, gcm = data_small_demo  # 1/12 degree vs 0.3 degree: ratio 3.6
    cfg = DataConfig(downscaling="mos", lowres="gcm", scale=4, predictors=("uas",), static=("elevation",))
    pair = make_pair(cfg, highres=hr, lowres=gcm)
    assert pair.hr.shape == (365, 16, 32)
    assert pair.lr.t2m.shape == (365, 4, 8) and list(pair.lr) == ["t2m", "uas"]
    # LR grid: exactly scale x coarser, at the centres of 4 x 4 HR blocks
    np.testing.assert_allclose(pair.lr.lat.values, hr.lat.values.reshape(4, 4).mean(1))
    assert np.isfinite(pair.lr.t2m.values).all()
    # close to the truth's block mean, plus the GCM's warm bias
    diff = pair.lr.t2m.values - block_mean(hr.t2m, 4).values
    assert 0.3 < diff.mean() < 4.0 and np.abs(diff).mean() < 6.0
    assert set(pair.static.data_vars) == {"elevation"} and pair.static.elevation.shape == (16, 32)


def test_mos_common_times_only(data_small_demo):
    hr, gcm = data_small_demo
    pair = make_pair(
        DataConfig(downscaling="mos", lowres="gcm", scale=4, static=()),
        highres=hr.sel(time=slice("2001-03-01", "2001-06-30")),
        lowres=gcm.sel(time=slice("2001-05-01", "2001-12-31")),
    )
    assert str(pair.times[0].date()) == "2001-05-01" and str(pair.times[-1].date()) == "2001-06-30"
    assert pair.lr.time.size == pair.hr.time.size == 61


def test_mos_no_common_times(data_small_demo):
    hr, gcm = data_small_demo
    with pytest.raises(DataError, match=r"no common time steps: .*2001-01-01.*2001-01-31.*2001-06-01"):
        make_pair(
            DataConfig(downscaling="mos", lowres="gcm", scale=4, static=()),
            highres=hr.sel(time=slice("2001-01-01", "2001-01-31")),
            lowres=gcm.sel(time=slice("2001-06-01", "2001-06-30")),
        )


def test_mos_boxes_must_nest(data_small_demo):
    hr, gcm = data_small_demo
    far = gcm.assign_coords(lon=gcm.lon + 20)
    with pytest.raises(DataError, match=r"does not lie inside the low-resolution box .*lat .*lon"):
        make_pair(DataConfig(downscaling="mos", lowres="gcm", scale=4, static=()), highres=hr, lowres=far)


def test_mos_variable_missing_in_lowres(data_small_demo):
    hr, gcm = data_small_demo
    with pytest.raises(DataError, match=r"input variable 'pr' is not in entry 'gcm'; its variables: t2m, uas"):
        make_pair(
            DataConfig(downscaling="mos", lowres="gcm", variable="pr", scale=4, static=()),
            highres=hr,
            lowres=gcm[["t2m", "uas"]],
        )


def test_demo_catalogue_pairs():
    pp = make_pair(DataConfig())
    assert pp.hr.shape == (1095, 64, 128) and pp.lr.t2m.shape == (1095, 16, 32)
    assert set(pp.static.data_vars) == {"elevation", "land_mask"}
    mos = make_pair(DataConfig(downscaling="mos", lowres="demo_alps_gcm", predictors=("uas", "vas")))
    assert mos.lr.t2m.shape == (1095, 16, 32) and mos.lowres == "demo_alps_gcm"
