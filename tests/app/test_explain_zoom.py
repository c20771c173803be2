"""app.zoom: the attributed area of an attribution map (extents worked out by hand), and the
explain view's maps zoomed to it (a really trained run) or showing the full domain."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import xarray as xr

from app.zoom import attributed_extent, explained_target

LAT = 40.0 + 0.5 * np.arange(20)  # rows: 0.5 degree apart
LON = 5.0 + 0.25 * np.arange(30)  # columns: 0.25 degree apart


def _map(values):
    return xr.DataArray(values, dims=("lat", "lon"), coords={"lat": LAT, "lon": LON}, name="input_t2m")


def _blob():
    values = np.full((20, 30), 0.01)  # below 5 % of the largest: not attributed
    values[5:8, 10:13] = -1.0  # negative attributions count by their size
    return values


def test_extent_of_the_attributed_cells_by_hand():
    # rows 5..7, columns 10..12, half a cell beyond the outer centres
    assert attributed_extent(_map(_blob()), pad=0, min_cells=1) == pytest.approx((7.375, 8.125, 42.25, 43.75))
    # default: padded by ceil(0.15 * 3) = 1 cell (rows 4..8, columns 9..13), then widened to
    # 8 cells (rows 3..10, columns 8..15)
    assert attributed_extent(_map(_blob())) == pytest.approx((6.875, 8.875, 41.25, 45.25))


def test_the_explained_pixel_or_box_is_always_inside():
    # a pixel far from the attribution (row 19, column 0) stretches the extent to it
    assert attributed_extent(_map(_blob()), point=(49.4, 5.05), pad=0, min_cells=1) == \
        pytest.approx((4.875, 8.125, 42.25, 49.75))
    # a box over rows 0..1 and columns 20..21
    assert attributed_extent(_map(_blob()), region=(40.0, 40.5, 10.0, 10.25), pad=0, min_cells=1) == \
        pytest.approx((7.375, 10.375, 39.75, 43.75))
    # nothing attributed: the pixel's neighbourhood (8 cells, shifted inside the map at its corner)
    assert attributed_extent(_map(np.zeros((20, 30))), point=(40.0, 5.0)) == pytest.approx((4.875, 6.875, 39.75, 43.75))


def test_whole_map_or_nothing_gives_no_zoom_and_bad_options_are_named():
    assert attributed_extent(_map(np.ones((20, 30)))) is None
    assert attributed_extent(_map(np.zeros((20, 30)))) is None
    with pytest.raises(ValueError, match="share=0 is not valid; accepted: a fraction in"):
        attributed_extent(_map(_blob()), share=0)
    with pytest.raises(ValueError, match="min_cells=0 are not valid"):
        attributed_extent(_map(_blob()), min_cells=0)


def test_projected_grid_extent_in_native_coordinates():
    from app.projection import native_xy
    from engine.data import synthetic
    from engine.data.grid import describe
    from engine.data.gridcf import standardise_grid

    ds = standardise_grid(synthetic.lambert(ny=24, nx=32, dx_km=12.5))
    da = ds[list(ds.data_vars)[0]].isel(time=0)
    grid = describe(da)
    assert grid.kind == "projected"
    values = np.zeros(grid.shape)
    values[10, 20] = 1.0
    x, y = native_xy(grid)  # metres, as the map draws them
    x0, x1, y0, y1 = attributed_extent(da.copy(data=values), pad=0, min_cells=1)
    assert (x0, x1) == pytest.approx((x[20] - 6250.0, x[20] + 6250.0))  # half of 12.5 km
    assert (y0, y1) == pytest.approx((y[10] - 6250.0, y[10] + 6250.0))


def test_explained_target_from_the_result_region_mask():
    mask = np.zeros((20, 30), dtype="int8")
    mask[4:6, 2:5] = 1
    ds = xr.Dataset({"region": (("lat", "lon"), mask)}, coords={"lat": LAT, "lon": LON})
    point, region = explained_target(ds)
    assert region == pytest.approx((42.0, 42.5, 5.5, 6.0)) and point == pytest.approx((42.25, 5.75))
    ds["region"][:] = 1
    assert explained_target(ds) == (None, None)
    assert explained_target(None) == (None, None)


@pytest.mark.slow
def test_explain_view_zooms_to_a_clicked_pixel_of_a_trained_run(run_root, trained_run_dir):
    import holoviews as hv

    from app.state import AppState
    from app.views.explain import ExplainView
    from tests.app.conftest import copy_run

    copy_run(trained_run_dir, run_root)
    state = AppState()
    state.poll()
    view = ExplainView(state=state)
    xp = view.xp
    xp.point = (46.0, 10.0)
    xp.method, xp.n_steps = "saliency", 4
    xp.explain()
    assert xp.error == "", xp.error

    def limits(panel):
        opts = hv.Store.lookup_options("bokeh", panel, "plot").kwargs
        return opts.get("xlim"), opts.get("ylim")

    maps, _ = view.attribution_layout()
    pred = xp.prediction()
    lon, lat = pred["lon"].values, pred["lat"].values
    for panel in maps:
        (x0, x1), (y0, y1) = limits(panel)
        assert x0 <= 10.0 <= x1 and y0 <= 46.0 <= y1  # the clicked pixel is shown
        assert (x1 - x0) < np.ptp(lon) or (y1 - y0) < np.ptp(lat)  # and it is a zoom
    view.zoom = "full domain"
    maps, _ = view.attribution_layout()
    assert all(limits(panel) == (None, None) for panel in maps)
    shutil.rmtree(run_root / trained_run_dir.name / "attributions", ignore_errors=True)
