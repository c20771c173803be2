"""Pairing between any two grids, checked against the analytic field at independently computed
positions; bad grids give clear messages; a short training run on each kind of grid predicts on
the target's own grid with its coordinates."""

import numpy as np
import pytest
import xarray as xr
from pyproj import CRS, Transformer

from engine.config import DataConfig, ExperimentConfig
from engine.data import DataError, make_pair, synthetic
from engine.data.catalog import standardise


def _block_centres_latlon(gm_attrs: dict, y, x, scale: int, metres: float = 1.0):
    """Independent: block-mean native coordinates -> lat/lon through pyproj."""
    by = np.asarray(y, float).reshape(-1, scale).mean(axis=1)
    bx = np.asarray(x, float).reshape(-1, scale).mean(axis=1)
    xx, yy = np.meshgrid(bx * metres, by * metres)
    crs = CRS.from_cf(gm_attrs)
    geo = CRS.from_epsg(4326) if crs.is_geographic else crs.geodetic_crs  # rotated pole: true WGS 84 lat/lon
    lon, lat = Transformer.from_crs(crs, geo, always_xy=True).transform(xx, yy)
    return np.asarray(lat), np.asarray(lon)


def _cfg(**kw) -> DataConfig:
    base = dict(highres="target", variable="tas", scale=4, static=())
    base.update(kw)
    return DataConfig(**base)


def test_mos_regular_0_360_descending_input_onto_a_rotated_target():
    # a GCM-like input: 0.25 degree, latitude north to south, longitudes 0..360
    gcm = synthetic.regular(lat=(38, 54), lon=(0, 24), res=0.25, descending=True, lon_convention="0..360", ntime=4)
    target = synthetic.rotated_pole(ny=32, nx=40, res=0.11, ntime=4)
    pair = make_pair(_cfg(downscaling="mos", lowres="gcm", regrid_method="bilinear"), highres=target, lowres=gcm)
    assert pair.lr.tas.dims == ("time", "y", "x") and pair.lr.tas.shape == (4, 8, 10)
    assert pair.attrs["regrid_method"] == "bilinear" and "crs" in pair.lr.coords
    lat, lon = _block_centres_latlon(target.rotated_pole.attrs, target.rlat, target.rlon, 4)
    np.testing.assert_allclose(pair.lr.lat.values, lat, atol=1e-6)
    np.testing.assert_allclose(pair.lr.lon.values, lon, atol=1e-6)
    expected = synthetic.analytic(lat, lon, np.arange(4)[:, None, None])
    assert float(np.abs(pair.lr.tas.values - expected).max()) < 0.06  # bilinear from 0.25 degree
    # the target itself is untouched and keeps its own grid
    np.testing.assert_array_equal(pair.hr.lat.values, standardise(target).lat.values)


def test_mos_rotated_gcm_onto_an_mlbench_like_lambert_target_with_auto_method():
    gcm = synthetic.rotated_pole(ny=30, nx=36, res=0.44, ntime=3)  # EUR-44-like
    target = synthetic.lambert(ny=32, nx=32, dx_km=12.5, ntime=3, grid_mapping="missing")
    pair = make_pair(_cfg(downscaling="mos", lowres="gcm", scale=8), highres=target, lowres=gcm)
    # the intermediate grid (100 km) is coarser than the 0.44 degree (~49 km) input: an area mean
    assert pair.attrs["regrid_method"] == "average" and pair.lr.tas.shape == (3, 4, 4)
    # independent block centres: the Lambert CRS the factory used, block means of x/y in km
    gm = {"grid_mapping_name": "lambert_conformal_conic", "standard_parallel": [46.0, 46.0],
          "longitude_of_central_meridian": 10.5, "latitude_of_projection_origin": 46.0,
          "false_easting": 2.8e6, "false_northing": 2.2e6, "earth_radius": 6371229.0}
    lat, lon = _block_centres_latlon(gm, target.y, target.x, 8, metres=1000.0)
    np.testing.assert_allclose(pair.lr.lat.values, lat, atol=1e-4)  # without the CRS: mean of unit vectors
    np.testing.assert_allclose(pair.lr.lon.values, lon, atol=1e-4)
    # an area mean of a smooth field over ~100 km blocks: close to the value at the block centre
    expected = synthetic.analytic(lat, lon, np.arange(3)[:, None, None])
    assert float(np.abs(pair.lr.tas.values - expected).max()) < 0.35
    near = make_pair(_cfg(downscaling="mos", lowres="gcm", scale=8, regrid_method="nearest"), highres=target,
                     lowres=gcm)
    assert not np.allclose(near.lr.tas.values, pair.lr.tas.values)


