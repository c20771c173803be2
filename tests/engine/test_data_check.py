"""Checks before anything runs: every data problem at once, with its message, and no run folder;
packed int16 decoded; truncated files refused by name."""

import os

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml

from engine import launch
from engine.cli import main
from engine.config import ExperimentConfig
from engine.data import DataError
from engine.data import synthetic
from engine.data.catalog import open_dataset
from engine.data.check import DataCheckError, check_config
from engine.data.integrity import check_file, netcdf3_required_size
from engine.runs import RunStore

T = 40


def _ds(var="t2m", units="K", H=8, W=8, lat0=45.0, lon0=7.0, res=0.125, times=None, nan=False, calendar=None):
    lat = lat0 + res * (np.arange(H) + 0.5)
    lon = lon0 + res * (np.arange(W) + 0.5)
    if times is None:
        times = xr.date_range("2001-01-01", periods=T, freq="D", calendar=calendar or "standard",
                              use_cftime=calendar not in (None, "standard"))
    vals = 280 + np.random.default_rng(0).normal(size=(len(times), H, W)).astype(np.float32)
    if nan:
        vals[:] = np.nan
    attrs = {"units": units} if units else {}
    return xr.Dataset({var: (("time", "lat", "lon"), vals, attrs)}, coords={"time": times, "lat": lat, "lon": lon})


def _lr(**kw):
    return _ds(**{"H": 5, "W": 5, "lat0": 44.75, "lon0": 6.75, "res": 0.5, **kw})


@pytest.fixture
def cat(tmp_path, monkeypatch):
    monkeypatch.setenv("FINESCALE_DATA_ROOTS", str(tmp_path))
    entries = {
        "hr": (_ds(), "highres"),
        "lr": (_lr(), "lowres"),
        "lr_far": (_lr(lat0=10.0), "lowres"),
        "lr_late": (_lr(times=pd.date_range("2005-01-01", periods=T)), "lowres"),
        "lr_m": (_lr(units="m"), "lowres"),
        "lr_360": (_lr(calendar="360_day"), "lowres"),
        "hr_nan": (_ds(nan=True), "highres"),
        "hr_dup": (_ds(times=pd.DatetimeIndex(list(pd.date_range("2001-01-01", periods=T - 1)) + [pd.Timestamp("2001-02-08")])), "highres"),
        "hr_nounits": (_ds(units=None), "highres"),
        "hr_trunc": (_ds(), "highres"),
    }
    sources = {}
    for name, (ds, role) in entries.items():
        path = tmp_path / f"{name}.nc"
        ds.to_netcdf(path, format="NETCDF3_64BIT" if name == "hr_trunc" else "NETCDF4")
        sources[name] = {"driver": "netcdf", "args": {"urlpath": str(path), "xarray_kwargs": {"engine": "netcdf4"}},
                         "metadata": {"role": role}}
    with open(tmp_path / "hr_trunc.nc", "r+b") as fh:  # an interrupted copy
        fh.truncate(os.path.getsize(tmp_path / "hr_trunc.nc") // 2)
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump({"sources": sources}))
    return str(path)


def _cfg(cat, **data):
    base = dict(highres="hr", variable="t2m", downscaling="mos", lowres="lr", scale=4, static=(), catalog=cat,
                patch_size=8, train_period=["2001-01-01", "2001-01-20"], val_period=["2001-01-21", "2001-01-30"],
                test_period=["2001-01-31", "2001-02-09"])
    return ExperimentConfig(name="check").replace(data={**base, **data}, launch={"launcher": "inline"},
                                                  model={"filters": 4, "blocks": 1})


BAD = {
    "unknown entry": (dict(lowres="gcm"), r"data.lowres='gcm' is not a catalogue entry; accepted: hr, hr_dup"),
    "unknown variable": (dict(variable="tas"), r"target variable 'tas' is not in entry 'hr'; its variables: t2m"),
    "unknown predictor": (dict(predictors=["psl"]), r"predictor variable 'psl' is not in entry 'lr'; its variables: t2m"),
    "grids apart": (dict(lowres="lr_far"), r"does not lie inside .*low-resolution box of 'lr_far'"),
    "no common times": (dict(lowres="lr_late"), r"have no common time steps: .*2001-01-01.*2005-01-01"),
    "units": (dict(lowres="lr_m"), r"units 'm' \(\[length\]\) cannot be converted to 'K'"),
    "calendars": (dict(lowres="lr_360"), r"'proleptic_gregorian' calendar and entry 'lr_360' the '360_day' calendar"),
    "patch": (dict(patch_size=16), r"data.patch_size=16 is larger than the target domain 8 x 8 of 'hr'; accepted: "
                                   r"multiples of data.scale=4 up to 8"),
    "all NaN": (dict(highres="hr_nan"), r"target 't2m' of entry 'hr_nan' is all NaN"),
    "empty period": (dict(test_period=["2002-01-01", "2002-12-31"]),
                     r"data.test_period=\['2002-01-01', '2002-12-31'\] contains no time step of the paired data, which "
                     r"cover 2001-01-01"),
    "duplicated times": (dict(highres="hr_dup"), r"entry 'hr_dup' has 1 duplicated time stamp\(s\), the first 2001-02-08"),
    "missing units": (dict(highres="hr_nounits"), r"target 't2m' of entry 'hr_nounits' has no units attribute"),
    "truncated file": (dict(highres="hr_trunc"), r"could not open entry 'hr_trunc' from .*hr_trunc.nc: the file is truncated: \d+ bytes on disk"),
}


