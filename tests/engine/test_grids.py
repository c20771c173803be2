"""Grids: every kind of grid is recognised from its CF metadata, and the position of every cell
matches an independent pyproj computation (or the file's own 2-D lat/lon); static fields come
from the true positions; regridding between grids lands on the right cells."""

import logging

import numpy as np
import pytest
import xarray as xr
from pyproj import CRS, Transformer

from engine.data import DataError, grid, synthetic
from engine.data.catalog import standardise
from engine.data.regrid import regrid_to, weights
from engine.data.static import static_on


def _to_latlon(proj: str, x, y):
    """An independent PROJ computation: native (x, y) -> (lat, lon) on the CRS's own ellipsoid."""
    crs = CRS(proj)
    tr = Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True)
    lon, lat = tr.transform(x, y)
    return np.asarray(lat), np.asarray(lon)


# -- recognising grids ------------------------------------------------------------------------
def test_rotated_pole_positions_from_the_grid_mapping_alone():
    raw = synthetic.rotated_pole(ny=12, nx=14, ntime=2, latlon=False)  # only rlat/rlon + grid mapping
    ds = standardise(raw, "rotated")
    g = grid.describe(ds)
    assert g.kind == "rotated" and grid.spatial_dims(ds) == ("y", "x") and ds.tas.dims == ("time", "y", "x")
    assert ds.tas.attrs["grid_mapping"] == "crs" and "rotated_latitude_longitude" in str(ds.crs.attrs)
    # independent: rotate the sphere by hand so that the rotated north pole lands on EUR-11's pole
    # (39.25N, 162W) and the rotated origin on (90 - 39.25, -162 + 180): R = Rz(lon_p) Ry(90 - lat_p) Rz(180)
    xx, yy = np.meshgrid(np.deg2rad(raw.rlon.values), np.deg2rad(raw.rlat.values))
    v = np.stack([np.cos(yy) * np.cos(xx), np.cos(yy) * np.sin(xx), np.sin(yy)], axis=-1)

    def rz(a):
        return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])

    b = np.deg2rad(90 - 39.25)
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    w = v @ (rz(np.deg2rad(-162.0)) @ ry @ rz(np.pi)).T
    lat, lon = np.rad2deg(np.arcsin(w[..., 2])), np.rad2deg(np.arctan2(w[..., 1], w[..., 0]))
    np.testing.assert_allclose(ds.lat.values, lat, atol=1e-6)
    np.testing.assert_allclose(ds.lon.values, lon, atol=1e-6)
    assert 45 < lat.mean() < 48 and 9 < lon.mean() < 12  # the Alps, not 0N 0E
    # the field is the analytic function of those true positions
    np.testing.assert_allclose(ds.tas.values[0], synthetic.analytic(lat, lon, 0.0), atol=1e-3)


def test_lambert_positions_in_km_from_the_grid_mapping():
    raw = synthetic.lambert(ny=10, nx=12, ntime=1).drop_vars(["lat", "lon"])
    ds = standardise(raw, "lambert")
    g = grid.describe(ds)
    assert g.kind == "projected" and g.metres_per_unit == 1000.0 and ds.x.attrs["units"] == "km"
    proj = "+proj=lcc +lat_1=46 +lat_2=46 +lat_0=46 +lon_0=10.5 +x_0=2800000 +y_0=2200000 +R=6371229 +units=m"
    xx, yy = np.meshgrid(raw.x.values * 1000, raw.y.values * 1000)
    lat, lon = _to_latlon(proj, xx, yy)
    np.testing.assert_allclose(ds.lat.values, lat, atol=1e-7)
    np.testing.assert_allclose(ds.lon.values, lon, atol=1e-7)
    # back again: fractional indices of the cell centres are whole numbers
    fi, fj = grid.fractional_index(g, lat, lon)
    np.testing.assert_allclose(fi, np.arange(10)[:, None] * np.ones((1, 12)), atol=1e-6)
    np.testing.assert_allclose(fj, np.ones((10, 1)) * np.arange(12)[None, :], atol=1e-6)


