"""Input channels: level dimensions -> named channels, variable_map, predictors from their own
entries on their own grids, an input without the target."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml

from engine.config import DataConfig, ExperimentConfig, ConfigError
from engine.data import DataError, make_pair
from engine.data.normalise import create
from engine.data.predictors import resolve
from engine.data.torch_dataset import DownscalingDataset

LEVELS = (850.0, 700.0, 500.0)


def _linear(t, lat, lon, a=280.0):
    # linear in lat/lon: bilinear interpolation reproduces it exactly, so regridded values are checkable
    return a + 0.5 * lat - 0.25 * lon + 0.1 * t


def _grid(H, W, lat0, lon0, res):
    return lat0 + res * (np.arange(H) + 0.5), lon0 + res * (np.arange(W) + 0.5)


def _ds(var="t2m", units="K", H=8, W=8, lat0=45.0, lon0=7.0, res=0.125, T=6, start="2001-01-01", levels=None,
        level_units="hPa", fn=_linear):
    lat, lon = _grid(H, W, lat0, lon0, res)
    t = np.arange(T)[:, None, None]
    base = fn(t, lat[None, :, None], lon[None, None, :]) * np.ones((T, H, W))
    coords = {"time": pd.date_range(start, periods=T), "lat": lat, "lon": lon}
    if levels is None:
        return xr.Dataset({var: (("time", "lat", "lon"), base.astype(np.float32), {"units": units})}, coords=coords)
    factor = 100.0 if level_units == "Pa" else 1.0
    vals = np.stack([base - 0.01 * (1000 - p) for p in levels], axis=1).astype(np.float32)
    coords["plev"] = ("plev", np.asarray(levels) * factor, {"units": level_units, "standard_name": "air_pressure", "axis": "Z"})
    return xr.Dataset({var: (("time", "plev", "lat", "lon"), vals, {"units": units})}, coords=coords)


def _lr(**kw):
    return _ds(**{"H": 5, "W": 5, "lat0": 44.75, "lon0": 6.75, "res": 0.5, **kw})


MOS = dict(downscaling="mos", lowres="gcm", scale=4, static=())


def test_level_dimension_becomes_named_channels():
    lr = xr.merge([_lr(), _lr(var="ta", levels=LEVELS)])
    pair = make_pair(DataConfig(**MOS, predictors=("ta",), levels={"ta": [850, 500]}), highres=_ds(), lowres=lr)
    assert pair.lr_channels == ["t2m", "ta850", "ta500"]
    assert pair.lr.ta850.attrs["level"] == 850.0
    # ta850 = t2m - 1.5, ta500 = t2m - 5 by construction; regridding keeps linear fields exact
    np.testing.assert_allclose(pair.lr.ta850.values, pair.lr.t2m.values - 1.5, atol=1e-3)
    np.testing.assert_allclose(pair.lr.ta500.values, pair.lr.t2m.values - 5.0, atol=1e-3)
    # all levels when none are selected; one level by name; Pa levels matched in hPa
    assert make_pair(DataConfig(**MOS, predictors=("ta",)), highres=_ds(), lowres=lr).lr_channels == \
        ["t2m", "ta850", "ta700", "ta500"]
    lr_pa = xr.merge([_lr(), _lr(var="ta", levels=LEVELS, level_units="Pa")])
    assert make_pair(DataConfig(**MOS, predictors=("ta700",)), highres=_ds(), lowres=lr_pa).lr_channels == ["t2m", "ta700"]


def test_unknown_level_and_predictor_named():
    lr = xr.merge([_lr(), _lr(var="ta", levels=LEVELS)])
    with pytest.raises(DataError, match=r"level 300 of 'ta' \(data.levels\) is not in entry 'gcm'; its levels of 'ta': 850, 700, 500"):
        make_pair(DataConfig(**MOS, predictors=("ta",), levels={"ta": [850, 300]}), highres=_ds(), lowres=lr)
    with pytest.raises(DataError, match=r"predictor 'ta925': level 925 is not in variable 'ta' of entry 'gcm'"):
        make_pair(DataConfig(**MOS, predictors=("ta925",)), highres=_ds(), lowres=lr)
    with pytest.raises(DataError, match=r"predictor variable 'zg500' is not in entry 'gcm'; its variables: t2m, ta, ta850, ta700, ta500"):
        make_pair(DataConfig(**MOS, predictors=("zg500",)), highres=_ds(), lowres=lr)


def test_variable_map_pairs_differently_named_variables():
    hr = _ds(var="tg", units="degC", fn=lambda t, la, lo: _linear(t, la, lo) - 273.15)
    lr = _lr(var="tas", units="K")
    with pytest.raises(DataError, match=r"input variable 'tg' is not in entry 'gcm'; its variables: tas.*variable_map"):
        make_pair(DataConfig(**MOS, variable="tg"), highres=hr, lowres=lr)
    pair = make_pair(DataConfig(**MOS, variable="tg", variable_map={"tg": "tas"}), highres=hr, lowres=lr)
    assert pair.lr_channels == ["tg"] and pair.lr.tg.attrs["units"] == "degC"
    # the E-OBS-like target (degC) and the reanalysis-like input (K) agree after conversion
    assert abs(float(pair.lr.tg.mean()) - float(pair.hr.mean())) < 0.5


def _catalog(tmp_path, entries):
    sources = {}
    for name, (ds, meta) in entries.items():
        path = tmp_path / f"{name}.nc"
        ds.to_netcdf(path)
        sources[name] = {"driver": "netcdf", "args": {"urlpath": str(path), "xarray_kwargs": {"engine": "netcdf4"}},
                         "metadata": meta}
    cat = tmp_path / "catalog.yaml"
    cat.write_text(yaml.safe_dump({"sources": sources}))
    return str(cat)


@pytest.fixture
def catalog(tmp_path):
    # NCEP-like predictors on their own 2.5-degree grid, sea-level pressure in Pa under another name
    ncep = xr.merge([
        _ds(var="slp", units="Pa", H=4, W=4, lat0=40.0, lon0=2.5, res=2.5, T=8,
            fn=lambda t, la, lo: 100000.0 + 100 * la + 0 * lo + t),
        _ds(var="hus", units="kg kg-1", H=4, W=4, lat0=40.0, lon0=2.5, res=2.5, T=8, levels=(850.0, 500.0),
            fn=lambda t, la, lo: 0.001 * la + 0 * lo + 0 * t),
    ])
    return _catalog(tmp_path, {
        "obs": (_ds(var="tg", units="degC", fn=lambda t, la, lo: _linear(t, la, lo) - 273.15), {"role": "highres"}),
        "rea": (_lr(var="tas"), {"role": "lowres"}),
        "ncep": (ncep, {"role": "predictor"}),
        "short": (_ds(var="slp", units="Pa", H=4, W=4, lat0=40.0, lon0=2.5, res=2.5, T=3), {"role": "predictor"}),
        "far": (_ds(var="slp", units="Pa", H=4, W=4, lat0=0.0, lon0=100.0, res=2.5, T=8), {"role": "predictor"}),
    })


def _cfg(catalog, **kw):
    base = dict(highres="obs", variable="tg", downscaling="mos", lowres="rea", scale=4, static=(), catalog=catalog,
                variable_map={"tg": "tas", "psl": "slp"}, predictor_entries=("ncep",), predictors=("psl", "hus850"),
                units={"psl": "hPa"})
    return DataConfig(**{**base, **kw})


def test_predictors_from_their_own_entry_and_grid(catalog):
    pair = make_pair(_cfg(catalog))
    assert pair.lr_channels == ["tg", "psl", "hus850"]
    assert pair.lr.psl.attrs["units"] == "hPa"
    la = pair.lr.lat.values[None, :, None]
    t = np.arange(6)[:, None, None]
    # slp = 1e5 Pa + 100 Pa per degree of latitude + 1 Pa per day, regridded bilinearly onto the
    # input's 0.5-degree LR grid and converted to hPa
    np.testing.assert_allclose(pair.lr.psl.values, (100000.0 + 100 * la + t) / 100 * np.ones((6, 2, 2)), rtol=1e-6)
    # levels are offset by -0.01 per hPa below 1000 hPa (-1.5 at 850)
    np.testing.assert_allclose(pair.lr.hus850.values, (0.001 * la - 1.5) * np.ones((6, 2, 2)), atol=1e-5)


def test_check_config_searches_predictor_entries(catalog):
    from engine.data.check import check_config

    ok = dict(patch_size=8, train_period=("2001-01-01", "2001-01-04"), val_period=("2001-01-05", "2001-01-05"),
              test_period=("2001-01-06", "2001-01-06"))
    assert check_config(_cfg(catalog, **ok)) == []
    problems = check_config(_cfg(catalog, predictors=("psl", "zz", "hus300"), **ok))
    assert len(problems) == 2, problems
    assert "predictor variable 'zz' is not in entry 'rea' nor 'ncep'" in problems[0]
    assert "predictor 'hus300': level 300 is not in variable 'hus' of entry 'ncep'; its levels: 850, 500" in problems[1]


def test_predictor_entry_errors(catalog):
    with pytest.raises(DataError, match=r"3 paired step\(s\) are missing, the first 2001-01-04.*Accepted: a predictor entry covering"):
        make_pair(_cfg(catalog, predictor_entries=("short",), predictors=("psl",)))
    with pytest.raises(DataError, match=r"predictor 'psl' .*does not lie inside .*entry 'far'.*do not overlap"):
        make_pair(_cfg(catalog, predictor_entries=("far",), predictors=("psl",)))
    with pytest.raises(DataError, match=r"data.predictor_entries names 'obs', whose role is 'highres'; accepted: entries of role 'predictor'"):
        make_pair(_cfg(catalog, predictor_entries=("obs",), predictors=("psl",)))


def test_input_without_the_target(catalog, tmp_path, monkeypatch):
    monkeypatch.setenv("FINESCALE_DATA_ROOTS", str(tmp_path))  # the test catalogue is a site's own data
    cfg = _cfg(catalog, target_as_input=False)
    pair = make_pair(cfg)
    assert pair.lr_channels == ["psl", "hus850"]
    norm = create("global").fit(pair, ("2001-01-01", "2001-01-06"))
    ds = DownscalingDataset(pair, norm, ("2001-01-01", "2001-01-06"), patch_size=None)
    assert ds.input_channels == ["psl", "hus850"] and tuple(ds[0]["x"].shape) == (2, 2, 2)
    # the configuration says what target_as_input=False cannot be combined with
    exp = ExperimentConfig().replace(data={**vars(cfg), "target_as_input": False})
    with pytest.raises(ConfigError, match=r"target_as_input=False cannot be combined with model.residual=True"):
        exp.validate()
    exp.replace(model={"residual": False}).validate()


def test_resolve_order_input_entry_first():
    cfg = DataConfig(predictors=("slp",), predictor_entries=("b",))
    a, b = _lr(var="slp"), _lr(var="slp")
    assert [(c.name, c.entry) for c in resolve(cfg, {"a": a, "b": b}, ["a", "b"])] == [("slp", "a")]


@pytest.mark.slow
def test_emulation_with_level_predictors_trains_and_predicts(tmp_path, monkeypatch, tiny_config):
    from engine.data import synthetic
    from engine.inference import write_predictions
    from engine.runs import RunStore
    from engine.training.trainer import train

    monkeypatch.setenv("FINESCALE_DATA_ROOTS", str(tmp_path))
    hr = synthetic.regular(lat=(44.0, 46.0), lon=(6.0, 8.0), res=0.125, ntime=60, start="2000-01-01")
    lr = synthetic.regular(lat=(43.0, 47.0), lon=(5.0, 9.0), res=0.5, ntime=60, start="2000-01-01")
    ta = synthetic.regular(lat=(40.0, 50.0), lon=(0.0, 15.0), res=2.5, ntime=60, start="2000-01-01", variable="ta",
                           levels=(850, 700, 500))
    cat = _catalog(tmp_path, {"rcm": (hr, {"role": "highres"}), "gcm": (lr, {"role": "lowres"}),
                              "ncep": (ta, {"role": "predictor"})})
    cfg = tiny_config.replace(
        data={"highres": "rcm", "lowres": "gcm", "downscaling": "mos", "variable": "tas", "catalog": cat, "static": [],
              "patch_size": 8, "predictors": ["ta"], "levels": {"ta": [850, 500]}, "predictor_entries": ["ncep"],
              "target_as_input": False, "train_period": ["2000-01-01", "2000-02-05"],
              "val_period": ["2000-02-06", "2000-02-15"], "test_period": ["2000-02-16", "2000-02-23"]},
        model={"residual": False}, training={"epochs": 1, "samples_per_epoch": 16})
    run = RunStore(tmp_path / "runs").create(cfg.validate())
    train(run)
    assert run.status()["input_channels"] == ["ta850", "ta500"]
    ds = write_predictions(run)
    assert ds.model.sizes["time"] == 8 and bool(np.isfinite(ds.model.values).all())


def test_bundled_predictor_entry():
    from engine.data.catalog import entry_metadata
    from engine.data.check import check_config
    from engine.data.demo import LEVELS

    assert entry_metadata("demo_alps_levels")["role"] == "predictor"
    cfg = DataConfig(downscaling="mos", lowres="demo_alps_gcm", predictors=("ta",), levels={"ta": [850, 500]},
                     predictor_entries=("demo_alps_levels",))
    assert check_config(cfg) == []
    pair = make_pair(cfg)
    assert pair.lr_channels == ["t2m", "ta850", "ta500"] and pair.lr.ta850.shape == pair.lr.t2m.shape
    # plev is stored in Pa; 850 hPa lies 1457 m up: 6.5 K/km colder than the 2 m field on average
    diff = float(pair.lr.t2m.mean() - pair.lr.ta850.mean())
    assert diff == pytest.approx(6.5e-3 * LEVELS[850], abs=0.5)
