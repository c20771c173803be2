"""Maps of data on any grid: a rotated-pole run (dims y, x in rotated degrees, 2-D latitude and
longitude, the CRS kept, as engine.data.grid describes it) is drawn in its own rotated CRS with the
value, its units and the cell's latitude/longitude on hover, and coastlines from the land mask."""

from __future__ import annotations

import holoviews as hv
import numpy as np
import pandas as pd
import pytest

from app.state import AppState
from app.views import ResultsView

#: EURO-CORDEX's rotated pole.
POLE = {"grid_mapping_name": "rotated_latitude_longitude", "grid_north_pole_latitude": 39.25,
        "grid_north_pole_longitude": -162.0}


def write_rotated_predictions(run, nt=3, ny=20, nx=24):
    import xarray as xr
    from pyproj import CRS, Transformer

    crs = CRS.from_cf(POLE)
    rlat = np.linspace(-6.0, -1.0, ny)   # rotated degrees around the Alps
    rlon = np.linspace(-6.0, 0.0, nx)
    rr_lon, rr_lat = np.meshgrid(rlon, rlat)
    to_geo = Transformer.from_crs(crs, CRS.from_epsg(4326), always_xy=True)
    lon2, lat2 = to_geo.transform(rr_lon, rr_lat)
    rng = np.random.default_rng(0)
    truth = 285 + 0.5 * lat2[None] + rng.normal(0, 0.3, (nt, ny, nx))
    attrs = {"units": "K", "long_name": "2 metre temperature", "standard_name": "air_temperature"}
    dims = ("time", "y", "x")
    ds = xr.Dataset(
        {"truth": (dims, truth, attrs), "model": (dims, truth + 0.1, attrs), "bicubic": (dims, truth - 0.2, attrs)},
        coords={"time": pd.date_range("2003-07-01", periods=nt, freq="D"),
                "y": ("y", rlat, {"units": "degrees", "standard_name": "grid_latitude"}),
                "x": ("x", rlon, {"units": "degrees", "standard_name": "grid_longitude"}),
                "lat": (("y", "x"), lat2, {"units": "degrees_north", "standard_name": "latitude"}),
                "lon": (("y", "x"), lon2, {"units": "degrees_east", "standard_name": "longitude"}),
                "crs": ((), 0, {**POLE, "crs_wkt": crs.to_wkt()})},
        attrs={"Conventions": "CF-1.8", "variable": "t2m", "finescale_run": run.run_id},
    )
    ds.to_netcdf(run.predictions_path)
    return lat2, lon2, truth


@pytest.fixture
def rotated_run(run_root):
    from .conftest import make_run

    run = make_run(run_root, name="rotated", results=False)
    return run, write_rotated_predictions(run)


def test_a_rotated_pole_run_is_drawn_in_its_rotated_crs_with_lat_lon_on_hover(rotated_run):
    import cartopy.crs as ccrs

    (run, (lat2, lon2, truth)) = rotated_run
    state = AppState()
    state.poll()
    state.selected_run = run.run_id
    assert state.predictions is not None and "y" in state.predictions.dims
    layout = ResultsView(state=state).maps()
    image = layout[0][()].get(0)
    # Drawn in the file's own rotated pole: a rectangle in rotated degrees.
    assert isinstance(image, hv.Image) and isinstance(image.crs, ccrs.RotatedPole)
    assert image.crs.proj4_params["o_lat_p"] == pytest.approx(POLE["grid_north_pole_latitude"])
    assert [d.name for d in image.kdims] == ["x", "y"]
    assert image.vdims[0].unit == "K"  # the hover shows value and units, and the cell's lat/lon
    assert [d.name for d in image.vdims[1:]] == ["cell_lat", "cell_lon"]
    xs, ys = (np.asarray(image.dimension_values(i, expanded=False)) for i in range(2))
    zs, la, lo = (np.asarray(image.dimension_values(d, flat=False)) for d in image.vdims)
    j, i = 3, 5
    # Cell (3, 5) carries its own value with its own latitude and longitude.
    assert la[zs == truth[0, j, i]][0] == pytest.approx(lat2[j, i])
    assert lo[zs == truth[0, j, i]][0] == pytest.approx(lon2[j, i])
    assert xs.min() == pytest.approx(state.predictions["x"].values.min())
    assert ys.max() == pytest.approx(state.predictions["y"].values.max())
    # Rotated grid lines are not parallels: the footprint is not a lat/lon rectangle.
    assert np.ptp(lat2[0]) > 0.1
    coast = layout[0][()].get(1)
    assert isinstance(coast, hv.Contours) and len(coast.split()) >= 1  # the Alps' coast: Ligurian sea
    assert isinstance(coast.crs, ccrs.PlateCarree)  # projected into the rotated map by geoviews
    root = ResultsView(state=state).__panel__().get_root()
    assert root is not None


def test_the_png_of_a_rotated_run(rotated_run):
    from PIL import Image

    run, _ = rotated_run
    state = AppState()
    state.poll()
    state.selected_run = run.run_id
    png = Image.open(ResultsView(state=state).maps_png())
    assert png.format == "PNG" and png.size[0] > 600