def test_missing_grid_mapping_uses_the_2d_latlon_and_says_so_once(caplog):
    raw = synthetic.lambert(ny=8, nx=9, ntime=1, grid_mapping="missing")
    grid._said.clear()
    with caplog.at_level(logging.INFO, logger="engine.data.grid"):
        a = standardise(raw, "mlbench-like")
        standardise(raw, "mlbench-like")
    assert caplog.text.count("grid mapping 'Lambert_Conformal' is named but absent") == 1
    assert grid.describe(a).kind == "curvilinear" and "crs" not in a.coords
    np.testing.assert_array_equal(a.lat.values, raw.lat.values)
    # without a grid mapping and without lat/lon nothing locates the cells: a clear error
    with pytest.raises(DataError, match=r"names grid mapping 'Lambert_Conformal', which the file does not contain "
                                        r"and no 2-D latitude/longitude; accepted: a CF grid-mapping variable"):
        standardise(raw.drop_vars(["lat", "lon"]), "bare")


def test_a_grid_mapping_that_contradicts_the_files_latlon_is_not_used(caplog):
    raw = synthetic.lambert(ny=8, nx=9, ntime=1)
    raw["Lambert_Conformal"].attrs["false_easting"] = 0.0  # 2800 km off: a real quirk of RCM files
    grid._said.clear()
    with caplog.at_level(logging.INFO, logger="engine.data.grid"):
        ds = standardise(raw, "wrong-mapping")
    assert "more than half a cell away from the file's 2-D lat/lon" in caplog.text
    assert grid.describe(ds).kind == "curvilinear" and "crs" not in ds.coords
    np.testing.assert_array_equal(ds.lat.values, raw.lat.values)
    assert grid.describe(standardise(synthetic.lambert(ny=8, nx=9, ntime=1))).kind == "projected"  # a right one is kept


def test_polar_stereographic_from_a_proj_string_attribute():
    raw = synthetic.polar_stereographic(ny=6, nx=7, ntime=1, grid_mapping="attribute").drop_vars(["lat", "lon"])
    ds = standardise(raw, "radar-like")
    assert grid.describe(ds).kind == "projected"
    xx, yy = np.meshgrid(raw.x.values * 1000, raw.y.values * 1000)
    lat, lon = _to_latlon("+proj=stere +lat_0=90 +lon_0=0 +lat_ts=60 +a=6378137 +b=6356752", xx, yy)
    np.testing.assert_allclose(ds.lat.values, lat, atol=1e-7)
    np.testing.assert_allclose(ds.lon.values, lon, atol=1e-7)


@pytest.mark.parametrize("convention", ["0..360", "-180..180"])
def test_dateline_box_is_continuous_in_either_convention(convention):
    raw = synthetic.regular(lat=(-5, 5), lon=(170, 190), res=0.5, lon_convention=convention, descending=True, ntime=2)
    ds = standardise(raw)
    lon = ds.lon.values
    assert lon[0] == pytest.approx(170.25) and lon[-1] == pytest.approx(189.75) and (np.diff(lon) > 0).all()
    assert (np.diff(ds.lat.values) > 0).all()  # descending latitude flipped
    lat2, lon2 = grid.latlon(ds)
    np.testing.assert_allclose(ds.tas.values[1], synthetic.analytic(lat2, lon2, 1.0), atol=1e-3)
    assert not grid.describe(ds).periodic


def test_greenwich_box_in_0_360_and_a_global_grid():
    ds = standardise(synthetic.regular(lat=(40, 50), lon=(-10, 10), res=1.0, lon_convention="0..360", ntime=1))
    np.testing.assert_allclose(ds.lon.values, np.arange(-9.5, 10, 1.0))
    glob = standardise(synthetic.regular(global_grid=True, res=2.0, ntime=1))
    g = grid.describe(glob)
    assert g.periodic and glob.lon.values[0] == pytest.approx(-179.0) and glob.lon.values[-1] == pytest.approx(179.0)


