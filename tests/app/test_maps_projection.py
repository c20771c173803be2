"""Maps are drawn in the data's own CRS (app.projection, app.maps.map_element).

For every grid kind of the data layer (regular lat/lon, rotated pole, Lambert conformal, polar
stereographic): the map element's CRS is the data's (compared parameter by parameter with
pyproj), and the element's native coordinates of a few cells, taken back to degrees with pyproj,
are those cells' own 2-D latitude/longitude; the hover carries the cell's lat/lon.
"""

from __future__ import annotations

import numpy as np
import pytest
from pyproj import CRS, Transformer

from app import maps
from app.projection import bounds_to_latlon, grid_of, map_crs, to_latlon
from engine.data import synthetic
from engine.data.catalog import standardise

KINDS = {
    "regular": lambda: synthetic.regular(ntime=1),
    "rotated": lambda: synthetic.rotated_pole(ntime=1),
    "lambert": lambda: synthetic.lambert(ntime=1),
    "polar": lambda: synthetic.polar_stereographic(ntime=1),
}
CELLS = [(0, 0), (3, 5), (-1, -1), (7, 2)]


def field(kind):
    ds = standardise(KINDS[kind]())
    name = next(v for v in ds.data_vars if ds[v].ndim >= 3)
    return ds[name].isel(time=0)


def _cf_params(crs) -> dict:
    """The defining CF parameters of a CRS (names and datum strings left aside)."""
    keep = ("grid_mapping_name", "grid_north_pole_latitude", "grid_north_pole_longitude", "north_pole_grid_longitude",
            "standard_parallel", "latitude_of_projection_origin", "longitude_of_central_meridian",
            "straight_vertical_longitude_from_pole", "false_easting", "false_northing", "semi_major_axis")
    cf = CRS(crs).to_cf()
    return {k: cf[k] for k in keep if k in cf}


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_map_is_in_the_datas_crs_and_its_cells_are_where_the_data_says(kind):
    da = field(kind)
    grid = grid_of(da)
    element = maps.map_element(da, "T", "tas", "K")
    assert element.crs is not None
    # The element's CRS (and the plot's projection) are the data's own, parameter by parameter.
    got, want = _cf_params(element.crs), _cf_params(grid.crs)
    assert set(want) <= set(got) and want, (got, want)
    for key, value in want.items():
        same = got[key] == value if isinstance(value, str) else np.allclose(got[key], value)
        assert same, (key, got[key], value)
    # The element's native x/y of a few cells, back to degrees with pyproj: the cells' 2-D lat/lon.
    xs, ys = (np.asarray(element.dimension_values(i, expanded=False)) for i in range(2))
    to_geo = Transformer.from_crs(CRS(element.crs), CRS.from_epsg(4326), always_xy=True)
    lat2, lon2 = grid.lat, grid.lon
    for j, i in CELLS:
        x = np.sort(xs)[i]
        y = np.sort(ys)[j]
        lon, lat = to_geo.transform(x, y)
        jj, ii = j % lat2.shape[0], i % lat2.shape[1]
        assert lat == pytest.approx(lat2[jj, ii], abs=1e-6)
        assert (lon - lon2[jj, ii] + 180) % 360 - 180 == pytest.approx(0, abs=1e-6)
    # Going the other way (a tap on the map): the cell's native x/y gives its lat/lon.
    lat, lon = to_latlon(element.crs, np.sort(xs)[5], np.sort(ys)[3])
    assert lat[0] == pytest.approx(lat2[3, 5], abs=1e-6)
    assert (lon[0] - lon2[3, 5] + 180) % 360 - 180 == pytest.approx(0, abs=1e-6)