def test_perfectprog_on_a_projected_grid_is_the_native_block_mean():
    target = synthetic.polar_stereographic(ny=16, nx=24, dx_km=2.0, ntime=2, variable="tas")
    pair = make_pair(_cfg(scale=4), highres=target)
    hr = standardise(target).tas.values
    np.testing.assert_allclose(pair.lr.tas.values, hr.reshape(2, 4, 4, 6, 4).mean(axis=(2, 4)), rtol=1e-6)
    lat, lon = _block_centres_latlon(target.polar_stereographic.attrs, target.y, target.x, 4, metres=1000.0)
    np.testing.assert_allclose(pair.lr.lat.values, lat, atol=1e-9)
    assert pair.padding["pad"] == (0, 0)


def test_mos_across_the_date_line_from_a_global_0_360_input():
    gcm = synthetic.regular(global_grid=True, res=0.5, ntime=2)  # 0..360, periodic
    target = synthetic.regular(lat=(-4, 4), lon=(174, 186), res=0.125, lon_convention="-180..180", ntime=2)
    pair = make_pair(_cfg(downscaling="mos", lowres="gcm", regrid_method="bilinear"), highres=target, lowres=gcm)
    lon = pair.lr.lon.values
    assert (np.diff(lon) > 0).all() and lon[0] < 180 < lon[-1]  # continuous over the seam
    lat2, lon2 = np.meshgrid(pair.lr.lat.values, lon, indexing="ij")
    err = np.abs(pair.lr.tas.values - synthetic.analytic(lat2, lon2, np.arange(2)[:, None, None]))
    seam = np.abs(lon2 - 180) < 1.0
    assert err.max() < 0.12
    assert np.sqrt((err[:, seam] ** 2).mean()) <= 1.5 * np.sqrt((err[:, ~seam] ** 2).mean())


def test_grids_that_do_not_overlap_or_only_partly():
    gcm = synthetic.regular(lat=(-10, 10), lon=(100, 120), res=1.0, ntime=2)
    target = synthetic.rotated_pole(ny=16, nx=16, ntime=2)  # the Alps
    with pytest.raises(DataError, match=r"the high-resolution box of 'target' \(rotated grid 16 x 16, lat 4[56].*\) "
                                        r"does not lie inside the low-resolution box of 'gcm' \(latlon grid 20 x 20.*"
                                        r"\(the grids do not overlap at all\)"):
        make_pair(_cfg(downscaling="mos", lowres="gcm"), highres=target, lowres=gcm)
    half = synthetic.regular(lat=(40, 50), lon=(0, 10.5), res=0.5, ntime=2)
    with pytest.raises(DataError, match=r"does not lie inside .*: \d+ of 256 points on its outer edge are outside; "
                                        r"cut the target with data.bbox"):
        make_pair(_cfg(downscaling="mos", lowres="gcm"), highres=target, lowres=half)


def test_scale_larger_than_the_domain_and_a_bbox_on_a_projected_grid():
    target = synthetic.lambert(ny=10, nx=12, ntime=2)
    with pytest.raises(DataError, match=r"data.scale=16 is larger than the grid of entry 'target' \(10 x 12\); "
                                        r"accepted: a scale of at most 10"):
        make_pair(_cfg(scale=16), highres=target)
    pair = make_pair(_cfg(scale=2, bbox=(45.5, 46.5, 10.0, 11.5)), highres=target)
    lat, lon = pair.hr.lat.values, pair.hr.lon.values
    assert pair.hr.dims == ("time", "y", "x") and lat.shape[0] < 10 and lat.shape[1] < 12
    with pytest.raises(DataError, match=r"data.bbox=\(0.0, 1.0, 0.0, 1.0\) contains no grid cell of entry 'target'"):
        make_pair(_cfg(scale=2, bbox=(0.0, 1.0, 0.0, 1.0)), highres=target)


# -- a short training run on each kind of grid ---------------------------------------------------------
def _mlbench_alps(shared, ntime):
    """A dataset on the ML-Bench ALPS grid (Lambert, grid mapping named but absent), analytic values."""
    with xr.open_dataset(shared / "mlbench_template_tasmax_ALPS.nc") as t:
        tmpl = t.load()
    time = synthetic.time_axis(ntime)
    values = synthetic.analytic(tmpl.lat.values, tmpl.lon.values, np.arange(ntime)[:, None, None]).astype("f4")
    da = xr.DataArray(values, dims=("time", "y", "x"), attrs={**tmpl.tasmax.attrs, "units": "K"})
    ds = xr.Dataset({"tas": da}, coords={"time": time, "y": tmpl.y, "x": tmpl.x, "lat": tmpl.lat, "lon": tmpl.lon})
    return ds.isel(y=slice(0, 60), x=slice(20, 86))  # a 60 x 66 piece: 4 does not divide 66