def test_latitude_longitude_names_and_curvilinear_dims_without_attributes():
    raw = synthetic.regular(names=("latitude", "longitude"), ntime=1)
    for v in ("latitude", "longitude"):
        raw[v].attrs = {}  # no CF attributes at all: cf-xarray's guess by name
    assert standardise(raw).tas.dims == ("time", "lat", "lon")
    lat2, lon2 = np.meshgrid(np.linspace(40, 45, 5), np.linspace(5, 12, 6), indexing="ij")
    curv = xr.Dataset({"v": (("time", "nj", "ni"), np.zeros((1, 5, 6)))},
                      coords={"nav_lat": (("nj", "ni"), lat2), "nav_lon": (("nj", "ni"), lon2)})
    out = standardise(curv)
    assert out.v.dims == ("time", "y", "x") and grid.describe(out).kind == "curvilinear"
    np.testing.assert_array_equal(out.lat.values, lat2)


def test_regular_grid_on_other_dim_names():
    raw = synthetic.regular(ntime=2).rename(lat="j", lon="i")
    raw = raw.assign_coords(lat=("j", raw.j.values, {"standard_name": "latitude", "units": "degrees_north"}),
                            lon=("i", raw.i.values, {"standard_name": "longitude", "units": "degrees_east"}))
    for d in ("j", "i"):
        raw[d].attrs = {}
    ds = standardise(raw)
    assert ds.tas.dims == ("time", "lat", "lon") and grid.describe(ds).kind == "latlon"


def test_packed_int16_noleap_file_round_trip(tmp_path):
    raw = synthetic.rotated_pole(ny=6, nx=8, ntime=5, calendar="noleap", packed=True, units="degC")
    path = synthetic.write(raw, tmp_path / "packed.nc")
    with xr.open_dataset(path, mask_and_scale=False) as on_disk:
        assert on_disk.tas.dtype == np.int16 and "scale_factor" in on_disk.tas.attrs
    ds = standardise(xr.open_dataset(path, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True)))
    assert ds.time.values[0].calendar == "noleap"
    expected = synthetic.analytic(ds.lat.values, ds.lon.values, np.arange(5)[:, None, None]) - 273.15
    np.testing.assert_allclose(ds.tas.values, expected, atol=2e-3)


# -- real files ------------------------------------------------------------------------------
def test_mlbench_alps_template(data_shared_dir, caplog):
    grid._said.clear()
    with caplog.at_level(logging.INFO, logger="engine.data.grid"):
        ds = standardise(xr.open_dataset(data_shared_dir / "mlbench_template_tasmax_ALPS.nc"), "ALPS")
    assert "'Lambert_Conformal' is named but absent" in caplog.text
    g = grid.describe(ds)
    assert g.kind == "curvilinear" and g.shape == (128, 128) and ds.tasmax.dims == ("time", "y", "x")
    with xr.open_dataset(data_shared_dir / "mlbench_template_tasmax_ALPS.nc") as raw:
        np.testing.assert_array_equal(ds.lat.values, raw.lat.values)
        np.testing.assert_array_equal(ds.x.values, raw.x.values)
    # the 2-D lat/lon locate any point: cell centres come back as whole indices, between cells too
    rng = np.random.default_rng(0)
    fi, fj = rng.uniform(0, 127, 200), rng.uniform(0, 127, 200)
    lat, lon = grid.at_index(g, fi, fj)
    gi, gj = grid.fractional_index(g, lat, lon)
    np.testing.assert_allclose(gi, fi, atol=1e-3)
    np.testing.assert_allclose(gj, fj, atol=1e-3)
    st = static_on(ds, ["elevation"])
    assert st.elevation.dims == ("y", "x") and float(st.elevation.max()) > 2500  # the Alps


def test_mlbench_nz_template(data_shared_dir):
    ds = standardise(xr.open_dataset(data_shared_dir / "mlbench_template_pr_NZ.nc"), "NZ")
    g = grid.describe(ds)
    assert g.kind == "latlon" and g.shape == (128, 128) and ds.pr.dims == ("time", "lat", "lon")
    assert 165.9 < float(ds.lon.min()) and float(ds.lon.max()) < 180 and (np.diff(ds.lat.values) > 0).all()