@pytest.mark.parametrize("kind", ["rotated", "lambert", "polar"])
def test_the_hover_carries_each_cells_lat_lon_and_the_units(kind):
    da = field(kind)
    grid = grid_of(da)
    element = maps.map_element(da, "T", "tas", "K", tools=["hover"])
    assert element.vdims[0].unit == "K"
    values, la, lo = (np.asarray(element.dimension_values(d, flat=False)) for d in element.vdims)
    truth = np.asarray(da.transpose(*grid.dims).values)
    for j, i in CELLS:
        hit = values == truth[j, i]
        assert hit.sum() == 1
        assert la[hit][0] == pytest.approx(grid.lat[j, i]) and lo[hit][0] == pytest.approx(grid.lon[j, i])


def test_a_projected_map_renders_with_coastlines_marker_and_region_projected():
    import holoviews as hv

    da = field("lambert")
    grid = grid_of(da)
    crs = map_crs(grid)
    coast = maps.coastline(maps.land_mask(grid.lat, grid.lon))
    assert len(coast.split()) >= 1  # the Ligurian/Adriatic coasts around the Alps
    point = (float(grid.lat[3, 5]), float(grid.lon[3, 5]))
    region = (float(grid.lat.min()), float(grid.lat.mean()), float(grid.lon.min()), float(grid.lon.mean()))
    overlay = maps.map_element(da, "T", "tas", "K") * coast * maps.marker(point) * maps.region_box(region)
    fig = hv.render(overlay, backend="bokeh")
    # Axes in the Lambert projection's metres around the domain, not in degrees.
    x = grid.x * grid.metres_per_unit
    assert fig.x_range.start <= x.min() and fig.x_range.end >= x.max() and x.min() > 1e5
    marker = next(r for r in fig.renderers if type(r.glyph).__name__ == "Scatter")
    data = marker.data_source.data
    mx, my = data[marker.glyph.x][0], data[marker.glyph.y][0]
    assert mx == pytest.approx(x[5], rel=1e-6) and my == pytest.approx(grid.y[3] * grid.metres_per_unit, rel=1e-6)
    # A box drawn on the map (native metres) is read back as the lon/lat box around it.
    lon0, lat0, lon1, lat1 = bounds_to_latlon(crs, (x[0], grid.y[0] * 1000, x[-1], grid.y[-1] * 1000))
    assert lat0 == pytest.approx(grid.lat.min(), abs=1e-3) and lon1 == pytest.approx(grid.lon.max(), abs=1e-3)


def test_a_large_projected_map_is_rasterized_in_its_crs():
    import holoviews as hv

    da = field("polar")
    element = maps.map_element(da, "T", "tas", "K")
    raster = maps.maybe_rasterize(hv.DynamicMap(lambda: element), maps.RASTERIZE_ABOVE + 1)
    frame = raster[()]
    assert _cf_params(frame.crs) == _cf_params(element.crs)


# -- in real Chromium: the hover of a Lambert run's map -----------------------------------------
def write_lambert_predictions(run, nt: int = 2) -> None:
    """predictions.nc of a run on a Lambert conformal grid (km, 2-D lat/lon, the CRS kept)."""
    ds = standardise(synthetic.lambert(ntime=nt))
    name = next(v for v in ds.data_vars if ds[v].ndim >= 3)
    truth = ds[name].astype("float64")
    attrs = {"units": "K", "long_name": "2 metre temperature", "standard_name": "air_temperature"}
    out = ds.drop_vars(list(ds.data_vars)).assign(
        truth=truth.assign_attrs(attrs), model=(truth + 0.1).assign_attrs(attrs), bicubic=(truth - 0.2).assign_attrs(attrs))
    out.attrs = {"Conventions": "CF-1.8", "variable": "t2m", "finescale_run": run.run_id}
    out.to_netcdf(run.predictions_path)


