"""Bad data: generated in the test (arrays, NetCDF files behind a catalogue), each landing in its
category when paired."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from engine.config import DataConfig
from engine.data.catalog import open_dataset
from engine.data.pairing import make_pair
from tests.badinput.conftest import Case, land, params


def grid_ds(values, lat0=45.0, lon0=7.0, res=0.25, times=None, var="t2m", dims=("time", "lat", "lon")):
    values = np.asarray(values, dtype=np.float32)
    T, H, W = values.shape
    times = pd.date_range("2001-01-01", periods=T, freq="D") if times is None else times
    return xr.Dataset({var: (dims, values, {"units": "K"})},
                      coords={dims[0]: times, dims[1]: lat0 + res * (np.arange(H) + 0.5),
                              dims[2]: lon0 + res * (np.arange(W) + 0.5)})


def smooth(T=6, H=8, W=8, seed=0):
    rng = np.random.default_rng(seed)
    return 280 + rng.normal(size=(T, H, W)).cumsum(axis=1).astype(np.float32)


def mos_pair(lr_values, policy="refuse"):
    hr = grid_ds(smooth())  # 45-47 N, 7-9 E at 0.25
    lr = grid_ds(lr_values, lat0=44.5, lon0=6.5, res=0.5)  # 44.5-47.5 N, 6.5-9.5 E at 0.5
    cfg = DataConfig(downscaling="mos", lowres="gcm", scale=2, static=(), missing_input=policy)
    return lambda env: make_pair(cfg, highres=hr, lowres=lr)


HALF_NAN = smooth(6, 6, 6, seed=1)
HALF_NAN[:, :, :3] = np.nan  # the western half of the input missing, where the target has data


def pp(values, **kw):
    return lambda env: make_pair(DataConfig(scale=2, static=()), highres=grid_ds(values, **kw))


def through_catalogue(write):
    """A NetCDF file made by ``write(path)`` behind a one-entry catalogue in the data root; opened."""
    def run(env):
        nc = env.data / "f.nc"
        write(nc)
        cat = env.data / "cat.yaml"
        cat.write_text(f'sources:\n  mine:\n    driver: netcdf\n    args: {{urlpath: "{nc}"}}\n    metadata: {{role: highres}}\n')
        return open_dataset("mine", catalog=cat).load()
    return run


def _truncated(path):
    grid_ds(smooth(30)).to_netcdf(path, engine="netcdf4")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _random(path):
    path.write_bytes(np.random.default_rng(0).bytes(4096))


def _empty(path):
    path.write_bytes(b"")


def _masked_hr(policy):
    def check(pair):
        # the target is missing exactly in the blocks whose input is missing, and kept elsewhere
        lr_bad = np.isnan(pair.lr.t2m.values).repeat(2, axis=1).repeat(2, axis=2)
        hr = pair.hr.values
        return lr_bad.any() and (~lr_bad).any() and np.isnan(hr[lr_bad]).all() and np.isfinite(hr[~lr_bad]).all()
    return check


def mos_units(units):
    """A MOS pair whose input is in ``units`` (None: no units attribute), the same field as the
    target's input in K."""
    def run(env):
        hr = grid_ds(smooth())
        values = smooth(6, 6, 6, seed=1) - (273.15 if units == "degC" else 0.0)
        lr = grid_ds(values, lat0=44.5, lon0=6.5, res=0.5)
        if units is None:
            del lr.t2m.attrs["units"]
        else:
            lr.t2m.attrs["units"] = units
        return make_pair(DataConfig(downscaling="mos", lowres="gcm", scale=2, static=()), highres=hr, lowres=lr)
    return run


def _same_as_kelvin(pair):
    kelvin = mos_units("K")(None)
    return pair.lr.t2m.attrs["units"] == "K" and np.allclose(pair.lr.t2m.values, kelvin.lr.t2m.values, atol=1e-3)


T_DUP = pd.DatetimeIndex(["2001-01-01", "2001-01-02", "2001-01-02", "2001-01-03"])
T_BACK = pd.DatetimeIndex(["2001-01-01", "2001-01-03", "2001-01-02", "2001-01-04"])
ALL_NAN = np.full((3, 4, 4), np.nan, np.float32)

CASES = [
    Case("lr-half-nan-refused", "message", mos_pair(HALF_NAN), ("input 'gcm'", "missing values (NaN)", "target",
                                                                 "data.missing_input", "'mask'")),
    Case("lr-half-nan-masked", "result", mos_pair(HALF_NAN, "mask"), check=_masked_hr("mask")),
    Case("lr-complete", "result", mos_pair(smooth(6, 6, 6, seed=1)), check=lambda p: np.isfinite(p.hr.values).all()),
    Case("target-all-nan", "message", pp(ALL_NAN), ("'t2m'", "all NaN")),
    Case("times-duplicated", "message", pp(smooth(4, 4, 4), times=T_DUP), ("duplicated time stamp", "2001-01-02",
                                                                            "strictly increasing")),
    Case("times-unsorted", "message", pp(smooth(4, 4, 4), times=T_BACK), ("not in increasing order", "2001-01-03")),
    Case("variable-missing", "message", pp(smooth(4, 4, 4), var="tas"), ("t2m", "tas")),
    Case("dims-unknown", "message", pp(smooth(4, 4, 4), dims=("time", "foo", "bar")), ("foo", "bar")),
    Case("scale-not-dividing-pads", "result", lambda env: make_pair(DataConfig(scale=3, static=()), highres=grid_ds(smooth(2, 7, 8))),
         check=lambda p: p.lr.t2m.shape[1:] == (3, 3)),
    Case("units-celsius-input", "result", mos_units("degC"), check=_same_as_kelvin),
    Case("units-missing", "message", mos_units(None), ("'t2m'", "'gcm'", "no units attribute", "accepted:")),
    Case("units-length-for-temperature", "message", mos_units("furlongs"), ("'furlongs'", "cannot be converted to 'K'",
                                                                          "accepted: units of [temperature]")),
    Case("netcdf-truncated", "message", through_catalogue(_truncated), ("f.nc", "truncated")),
    Case("netcdf-random-bytes", "message", through_catalogue(_random), ("entry 'mine'", "f.nc")),
    Case("netcdf-empty", "message", through_catalogue(_empty), ("entry 'mine'", "f.nc")),
]


@pytest.mark.parametrize("case", params(CASES))
def test_data(case, env):
    land(case, env)