def knmi_radar(data_shared_dir, times=slice(0, 1)) -> xr.Dataset:
    """The KNMI radar stack with the native coordinates pySTEPS' importer gives it (x1=0, x2=700,
    y1=-4415.04, y2=-3650.04 km, row 0 at the top); the file keeps only indices and the PROJ string."""
    raw = xr.open_dataset(data_shared_dir / "knmi_rad_nl25_5min_20100826_stack.nc").isel(time=times)
    y2 = -3650.038179210632
    return raw.assign_coords(
        x=("x", 0.5 + np.arange(raw.sizes["x"]), {"standard_name": "projection_x_coordinate", "units": "km"}),
        y=("y", y2 - 0.5 - np.arange(raw.sizes["y"]), {"standard_name": "projection_y_coordinate", "units": "km"}),
    )


def test_knmi_radar_on_its_polar_stereographic_grid(data_shared_dir):
    raw = knmi_radar(data_shared_dir)
    ds = standardise(raw, "knmi")
    g = grid.describe(ds)
    assert g.kind == "projected" and g.metres_per_unit == 1000.0
    assert (np.diff(ds.y.values) > 0).all()  # flipped to ascending y
    # independent: the file's own PROJ string (an ellipsoid in km, so x/y in km go in directly)
    xx, yy = np.meshgrid(ds.x.values, ds.y.values)
    lat, lon = _to_latlon(raw.attrs["projection"], xx, yy)
    np.testing.assert_allclose(ds.lat.values, lat, atol=1e-6)
    np.testing.assert_allclose(ds.lon.values, lon, atol=1e-6)
    # the radar's valid disk is centred on the Netherlands
    valid = np.isfinite(ds.precip_5min.values[0])
    assert 51.3 < lat[valid].mean() < 53.5 and 3.5 < lon[valid].mean() < 7.0
    box = grid.footprint(g)
    assert 48 < box[0] < 50 and 55 < box[1] < 57


# -- regridding ---------------------------------------------------------------------------------
def test_regrid_regular_to_rotated_and_lambert_hits_the_right_cells():
    src = standardise(synthetic.regular(lat=(40, 52), lon=(2, 20), res=0.25, ntime=2))
    for target in (synthetic.rotated_pole(ny=20, nx=24, ntime=1), synthetic.lambert(ny=20, nx=24, ntime=1)):
        dst = grid.describe(standardise(target))
        out = regrid_to(src, dst, "bilinear")
        expected = synthetic.analytic(dst.lat, dst.lon, np.arange(2)[:, None, None])
        assert out.tas.dims == ("time", "y", "x") and "crs" in out.coords
        assert float(np.abs(out.tas.values - expected).max()) < 0.06  # bilinear error of a 0.25 degree field
        near = regrid_to(src, dst, "nearest")
        assert float(np.abs(near.tas.values - expected).max()) < 0.4


def test_regrid_across_the_global_seam_and_weights_are_cached(tmp_path, monkeypatch):
    from engine.data import regrid

    monkeypatch.setenv("FINESCALE_DATA", str(tmp_path))
    regrid._WEIGHTS.clear()
    src = standardise(synthetic.regular(global_grid=True, res=0.5, ntime=1))
    dst = grid.describe(standardise(synthetic.regular(lat=(-4, 4), lon=(176, 184), res=0.25, ntime=1)))
    out = regrid_to(src, dst, "bilinear")
    expected = synthetic.analytic(dst.lat, dst.lon, 0.0)
    err = np.abs(out.tas.values[0] - expected)
    seam = np.abs(dst.lon - 180.0) < 1.0
    rmse = lambda e: float(np.sqrt((e**2).mean()))  # noqa: E731
    assert err.max() < 0.12 and rmse(err[seam]) <= 1.5 * rmse(err[~seam])  # the seam is no worse
    assert len(list((tmp_path / "regrid").glob("*.npz"))) == 1
    regrid._WEIGHTS.clear()  # as in a new process: the weights come from the disk cache, not computed

    def no_computing(*args, **kwargs):
        raise AssertionError("weights were recomputed")

    monkeypatch.setattr(grid, "fractional_index", no_computing)
    g = grid.describe(src)
    w = weights(g, dst, "bilinear")
    assert w.shape == (dst.lat.size, g.lat.size)