def test_good_configuration_has_no_problems(cat):
    assert check_config(_cfg(cat)) == []


@pytest.mark.parametrize("case", list(BAD))
def test_each_bad_case_named_and_no_run_folder(case, cat, tmp_path):
    changes, pattern = BAD[case]
    cfg = _cfg(cat, **changes)
    problems = check_config(cfg)
    assert any(__import__("re").search(pattern, p) for p in problems), problems
    store = RunStore(tmp_path / "runs")
    with pytest.raises(DataCheckError) as info:
        launch.submit(cfg, store)
    assert __import__("re").search(pattern, str(info.value))
    assert store.list() == [] and not any((tmp_path / "runs").glob("*/config.yaml"))


def test_every_problem_at_once_and_cli(cat, tmp_path, capsys):
    cfg = _cfg(cat, lowres="lr_late", predictors=["psl"], patch_size=16, levels={"ta": [850]},
               val_period=["2001-02-29", "2001-03-01"])
    problems = check_config(cfg)
    assert len(problems) >= 4, problems
    text = "\n".join(problems)
    for part in ("data.levels names 'ta', which is not a predictor", "predictor variable 'psl'",
                 "have no common time steps", "data.patch_size=16 is larger"):
        assert part in text
    path = tmp_path / "bad.yaml"
    cfg.to_yaml(path)
    assert main(["check", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{path}: {len(problems)} problem(s)" in out and out.count("\n  - ") == len(problems)
    good = tmp_path / "good.yaml"
    _cfg(cat).to_yaml(good)
    assert main(["check", str(good)]) == 0
    assert "ok (mos t2m from hr <- lr, x4)" in capsys.readouterr().out


def test_packed_int16_is_decoded(tmp_path):
    ds = synthetic.regular(lat=(44.0, 48.0), lon=(6.0, 10.0), res=0.5, ntime=3, packed=True)
    path = synthetic.write(ds, tmp_path / "packed.nc")
    raw = xr.open_dataset(path, mask_and_scale=False)
    assert raw.tas.dtype == np.int16 and "scale_factor" in raw.tas.attrs and "_FillValue" in raw.tas.attrs
    with xr.open_dataset(path) as back:
        assert back.tas.dtype.kind == "f"
        step = float(raw.tas.attrs["scale_factor"])
        np.testing.assert_allclose(back.tas.values, ds.tas.values, atol=step)
        assert 250 < float(back.tas.mean()) < 300  # kelvin, not packed integers
    raw.close()


@pytest.mark.parametrize("fmt", ["NETCDF3_CLASSIC", "NETCDF3_64BIT", "NETCDF3_64BIT_DATA", "NETCDF4"])
def test_truncated_file_refused(fmt, tmp_path):
    path = tmp_path / f"x_{fmt}.nc"
    _ds().to_netcdf(path, format=fmt, engine="netcdf4", unlimited_dims=["time"] if fmt != "NETCDF4" else None)
    check_file(path)  # whole: fine
    if fmt != "NETCDF4":
        assert netcdf3_required_size(path) == os.path.getsize(path)
    size = os.path.getsize(path)
    with open(path, "r+b") as fh:
        fh.truncate(size - 100)
    with pytest.raises(DataError, match=rf"{path.name} is truncated: {size - 100} bytes on disk"):
        check_file(path)


def test_catalogue_opening_refuses_truncated_file(cat):
    with pytest.raises(DataError, match=r"entry 'hr_trunc' from .*hr_trunc.nc: the file is truncated.*fetch the file again"):
        open_dataset("hr_trunc", cat)


def test_cli_train_refuses_bad_data_before_a_run_folder(cat, tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    _cfg(cat, lowres="lr_m", patch_size=16).to_yaml(path)
    assert main(["--runs", str(tmp_path / "runs"), "train", str(path)]) == 2
    err = capsys.readouterr().err
    assert "2 problem(s)" in err and "units 'm'" in err and "data.patch_size=16" in err
    assert not any((tmp_path / "runs").glob("*/config.yaml"))


def test_real_files_pass_and_a_cut_copy_is_refused(data_shared_dir, tmp_path):
    for name in ("era5_t2m_uk_2019-03.nc", "mlbench_template_tasmax_ALPS.nc", "knmi_rad_nl25_5min_20100826_stack.nc"):
        check_file(data_shared_dir / name)  # whole files as published: accepted
    cut = tmp_path / "era5_cut.nc"
    cut.write_bytes((data_shared_dir / "era5_t2m_uk_2019-03.nc").read_bytes()[:600_000])
    with pytest.raises(DataError, match=r"era5_cut.nc is truncated: 600000 bytes on disk, its HDF5/NetCDF-4 header "
                                        r"needs at least 1825564 bytes"):
        check_file(cut)
