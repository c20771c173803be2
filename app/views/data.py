"""The data view: browse the catalogue, look at LR, HR and static maps, pick a region.

The region picker is holoviews' ``BoundsXY`` stream on the high-resolution map (the box-select
tool): the drawn box becomes ``AppState.region``, which the experiment (``data.bbox``), compare
(region scores) and explain (attribution region) views use.
"""

from __future__ import annotations

import panel as pn
import param
from panel.viewable import Viewer

from ..catalogue import CatalogueState
from ..colours import kind_of_array
from ..colours import options as colour_options
from ..maps import (RASTERIZE_ABOVE, MapFrames, aspect_of, coastline, dated, land_mask, map_crs_of, map_element,
                    maybe_rasterize, region_box, tile_layer, tile_projection)
from ..state import AppState


class DataView(Viewer):
    """Dataset and variable selectors, the catalogue table, linked maps and the region picker.

    Parameters
    ----------
    state : AppState
        The shared dashboard state; the selectors write ``state.dataset`` / ``state.variable``,
        the region picker ``state.region``.
    maps : bool
        Also show the catalogue table and the maps (False: only the selectors, for a sidebar).
    """

    state = param.ClassSelector(class_=AppState)
    maps = param.Boolean(default=True)
    width = param.Integer(default=360, doc="Width of one map in pixels.")
    tiles = param.Boolean(default=False, doc="Online map tiles (OpenStreetMap) under the maps, which are then drawn "
                                             "in Web Mercator; off: offline, in the data's own CRS.")
    # A parameter (not a plain attribute) so that @param.depends("data.time_index") watches it.
    data = param.ClassSelector(class_=CatalogueState, allow_None=True, doc="The data view's state.")

    def __init__(self, **params):
        # Only a view that shows maps reads the data (a selectors-only copy must not open files).
        if params.get("data") is None and params.get("maps", True):
            params["data"] = CatalogueState(app=params["state"])
        super().__init__(**params)
        self._dataset = pn.widgets.Select.from_param(self.state.param.dataset, label="Dataset", css_classes=["fs-dataset"])
        self._variable = pn.widgets.Select.from_param(self.state.param.variable, label="Variable", css_classes=["fs-variable"])
        self._time = pn.widgets.IntSlider.from_param(self.data.param.time_index, name="Time step",
                                                     css_classes=["fs-data-time"], sizing_mode="stretch_width") \
            if self.maps else None
        self._clear = pn.widgets.Button(label="Clear region", width=120, sizing_mode="fixed", css_classes=["fs-clear-region"])
        self._clear.on_click(lambda event: setattr(self.state, "region", None))
        self._bounds = None  # the BoundsXY stream of the current HR map
        # The time label and the region line are panes made once whose text is replaced, not
        # panes re-created per time step: a re-created pane swaps a layout's children and shows
        # the loading indicator around it (three layout changes), and the browser lays the whole
        # tab out again after each, maps included (about 0.15 s each in Chromium on a CPU).
        self._time_text = pn.pane.Markdown(self._time_label_text(), css_classes=["fs-data-time-label"])
        self._region_text = pn.pane.Markdown(self._region_line(), css_classes=["fs-region"])
        # Likewise the dataset's description. It comes from the project's own catalogue YAML:
        # no math rendering of "$".
        self._description_pane = pn.pane.Markdown(self._description_text(), disable_math=True)

    @param.depends("state.dataset_info", "state.time_range", "state.variable", watch=True)
    def _description(self):
        """The description pane, its text brought up to date (the same pane every time)."""
        self._description_pane.object = self._description_text()
        return self._description_pane

    def _description_text(self) -> str:
        info = self.state.dataset_info or {}
        if not info and self.state.dataset is None:
            return "*Reading the catalogue…*"
        lines = []
        if info.get("description"):
            lines.append(str(info["description"]).strip())
        facts = []
        if info.get("role"):
            facts.append(f"role **{info['role']}**")
        variables = info.get("variables")
        var = variables.get(self.state.variable) if isinstance(variables, dict) else None
        if isinstance(var, dict):
            if var.get("long_name"):
                facts.append(str(var["long_name"]))
            if var.get("units"):
                facts.append(f"units **{var['units']}**")
        if info.get("resolution"):
            facts.append(f"{info['resolution']:.3g}° grid" if isinstance(info["resolution"], (int, float))
                         else f"resolution {info['resolution']}")
        if info.get("remote"):
            facts.append("remote (needs network)")
        if self.state.time_range:
            start, end = self.state.time_range
            facts.append(f"{start} → {end}")
        if info.get("pairs_with"):
            pairs = info["pairs_with"]
            facts.append("pairs with " + ", ".join(pairs if isinstance(pairs, (list, tuple)) else [str(pairs)]))
        if facts:
            lines.append(" · ".join(facts))
        return "\n\n".join(lines)

    @param.depends("state.choices_loaded")
    def _catalogue(self):
        if not self.state.choices_loaded:
            return pn.pane.Markdown("*Reading the catalogue…*")
        return pn.widgets.Tabulator(self.data.table(), disabled=True, show_index=False, layout="fit_data_table",
                                    max_height=200, css_classes=["fs-catalogue"], sizing_mode="stretch_width")

    def map_layout(self):
        """LR, HR (with the region picker), elevation and land mask, linked (a holoviews Layout)."""
        import holoviews as hv
        import holoviews.plotting.bokeh  # noqa: F401  (.opts() needs a loaded plotting backend)

        data = self.data
        fields = data.fields()
        if not fields:
            return None
        hr = fields["hr"]
        units = str(hr.attrs.get("units", ""))
        var = self.state.variable or "value"
        lat, lon = hr["lat"].values, hr["lon"].values
        kind = kind_of_array(hr, var)
        values = colour_options(kind, hr.values)
        common = dict(colorbar=True, frame_width=self.width - 90, aspect=aspect_of(lat, lon), tools=["hover"])
        if self.tiles:  # tiles come in Web Mercator only: every map is drawn in it
            common["projection"] = tile_projection()
        coast = coastline(land_mask(lat, lon))
        npix = hr.size
        region = hv.DynamicMap(lambda region: region_box(region), streams=dict(region=self.state.param.region))

        titles = {"hr": f"High-res target {var}", "lr": f"Low-res input {var}"}
        big = npix > RASTERIZE_ABOVE
        # The region picker's tools go with the HR map's frames when they are drawn as they are
        # (options set once, see MapFrames); a rasterized map takes them on the operation's output.
        picker = dict(tools=["hover", "box_select"], active_tools=["box_select"])
        makers = {"hr": MapFrames(var, units, group=titles["hr"], **values, **{**common, **({} if big else picker)}),
                  "lr": MapFrames(var, units, group=titles["lr"], **values, **common)}

        def frame(time_index, which):
            label = data.times[time_index] if 0 <= time_index < len(data.times) else None
            return makers[which](data.fields(time_index)[which], dated(titles[which], label))

        hr_map = hv.DynamicMap(lambda time_index: frame(time_index, "hr"),
                               streams=dict(time_index=data.param.time_index))
        lr_map = hv.DynamicMap(lambda time_index: frame(time_index, "lr"),
                               streams=dict(time_index=data.param.time_index))
        if big:
            hr_map = maybe_rasterize(hr_map, npix, **common).opts(**picker)
        self._bounds = hv.streams.BoundsXY(source=hr_map, bounds=None)
        from ..projection import bounds_to_latlon

        crs = tile_projection() if self.tiles else map_crs_of(hr)  # a box drawn in the map's CRS, as lon/lat
        self._bounds.add_subscriber(lambda bounds: data.set_region_from_bounds(bounds_to_latlon(crs, bounds)))
        def under(layer):  # the tiles (when asked for) under a map
            return tile_layer() * layer if self.tiles else layer

        panels = [under(hr_map) * coast * region, under(lr_map) * coast * region]
        for name, field in data.static().items():
            cmap = "terrain" if name == "elevation" else "Greens"
            element = map_element(field, name.replace("_", " ").capitalize(), name, str(field.attrs.get("units", "")),
                                  cmap=cmap, **common)
            panels.append(under(maybe_rasterize(element, npix, **common)) * coast * region)
        return hv.Layout(panels).cols(2)  # axes shared by default (no .opts: app.maps)

    @param.depends("data.version", "tiles")
    def _maps(self):
        if self.data.error:
            return pn.pane.Alert(self.data.error, alert_type="warning")
        layout = self.map_layout()
        if layout is None:
            return pn.pane.Markdown("*Maps appear when a local dataset is selected.*")
        return pn.pane.HoloViews(layout, css_classes=["fs-data-maps"], linked_axes=False)

    def _time_label_text(self) -> str:
        return f"**{self.data.time_label}**" if self.data is not None and self.data.times else ""

    @param.depends("data.time_index", "data.version", watch=True)
    def _time_label(self):
        """The time label pane, its text brought up to date (the same pane every time)."""
        self._time_text.object = self._time_label_text()
        return self._time_text

    def _region_line(self) -> str:
        region = self.state.region
        if region is None:
            return "Region: *the whole domain* — draw a box on the high-res map to pick one."
        lat0, lat1, lon0, lon1 = region
        text = f"Region: **{lat0:.2f}–{lat1:.2f}°N, {lon0:.2f}–{lon1:.2f}°E**"
        stats = self.data.region_values() if self.data is not None else None
        if stats:
            text += f" · {stats['pixels']} pixels, mean {stats['mean']:.4g}, range {stats['min']:.4g}–{stats['max']:.4g}"
        return text

    @param.depends("state.region", "data.time_index", watch=True)
    def _region(self):
        """The region line pane, its text brought up to date (the same pane every time)."""
        self._region_text.object = self._region_line()
        return self._region_text

    def selectors(self):
        return pn.Column("### Data", self._dataset, self._variable, self._description_pane, sizing_mode="stretch_width")

    def __panel__(self):
        if not self.maps:
            return self.selectors()
        return pn.Column(
            self.selectors(),
            # Shown in well under 0.3 s once the choices are read: no loading indicator, whose
            # on/off would make the browser lay the tab out twice more.
            pn.Card(pn.param.ParamMethod(self._catalogue, loading_indicator=False), title="Catalogue", collapsed=False,
                    sizing_mode="stretch_width"),
            pn.Row(self._time, self._time_text, sizing_mode="stretch_width"),
            pn.Row(self._region_text, self._clear,
                   pn.widgets.Checkbox.from_param(self.param.tiles, name="Online map tiles (OpenStreetMap)",
                                                  css_classes=["fs-tiles"], width=240, sizing_mode="fixed"),
                   sizing_mode="stretch_width"),
            self._maps,
            sizing_mode="stretch_width",
        )