def test_conservative_needs_latlon_grids_and_average_is_the_block_mean():
    src = standardise(synthetic.lambert(ny=16, nx=16, ntime=1))
    dst = grid.describe(standardise(synthetic.regular(lat=(45.5, 46.5), lon=(10.5, 11.5), res=0.5, ntime=1)))
    with pytest.raises(DataError, match=r"'conservative' needs regular lat/lon source and target grids, got "
                                        r"projected -> latlon; accepted for this pair: auto, average"):
        regrid_to(src, dst, "conservative")
    fine = standardise(synthetic.regular(lat=(45, 47), lon=(10, 12), res=0.125, ntime=1))
    coarse = grid.describe(standardise(synthetic.regular(lat=(45, 47), lon=(10, 12), res=0.5, ntime=1)))
    avg = regrid_to(fine, coarse, "average").tas.values[0]
    block = fine.tas.values[0].reshape(4, 4, 4, 4).mean(axis=(1, 3))
    np.testing.assert_allclose(avg, block, rtol=1e-6)
    # conservative keeps the area mean exactly (area of a cell ~ difference of the sines of its edges)
    big = standardise(synthetic.regular(lat=(0, 60), lon=(0, 30), res=0.5, ntime=1))
    cells = grid.describe(standardise(synthetic.regular(lat=(0, 60), lon=(0, 30), res=3.0, ntime=1)))
    out = regrid_to(big, cells, "conservative").tas.values[0]

    def area_mean(values, lat, res):
        band = np.sin(np.deg2rad(lat + res / 2)) - np.sin(np.deg2rad(lat - res / 2))
        return float((values * band[:, None]).sum() / (band.sum() * values.shape[1]))

    assert area_mean(out, cells.y, 3.0) == pytest.approx(area_mean(big.tas.values[0], big.lat.values, 0.5), abs=1e-4)


def test_static_fields_at_true_positions_of_a_rotated_alpine_domain():
    ds = standardise(synthetic.rotated_pole(ny=24, nx=30, res=0.11, ntime=1))
    st = static_on(ds)
    assert st.elevation.dims == ("y", "x") and "crs" in st.coords
    # Alpine elevation and almost all land (rlat/rlon read as lat/lon would give sea near 0N 0E)
    assert float(st.elevation.max()) > 2500 and float(st.land_mask.mean()) > 0.9
    # on a regular grid given as 2-D coordinates the per-cell path agrees with the 1-D one
    reg = standardise(synthetic.regular(lat=(45, 47), lon=(7, 10), res=0.25, ntime=1))
    lat2, lon2 = grid.latlon(reg)
    curv = xr.Dataset(coords={"y": np.arange(8.0), "x": np.arange(12.0), "lat": (("y", "x"), lat2),
                              "lon": (("y", "x"), lon2)})
    np.testing.assert_allclose(static_on(curv).elevation.values, static_on(reg).elevation.values, atol=30)


def test_fit_to_scale_pads_with_coordinates_that_continue_the_grid():
    ds = standardise(synthetic.lambert(ny=10, nx=13, ntime=1))
    padded, info = grid.pad_to_multiple(ds, 4)
    assert info == {"dims": ("y", "x"), "shape": (10, 13), "pad": (2, 3)} and padded.tas.shape == (1, 12, 16)
    assert np.isnan(padded.tas.values[0, 10:]).all() and np.isnan(padded.tas.values[0, :, 13:]).all()
    # the padded cells sit where the grid's axes continue, located through its CRS
    g = grid.describe(padded)
    np.testing.assert_allclose(np.diff(g.x), 12.5)
    lat, lon = grid.describe(ds).to_latlon(*np.meshgrid(g.y, g.x, indexing="ij"))
    np.testing.assert_allclose(padded.lat.values, lat, atol=1e-9)
    back = grid.unpad(padded, info)
    xr.testing.assert_identical(back.tas, ds.tas)
    with pytest.raises(DataError, match=r"data.scale=16 is larger than the target grid \(10 x 13\)"):
        grid.pad_to_multiple(ds, 16)