def _mlbench_nz(shared, ntime):
    with xr.open_dataset(shared / "mlbench_template_pr_NZ.nc") as t:
        tmpl = t.load()
    lat2, lon2 = np.meshgrid(tmpl.lat.values, tmpl.lon.values, indexing="ij")
    values = synthetic.analytic(lat2, lon2, np.arange(ntime)[:, None, None]).astype("f4")
    ds = xr.Dataset({"tas": (("time", "lat", "lon"), values, {"units": "K"})},
                    coords={"time": synthetic.time_axis(ntime), "lat": tmpl.lat, "lon": tmpl.lon})
    return ds.isel(lat=slice(0, 48), lon=slice(64, 128))


KINDS = {
    "rotated": lambda shared, n: synthetic.rotated_pole(ny=30, nx=34, ntime=n),
    "polar_stereographic": lambda shared, n: synthetic.polar_stereographic(ny=32, nx=32, ntime=n, variable="tas",
                                                                            grid_mapping="attribute"),
    "dateline_0_360": lambda shared, n: synthetic.regular(lat=(-8, 8), lon=(172, 190), res=0.5, ntime=n,
                                                          lon_convention="0..360", descending=True),
    "mlbench_alps": _mlbench_alps,
    "mlbench_nz": _mlbench_nz,
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(KINDS))
def test_training_predicts_on_the_target_grid(kind, tmp_path, monkeypatch, request):
    from engine.inference import write_predictions
    from engine.runs import RunStore
    from engine.training.trainer import train

    shared = request.getfixturevalue("data_shared_dir") if kind.startswith("mlbench") else None
    raw = KINDS[kind](shared, 80)
    nc = synthetic.write(raw, tmp_path / f"{kind}.nc")
    cat = tmp_path / "catalog.yaml"
    cat.write_text(f"""
sources:
  target:
    driver: netcdf
    args: {{urlpath: "{nc}", xarray_kwargs: {{engine: netcdf4}}}}
    metadata: {{role: highres, variables: {{tas: {{units: K}}}}}}
""")
    monkeypatch.setenv("FINESCALE_DATA_ROOTS", str(tmp_path))
    cfg = ExperimentConfig(name=f"grid-{kind}").replace(
        data={"highres": "target", "variable": "tas", "catalog": str(cat), "scale": 4, "patch_size": 16,
              "train_period": ("2000-01-01", "2000-02-29"), "val_period": ("2000-03-01", "2000-03-10"),
              "test_period": ("2000-03-11", "2000-03-20")},
        model={"filters": 8, "blocks": 1},
        training={"epochs": 1, "samples_per_epoch": 16, "batch_size": 8, "precision": "32-true"},
        launch={"launcher": "inline"})
    run = RunStore(tmp_path / "runs").create(cfg)
    summary = train(run)
    assert np.isfinite(summary["val_loss"])
    write_predictions(run)
    expected = standardise(xr.open_dataset(nc), kind)
    with xr.open_dataset(run.predictions_path) as out:
        dims = ("time", "lat", "lon") if "lat" in expected.tas.dims else ("time", "y", "x")
        assert out.model.dims == dims and out.model.shape[1:] == expected.tas.shape[1:]  # the full original grid
        for c in ("lat", "lon"):
            np.testing.assert_allclose(out[c].values, expected[c].values, rtol=0, atol=1e-9)
        if "crs" in expected.coords:
            assert out.model.attrs["grid_mapping"] == "crs"
            assert out.crs.attrs["grid_mapping_name"] == expected.crs.attrs["grid_mapping_name"]
        np.testing.assert_allclose(out.truth.values, expected.tas.sel(time=out.time).values, atol=1e-4)
        assert np.isfinite(out.model.values).all()
        if kind == "dateline_0_360":  # the seam (180E) is no worse than elsewhere
            assert (np.diff(out.lon.values) > 0).all()
            seam = np.abs(out.lon.values - 180.0) < 1.5
            for name in ("bilinear", "model"):
                err = (out[name] - out.truth).values
                at, off = np.sqrt((err[..., seam] ** 2).mean()), np.sqrt((err[..., ~seam] ** 2).mean())
                assert at <= 1.5 * off + 0.02, (name, at, off)


def test_mos_360_day_rotated_input_chunked_in_space_stays_lazy():
    gcm = synthetic.rotated_pole(ny=24, nx=30, res=0.22, ntime=6, calendar="360_day", start="2000-02-28")
    target = synthetic.lambert(ny=16, nx=16, dx_km=12.5, ntime=6, calendar="360_day", start="2000-02-28")
    gcm = gcm.chunk({"time": 2, "rlat": 8, "rlon": 10})  # a store chunked in space as well
    pair = make_pair(_cfg(downscaling="mos", lowres="gcm", regrid_method="bilinear"), highres=target, lowres=gcm)
    assert pair.lr.tas.chunks is not None  # nothing computed yet
    assert str(pair.lr.time.values[2])[:10] == "2000-02-30"  # a 360-day date
    lat, lon = pair.lr.lat.values, pair.lr.lon.values
    expected = synthetic.analytic(lat, lon, np.arange(6)[:, None, None])
    assert float(np.abs(pair.lr.tas.values - expected).max()) < 0.1