@pytest.mark.browser
@pytest.mark.slow
def test_hovering_a_lambert_map_in_chromium_shows_the_cells_lat_lon(browser, tmp_path):
    import re

    import xarray as xr
    from playwright.sync_api import expect

    from .conftest import Served, make_run, new_page, shot

    root = tmp_path / "runs"
    root.mkdir()
    run = make_run(root, name="lambert", results=False)
    write_lambert_predictions(run)
    with xr.open_dataset(run.predictions_path) as ds:
        grid = grid_of(ds)
    served = Served(root, tmp_path / "serve.log")
    page = new_page(browser)
    try:
        page.goto(f"{served.url}?tab=Runs&run={run.run_id}")
        maps_pane = page.locator(".fs-maps")
        expect(maps_pane).to_be_visible(timeout=180_000)
        canvas = maps_pane.locator("canvas").first
        expect(canvas).to_be_visible(timeout=60_000)
        # The maps sit below the run's details: scroll them into the viewport, where the mouse is.
        canvas.scroll_into_view_if_needed()
        box = canvas.bounding_box()
        tooltip = page.locator(".bk-Tooltip", has_text="Latitude").first
        # Move over the middle of the first map until bokeh shows its tooltip (state, not time): the
        # map may still be drawing when the canvas appears, and a hover before that shows nothing,
        # so keep moving until the tooltip is there.
        for attempt in range(60):
            dx = (0.45, 0.5, 0.55)[attempt % 3]
            page.mouse.move(box["x"] + box["width"] * dx, box["y"] + box["height"] * 0.5, steps=4)
            try:
                expect(tooltip).to_be_visible(timeout=2_000)
                break
            except AssertionError:
                canvas.scroll_into_view_if_needed()  # the layout may have moved while drawing
                box = canvas.bounding_box()
        expect(tooltip).to_be_visible(timeout=10_000)
        # Bokeh draws the tooltip's rows inside its shadow root: read the text from there.
        text = tooltip.evaluate("e => [e.shadowRoot ? e.shadowRoot.textContent : '', e.textContent].join(' ')")
        shot(page, "maps-lambert-hover")

        def number(label):
            match = re.search(re.escape(label) + r"[^:\d-]*:?\s*(-?[\d.,]+(?:e[-+]?\d+)?)", text)
            assert match, (label, text)
            return float(match.group(1).replace(",", ""))

        x, y, lat, lon = number("x (m)"), number("y (m)"), number("Latitude"), number("Longitude")
        # The hovered point is in Lambert metres (shown to 4 digits); the cell under it is the one
        # whose centre is nearest, and the tooltip shows that cell's own latitude/longitude.
        cx, cy = grid.x * grid.metres_per_unit, grid.y * grid.metres_per_unit
        slack = 0.5 * np.diff(cx).mean() + 10 ** (np.floor(np.log10(abs(x))) - 3)  # half a cell + rounding
        near = [(j, i) for j in range(cy.size) for i in range(cx.size)
                if abs(cx[i] - x) <= slack and abs(cy[j] - y) <= slack]
        assert near, (x, y, text)
        assert any(abs(lat - grid.lat[j, i]) < 2e-3 and abs(lon - grid.lon[j, i]) < 2e-3 for j, i in near), (text, near)
        # ... and not the lat/lon of some other cell: the footprint spans degrees.
        assert np.ptp(grid.lat) > 1.0
        assert not page.js_errors, page.js_errors
    finally:
        page.close()
        served.close()


def test_the_compare_series_reads_cftime_calendars_and_any_grid():
    import xarray as xr

    from app.analysis import _nearest_cell, _plot_times

    times = xr.date_range("2001-02-28", periods=3, freq="D", calendar="360_day", use_cftime=True).values
    got = _plot_times(times)  # 360_day's 29 and 30 February fall on the last real day of February
    assert [str(t.date()) for t in got] == ["2001-02-28", "2001-02-28", "2001-02-28"]
    noleap = xr.date_range("2001-02-28", periods=2, freq="D", calendar="noleap", use_cftime=True).values
    assert [str(t.date()) for t in _plot_times(noleap)] == ["2001-02-28", "2001-03-01"]
    da = field("lambert")
    grid = grid_of(da)
    cell = _nearest_cell(da, float(grid.lat[3, 5]), float(grid.lon[3, 5]))
    assert float(cell) == pytest.approx(float(da.transpose(*grid.dims).values[3, 5]))