def test_knmi_radar_perfectprog_pairs_on_the_native_grid(data_shared_dir):
    from engine.config import DataConfig
    from engine.data import make_pair

    raw = knmi_radar(data_shared_dir, times=slice(40, 44)).isel(y=slice(350, 414), x=slice(300, 362))  # 64 x 62
    pair = make_pair(DataConfig(highres="knmi", variable="precip_5min", scale=4, static=("land_mask",)), highres=raw)
    assert pair.hr.dims == ("time", "y", "x") and pair.padding["pad"] == (0, 2)  # 62 columns -> 64
    hr = standardise(raw, "knmi").precip_5min.values
    block = np.nanmean(np.pad(hr, ((0, 0), (0, 0), (0, 2)), constant_values=np.nan).reshape(4, 16, 4, 16, 4),
                       axis=(2, 4))
    np.testing.assert_allclose(pair.lr.precip_5min.values, block, rtol=1e-5, equal_nan=True)
    land = pair.static.land_mask.values[:, :62]
    assert land.shape == (64, 62) and 0.3 < land.mean() <= 1.0  # the Netherlands: mostly land at 52N 5E


# -- the libraries behind the weights (engine.data.regrid_libs) ---------------------------------
def _analytic_src():
    return standardise(synthetic.regular(lat=(40, 52), lon=(2, 20), res=0.25, ntime=2))


@pytest.mark.parametrize("case", ["regional", "global_to_dateline", "global_to_global"])
def test_conservative_is_xarray_regrids_scheme(case):
    # the cached sparse weights give what xarray-regrid's own conservative call gives, NaN included
    import xarray_regrid  # noqa: F401  (registers the .regrid accessor)

    s, d = {
        "regional": (dict(lat=(40, 52), lon=(2, 20), res=0.25), dict(lat=(41, 50), lon=(4, 18), res=1.0)),
        "global_to_dateline": (dict(global_grid=True, res=2.0), dict(lat=(-10, 10), lon=(170, 190), res=2.5)),
        "global_to_global": (dict(global_grid=True, res=1.0), dict(global_grid=True, res=3.0)),
    }[case]
    src = standardise(synthetic.regular(ntime=2, **s))
    dst_ds = standardise(synthetic.regular(ntime=1, **d))
    src["tas"] = src.tas.where(~((src.lat > 44) & (src.lat < 46) & (src.lon > 5) & (src.lon < 9)))
    ours = regrid_to(src, grid.describe(dst_ds), "conservative").tas.transpose("time", "lat", "lon").values
    lib = src.tas.regrid.conservative(xr.Dataset(coords={"lat": dst_ds.lat, "lon": dst_ds.lon}),
                                      latitude_coord="lat").transpose("time", "lat", "lon").values
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(lib))
    np.testing.assert_allclose(ours, lib, atol=2e-4)  # float32 fields of ~300 K
    if case == "regional":
        assert np.isnan(ours).any()  # target cells wholly in the NaN patch stay NaN


