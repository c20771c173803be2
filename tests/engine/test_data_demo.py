"""The demo generator: deterministic, physically plausible, CF-compliant files."""

import numpy as np
import xarray as xr

from engine.data.demo import make_demo, write_netcdf
from engine.data.static import static_fields


def test_deterministic_for_a_seed():
    a, ga = make_demo(n_lat=8, n_lon=16, start="2001-01-01", end="2001-01-31", seed=5)
    b, gb = make_demo(n_lat=8, n_lon=16, start="2001-01-01", end="2001-01-31", seed=5)
    c, _ = make_demo(n_lat=8, n_lon=16, start="2001-01-01", end="2001-01-31", seed=6)
    xr.testing.assert_identical(a, b)
    xr.testing.assert_identical(ga, gb)
    assert not np.allclose(a.t2m.values, c.t2m.values)


def test_shapes_and_attributes(data_small_demo):
    hr, gcm = data_small_demo
    assert hr.t2m.dims == ("time", "lat", "lon") and hr.t2m.shape == (365, 16, 32)
    assert hr.t2m.attrs["units"] == "K" and hr.t2m.attrs["standard_name"] == "air_temperature"
    assert hr.pr.attrs["units"] == "mm/day"
    assert hr.attrs["Conventions"] == "CF-1.8"
    np.testing.assert_allclose(np.diff(hr.lat.values), 1 / 12)
    # the GCM side is coarser by a non-integer ratio and covers the HR box
    ratio = float(np.diff(gcm.lat.values).mean() / np.diff(hr.lat.values).mean())
    assert abs(ratio - 3.6) < 1e-6
    assert gcm.lat.min() < hr.lat.min() and gcm.lat.max() > hr.lat.max()
    assert gcm.lon.min() < hr.lon.min() and gcm.lon.max() > hr.lon.max()
    assert {"t2m", "pr", "uas", "vas"} <= set(gcm.data_vars)


def test_physically_plausible(data_small_demo):
    hr, gcm = data_small_demo
    st = static_fields(hr.lat.values, hr.lon.values)
    t_mean = hr.t2m.mean("time").values
    land = st.land_mask.values > 0.5
    r = np.corrcoef(st.elevation.values[land], t_mean[land])[0, 1]
    assert r < -0.8, f"temperature should fall with elevation, correlation {r:.2f}"
    # seasonal cycle: July warmer than January by several kelvin
    monthly = hr.t2m.groupby("time.month").mean(...)
    assert float(monthly.sel(month=7) - monthly.sel(month=1)) > 8
    assert 230 < float(hr.t2m.min()) and float(hr.t2m.max()) < 320
    # precipitation: non-negative, dry days, wet days, plausible mean
    pr = hr.pr.values
    assert (pr >= 0).all()
    dry = (pr == 0).mean()
    assert 0.2 < dry < 0.8, dry
    assert 1.0 < pr.mean() < 8.0
    # persistence: day-to-day anomalies correlate (AR(1) weather)
    anom = hr.t2m - hr.t2m.rolling(time=31, center=True, min_periods=1).mean()
    a = anom.values[:, 8, 16]
    assert np.corrcoef(a[1:], a[:-1])[0, 1] > 0.3
    # GCM: a warm bias
    assert float(gcm.t2m.mean()) - float(hr.t2m.mean()) > 0.5


def test_write_compressed_cf(tmp_path, data_small_demo):
    hr, _ = data_small_demo
    path = write_netcdf(hr.isel(time=slice(0, 10)), tmp_path / "demo.nc")
    back = xr.open_dataset(path, engine="netcdf4")
    assert back.t2m.encoding.get("zlib") and back.t2m.dtype == np.float32
    assert back.time.attrs["standard_name"] == "time"
    np.testing.assert_allclose(back.t2m.values, hr.t2m.values[:10])
    back.close()
