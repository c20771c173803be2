"""app.maps.MapFrames: a DynamicMap's map frames with options set once.

A time step's update must change the map's values and the date in its title and keep every
other layer (coastlines) and option; and the views must not put options on their Layouts or
map DynamicMaps, which makes holoviews re-apply them to a clone of every frame on each update.
"""

from __future__ import annotations

import numpy as np
import pytest

from app import maps
from engine.data import synthetic
from engine.data.catalog import standardise


def _series(kind="lambert", nt=3):
    ds = standardise({"lambert": synthetic.lambert, "regular": synthetic.regular}[kind](ntime=nt))
    name = next(v for v in ds.data_vars if ds[v].ndim >= 3)
    return ds[name]


def _figure_images(fig):
    return [r for r in fig.renderers if type(getattr(r, "glyph", None)).__name__ == "Image"]


@pytest.mark.parametrize("kind", ["lambert", "regular"])
def test_frames_change_values_and_dated_title_and_keep_the_coastline(kind):
    import holoviews as hv
    from bokeh.document import Document
    from bokeh.models import HoverTool

    series = _series(kind)
    frames = maps.MapFrames("tas", "K", group="Truth", cmap="viridis", clim=(250.0, 300.0), tools=["hover"])
    step = hv.streams.Stream.define("Step", t=0)()
    grid_lat, grid_lon = (series[c].values for c in ("lat", "lon"))
    coast = maps.coastline(maps.land_mask(grid_lat, grid_lon))
    dmap = hv.DynamicMap(lambda t: frames(series.isel(time=t), f"Truth — day {t}"), streams=[step]) * coast
    plot = hv.renderer("bokeh").get_plot(dmap, doc=Document())
    fig = plot.state
    assert fig.title.text == "Truth — day 0"
    first_frame = frames(series.isel(time=0), "x")
    n_renderers = len(fig.renderers)
    for t in (1, 2):
        step.event(t=t)
        assert fig.title.text == f"Truth — day {t}"
        (image,) = _figure_images(fig)  # one image layer, updated in place (no layer added per frame)
        assert len(fig.renderers) == n_renderers
        shown = image.data_source.data["image"][0]
        # The step's own values (in whatever row order bokeh keeps them), not the first step's.
        want = np.sort(series.isel(time=t).values.ravel())
        np.testing.assert_allclose(np.sort(shown.ravel()), want)
        assert not np.allclose(np.sort(shown.ravel()), np.sort(first_frame.dimension_values(2)))
        # The coastline layer is still drawn, and the options of the first frame still hold.
        lines = [r for r in fig.renderers if type(r.glyph).__name__ == "MultiLine" and r.visible]
        assert lines and sum(len(r.data_source.data["xs"]) for r in lines) >= 1
        assert image.glyph.color_mapper.low == 250.0 and image.glyph.color_mapper.high == 300.0
        assert any(isinstance(tool, HoverTool) for tool in fig.tools)


def test_a_field_on_another_grid_gets_its_own_layout():
    frames = maps.MapFrames("tas", "K", group="Truth")
    field = _series("regular").isel(time=0)
    a = frames(field, "a")
    assert a.dimension_values(2, flat=False).shape == field.shape
    part = field.isel({field.dims[0]: slice(0, -2)})  # a sub-domain: another grid of the same kind
    b = frames(part, "b")
    assert b.dimension_values(2, flat=False).shape == part.shape
    np.testing.assert_allclose(np.sort(b.dimension_values(1, expanded=False)), np.sort(part[part.dims[0]].values))
    lam = frames(_series("lambert").isel(time=0), "c")  # a Lambert grid after a lat/lon one
    assert lam.kdims[0].name == "x" and lam.crs != a.crs
    with pytest.raises(ValueError, match="fixed group"):
        maps.MapFrames("tas", group="")


def test_the_data_views_maps_carry_no_per_frame_options(run_root):
    """Options on a Layout or a DynamicMap are re-applied to every frame (a clone per map per
    update): the Data tab's layout and its DynamicMaps must have none."""
    import holoviews as hv
    from holoviews.core.options import Store

    from app.state import AppState
    from app.views import DataView

    state = AppState()
    state.load_choices()
    view = DataView(state=state)
    view.data.open()
    layout = view.map_layout()
    dmaps = layout.traverse(lambda x: x, [hv.DynamicMap])
    assert dmaps, "the Data tab's maps are DynamicMaps"
    assert layout.id not in Store.custom_options()
    assert [d for d in dmaps if d.id in Store.custom_options()] == []


def test_a_grids_coastline_is_computed_once_and_shared():
    series = _series("regular")
    mask = maps.land_mask(series["lat"].values, series["lon"].values)
    assert mask is not None
    first = maps.coastline(mask)
    assert maps.coastline(mask) is first  # a second session of the same grid: no new contour
    assert len(first.split()) >= 1
    other = mask.copy()  # an equal but distinct mask gets its own (equal) coastline
    again = maps.coastline(other)
    assert again is not first and len(again.split()) == len(first.split())
    empty = maps.coastline(None)
    assert len(empty) == 0


# -- online map tiles: an option, off by default, never fetched by the server -------------------
def test_tiles_are_off_by_default_and_an_option_adds_a_tile_layer_to_every_map(run_root):
    from bokeh.document import Document
    from bokeh.models import TileRenderer
    from pyproj import Transformer

    from app.state import AppState
    from app.views import DataView

    state = AppState()
    state.load_choices()
    models = {}
    for tiles in (False, True):
        view = DataView(state=state, tiles=tiles) if tiles else DataView(state=state)
        view.data.open()
        doc = Document()
        root = view._maps().get_root(doc)
        doc.add_root(root)
        models[tiles] = (view, root)
    off, on = (list(models[t][1].select({"type": TileRenderer})) for t in (False, True))
    assert off == []  # offline by default: coastlines only
    assert len(on) == 4 and all("openstreetmap" in r.tile_source.url for r in on)
    # Under tiles the maps are in Web Mercator: a box drawn there is read back as its lon/lat box.
    view = models[True][0]
    merc = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True)
    x0, y0 = merc.transform(8.0, 44.0)
    x1, y1 = merc.transform(10.0, 46.5)
    view._bounds.event(bounds=(x0, y0, x1, y1))
    assert view.state.region == pytest.approx((44.0, 46.5, 8.0, 10.0), abs=1e-6)
    # A time step still updates the maps drawn over tiles.
    view.data.time_index = 2
    with pytest.raises(ValueError, match="unknown tile source 'Google'; accepted: OSM"):
        maps.tile_layer("Google")