def test_bilinear_is_pyresamples_onto_areas_and_own_weights_agree_with_it():
    import warnings

    from pyresample.bilinear import NumpyBilinearResampler

    from engine.data import regrid_libs
    from engine.data.regrid import own_weights

    src = _analytic_src()
    g = grid.describe(src)
    v = src.tas.values[0].astype(np.float64)
    for target, tol in ((synthetic.lambert(ny=20, nx=24, ntime=1), 0.05),
                        (synthetic.regular(lat=(44, 48), lon=(8, 12), res=0.1, ntime=1), 1e-9)):
        dst = grid.describe(standardise(target))
        w = weights(g, dst, "bilinear")
        ours = (w @ v.ravel()).reshape(dst.shape)
        res = NumpyBilinearResampler(regrid_libs._swath(g), regrid_libs.area_definition(dst),
                                     3 * regrid_libs.max_step_m(g), neighbours=32, reduce_data=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            direct = np.ma.filled(res.resample(v, fill_value=None), np.nan)[::-1]  # area rows run top down
        np.testing.assert_allclose(ours, direct, atol=1e-9)
        # the module's own weights (used where pyresample cannot go) agree on pairs both do: exactly
        # between lat/lon grids, within the difference of interpolating in the source's or the
        # target's projection otherwise (field range ~10 K on a 0.25 degree grid)
        own = (own_weights(g, dst, "bilinear") @ v.ravel()).reshape(dst.shape)
        assert float(np.abs(own - ours).max()) < tol
        assert float(np.abs(ours - synthetic.analytic(dst.lat, dst.lon, 0.0)).max()) < 0.06
    # rotated and curvilinear targets are no AreaDefinition: the module's own weights
    for target in (synthetic.rotated_pole(ny=20, nx=24, ntime=1),
                   synthetic.lambert(ny=20, nx=24, ntime=1, grid_mapping="missing")):
        dst = grid.describe(standardise(target))
        assert regrid_libs.bilinear_weights(g, dst) is None
        assert abs(weights(g, dst, "bilinear") - own_weights(g, dst, "bilinear")).max() == 0


def test_nearest_is_pyresamples_kd_tree_on_any_grid():
    from pyresample.kd_tree import resample_nearest

    from engine.data import regrid_libs

    src = _analytic_src()
    g = grid.describe(src)
    v = src.tas.values[0].astype(np.float64)
    for target in (synthetic.rotated_pole(ny=20, nx=24, ntime=1),
                   synthetic.lambert(ny=20, nx=24, ntime=1, grid_mapping="missing"),
                   synthetic.regular(lat=(50, 56), lon=(15, 25), res=0.5, ntime=1)):  # partly outside
        dst = grid.describe(standardise(target))
        out = regrid_to(src, dst, "nearest").tas.values[0]
        radius = 0.5 * np.sqrt(2.0) * regrid_libs.max_step_m(g) * 1.01
        direct = resample_nearest(regrid_libs._swath(g), v, regrid_libs._swath(dst), radius, fill_value=None,
                                  reduce_data=False)
        np.testing.assert_array_equal(out, np.ma.filled(direct, np.nan).astype(np.float32))
    assert np.isnan(out).any() and np.isfinite(out).any()  # beyond the source: NaN


def test_a_field_regridded_onto_a_km_grid_is_described_where_it_is():
    # the regridded input of MOS is described again (predictor entries are regridded onto it):
    # its x/y must stay in km, not be read as metres thousands of km away
    dst = grid.describe(standardise(synthetic.lambert(ny=12, nx=16, ntime=1)))
    out = regrid_to(_analytic_src(), dst, "bilinear")
    again = grid.describe(out)
    assert again.kind == "projected" and again.metres_per_unit == 1000.0 and out.x.attrs["units"] == "km"
    np.testing.assert_allclose(again.lat, dst.lat, atol=1e-9)
    np.testing.assert_allclose(again.lon, dst.lon, atol=1e-9)


def test_library_weights_are_applied_lazily_per_block():
    import dask

    src = standardise(synthetic.regular(lat=(40, 52), lon=(2, 20), res=0.25, ntime=6)).chunk({"time": 2})
    dst = grid.describe(standardise(synthetic.lambert(ny=12, nx=16, ntime=1)))
    for method in ("bilinear", "nearest"):  # pyresample's weights onto a Lambert target
        lazy = regrid_to(src, dst, method)
        assert isinstance(lazy.tas.data, dask.array.Array), type(lazy.tas.data)
        assert lazy.tas.data.numblocks[0] == 3, lazy.tas.data.numblocks
        np.testing.assert_array_equal(lazy.tas.values, regrid_to(src.compute(), dst, method).tas.values)
