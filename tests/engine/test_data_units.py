"""Units: conversions worked out by hand, MOS input in the target's units, refusals with clear messages."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml

from engine.config import DataConfig
from engine.data import DataError, make_pair
from engine.data.units import WATER_DENSITY, conversion, convert


def _ds(values_fn, var="t2m", units="K", H=8, W=8, lat0=45.0, lon0=7.0, res=0.125, T=6, extra=None):
    lat = lat0 + res * (np.arange(H) + 0.5)
    lon = lon0 + res * (np.arange(W) + 0.5)
    vals = values_fn(np.arange(T)[:, None, None], lat[None, :, None], lon[None, None, :]).astype(np.float32)
    attrs = {} if units is None else {"units": units}
    ds = xr.Dataset({var: (("time", "lat", "lon"), vals, attrs)},
                    coords={"time": pd.date_range("2001-01-01", periods=T), "lat": lat, "lon": lon})
    for name, (fn, u) in (extra or {}).items():
        ds[name] = (("time", "lat", "lon"), fn(np.arange(T)[:, None, None], lat[None, :, None], lon[None, None, :])
                    * np.ones((T, H, W), np.float32), {"units": u} if u else {})
    return ds


def _field(t, lat, lon):  # smooth, in K
    return 280.0 + 2.0 * np.sin(lat) + 1.5 * np.cos(lon) + 0.5 * t


MOS = DataConfig(downscaling="mos", lowres="gcm", scale=4, static=())


def _hr():
    return _ds(_field)


def _lr(fn=_field, units="K", var="t2m", extra=None):
    return _ds(fn, var=var, units=units, H=5, W=5, lat0=44.75, lon0=6.75, res=0.5, extra=extra)


def test_conversions_by_hand():
    assert conversion("degC", "K") == (1.0, 273.15, "")
    assert conversion("K", "degC") == (1.0, -273.15, "")
    assert conversion("Pa", "hPa")[:2] == pytest.approx((0.01, 0.0))
    f, o, note = conversion("kg m-2 s-1", "mm day-1")
    assert (f, o) == pytest.approx((86400.0, 0.0)) and "density of liquid water" in note
    assert conversion("mm/day", "kg m-2 s-1")[0] == pytest.approx(1 / 86400.0)
    assert conversion("kg m-2", "mm")[0] == pytest.approx(1000.0 / WATER_DENSITY)
    da = xr.DataArray(np.array([0.0, 20.0], np.float32), dims="x", attrs={"units": "degC"}, name="t")
    k = convert(da, "K", "t")
    assert k.dtype == np.float32 and k.attrs["units"] == "K" and k.attrs["units_converted_from"] == "degC"
    np.testing.assert_allclose(k.values, [273.15, 293.15], rtol=1e-6)
    # a packed source's encoding is not applied to converted values
    da.encoding.update(dtype="int16", scale_factor=0.01, add_offset=0.0, source="x.nc")
    assert convert(da, "K", "t").encoding == {"source": "x.nc"}


def test_degc_input_against_k_target_is_converted():
    celsius = _lr(lambda t, la, lo: _field(t, la, lo) - 273.15, units="degC")
    pair = make_pair(MOS, highres=_hr(), lowres=celsius)
    kelvin = make_pair(MOS, highres=_hr(), lowres=_lr())
    assert pair.lr.t2m.attrs["units"] == "K"
    np.testing.assert_allclose(pair.lr.t2m.values, kelvin.lr.t2m.values, atol=1e-3)
    # the input is now within a few K of the target, not 273 K away
    assert abs(float(pair.lr.t2m.mean()) - float(pair.hr.mean())) < 2.0


def test_precipitation_flux_against_depth_rate():
    hr = _ds(lambda t, la, lo: 2.0 + np.sin(la) + 0 * lo + 0.1 * t, var="pr", units="mm/day")
    flux = _lr(lambda t, la, lo: (2.0 + np.sin(la) + 0 * lo + 0.1 * t) / 86400.0, units="kg m-2 s-1", var="pr")
    pair = make_pair(DataConfig(downscaling="mos", lowres="gcm", variable="pr", scale=4, static=()), highres=hr, lowres=flux)
    assert pair.lr.pr.attrs["units"] == "mm/day"
    assert "density of liquid water (1000 kg m-3)" in pair.lr.pr.attrs["units_conversion"]
    assert 1.0 < float(pair.lr.pr.mean()) < 4.0  # mm/day, not 1e-5


def test_predictor_pa_to_declared_hpa_and_target_to_declared_units():
    lr = _lr(extra={"psl": (lambda t, la, lo: 101000.0 + 10 * t + 0 * la, "Pa")})
    cfg = DataConfig(downscaling="mos", lowres="gcm", scale=4, static=(), predictors=("psl",),
                     units={"psl": "hPa", "t2m": "degC"})
    pair = make_pair(cfg, highres=_hr(), lowres=lr)
    assert pair.lr.psl.attrs["units"] == "hPa"
    np.testing.assert_allclose(pair.lr.psl.isel(time=0).values, 1010.0, rtol=1e-6)
    # the target goes to degC, and the input's target channel follows it
    assert pair.hr.attrs["units"] == "degC" and pair.lr.t2m.attrs["units"] == "degC"
    assert abs(float(pair.hr.mean()) - float(pair.lr.t2m.mean())) < 2.0 and float(pair.hr.mean()) < 20


def test_incompatible_units_refused():
    with pytest.raises(DataError, match=r"input variable 't2m' of entry 'gcm': units 'm' \(\[length\]\) cannot be "
                                        r"converted to 'K' \(\[temperature\]\); accepted: units of \[temperature\]"):
        make_pair(MOS, highres=_hr(), lowres=_lr(units="m"))
    with pytest.raises(DataError, match=r"units 'degrees_bogus' cannot be read"):
        make_pair(MOS, highres=_hr(), lowres=_lr(units="degrees_bogus"))


def test_missing_units_refused_in_mos():
    with pytest.raises(DataError, match=r"input variable 't2m' of entry 'gcm' has no units attribute and its "
                                        r"catalogue entry declares none.*variables: \{t2m: \{units: \.\.\.\}\}"):
        make_pair(MOS, highres=_hr(), lowres=_lr(units=None))


def _catalog(tmp_path, entries):
    sources = {}
    for name, (ds, meta) in entries.items():
        path = tmp_path / f"{name}.nc"
        ds.to_netcdf(path)
        sources[name] = {"driver": "netcdf", "args": {"urlpath": str(path), "xarray_kwargs": {"engine": "netcdf4"}}, "metadata": meta}
    cat = tmp_path / "catalog.yaml"
    cat.write_text(yaml.safe_dump({"sources": sources}))
    return str(cat)


def test_missing_units_in_catalogue_entry_refused_unless_declared(tmp_path):
    cat = _catalog(tmp_path, {"bare": (_ds(_field, units=None), {"role": "highres"}),
                              "declared": (_ds(_field, units=None),
                                           {"role": "highres", "variables": {"t2m": {"units": "K"}}})})
    with pytest.raises(DataError, match=r"target 't2m' of entry 'bare' has no units attribute"):
        make_pair(DataConfig(highres="bare", scale=2, static=(), catalog=cat))
    pair = make_pair(DataConfig(highres="declared", scale=2, static=(), catalog=cat, units={"t2m": "degC"}))
    assert pair.hr.attrs["units"] == "degC"
    np.testing.assert_allclose(float(pair.hr.isel(time=0, lat=0, lon=0)),
                               _field(0, 45.0625, 7.0625) - 273.15, atol=1e-3)


@pytest.mark.slow
def test_mos_with_variable_map_and_units_trains_in_the_targets_units(tmp_path, monkeypatch, tiny_config):
    """E-OBS-like tg [degC] from reanalysis-like tas [K]: no renamed copy, no 273 K offset."""
    from engine.data import synthetic
    from engine.inference import write_predictions
    from engine.runs import RunStore
    from engine.training.trainer import train

    monkeypatch.setenv("FINESCALE_DATA_ROOTS", str(tmp_path))
    obs = synthetic.regular(lat=(44.0, 46.0), lon=(6.0, 8.0), res=0.125, ntime=60, start="2000-01-01",
                            units="degC").rename({"tas": "tg"})
    rea = synthetic.regular(lat=(43.0, 47.0), lon=(5.0, 9.0), res=0.5, ntime=60, start="2000-01-01", units="K")
    cat = _catalog(tmp_path, {"obs": (obs, {"role": "highres"}), "rea": (rea, {"role": "lowres"})})
    cfg = tiny_config.replace(
        data={"highres": "obs", "lowres": "rea", "downscaling": "mos", "variable": "tg", "variable_map": {"tg": "tas"},
              "catalog": cat, "static": [], "patch_size": 8, "train_period": ["2000-01-01", "2000-02-05"],
              "val_period": ["2000-02-06", "2000-02-15"], "test_period": ["2000-02-16", "2000-02-23"]},
        training={"epochs": 2, "samples_per_epoch": 32})
    run = RunStore(tmp_path / "runs").create(cfg.validate())
    train(run)
    ds = write_predictions(run)
    assert ds.model.attrs["units"] == "degC" and ds.truth.attrs["units"] == "degC"
    truth, model, bilinear = (float(ds[v].mean()) for v in ("truth", "model", "bilinear"))
    assert -60 < truth < 40 and abs(bilinear - truth) < 1.0  # the input was converted from K
    rmse = float(np.sqrt(((ds.model - ds.truth) ** 2).mean()))
    assert rmse < 5.0, rmse  # not 273
