"""The compare view: several runs and baselines side by side.

Linked maps (truth, each baseline, each run) at one time, their error maps and per-pixel RMSE
over the period, the scores table by season, month or region, power spectra, and the time
series at a clicked point (holoviews ``Tap`` stream on the maps).
"""

from __future__ import annotations

import panel as pn
import param
from panel.viewable import Viewer

from ..analysis import CompareState
from ..colours import kind_of_array
from ..colours import options as colour_options
from ..maps import (aspect_of, coastline, dated, land_mask, map_element, marker as point_marker, maybe_rasterize,
                    region_box, robust_clim, tap_latlon)
from ..state import AppState


class CompareView(Viewer):
    """Runs and baselines compared: maps, errors, scores, spectra and a point's time series.

    Parameters
    ----------
    state : AppState
    """

    state = param.ClassSelector(class_=AppState)
    width = param.Integer(default=300, doc="Width of one map in pixels.")
    # A parameter (not a plain attribute) so that @param.depends("cmp.point") watches it.
    cmp = param.ClassSelector(class_=CompareState, doc="The compare state (made from state by default).")

    def __init__(self, **params):
        if params.get("cmp") is None:
            params["cmp"] = CompareState(app=params["state"])
        super().__init__(**params)
        w = pn.widgets
        self._runs = w.MultiChoice.from_param(self.cmp.param.runs, name="Runs", css_classes=["fs-compare-runs"],
                                              sizing_mode="stretch_width")
        self._baselines = w.CheckButtonGroup.from_param(self.cmp.param.baselines, name="Baselines",
                                                        css_classes=["fs-compare-baselines"])
        self._breakdown = w.RadioButtonGroup.from_param(self.cmp.param.breakdown, name="Scores by",
                                                        css_classes=["fs-compare-breakdown"])
        self._taps = []  # Tap streams of the current maps

    def _time_widget(self):
        if len(self.cmp.param.time.objects) < 2:
            return pn.pane.Markdown(f"Time: **{self.cmp.time}**" if self.cmp.time else "")
        return pn.widgets.DiscreteSlider.from_param(self.cmp.param.time, name="Time", css_classes=["fs-compare-time"],
                                                    sizing_mode="stretch_width")

    def _on_tap(self, x=None, y=None):
        if x is not None and y is not None:
            # Taps come in the map's CRS (native x/y on a projected grid): the point is lat/lon.
            truth = self.cmp.truth()
            self.cmp.point = tap_latlon(truth, x, y) if truth is not None else (float(y), float(x))

    def maps(self):
        """Truth, baselines and runs at the selected time, their errors and RMSE (a Layout)."""
        import holoviews as hv
        import holoviews.plotting.bokeh  # noqa: F401  (.opts() needs a loaded plotting backend)

        cmp = self.cmp
        truth = cmp.truth()
        if truth is None:
            return None
        lat, lon = truth["lat"].values, truth["lon"].values
        units = str(truth.attrs.get("units", ""))
        var = str(cmp.reference.attrs.get("variable", "value")) or "value"
        common = dict(colorbar=True, frame_width=self.width - 90, aspect=aspect_of(lat, lon),
                      tools=["hover", "tap"])
        kind = kind_of_array(cmp.reference["truth"], var)
        values = colour_options(kind, cmp.reference["truth"].values)
        coast = coastline(land_mask(lat, lon))
        npix = truth.size
        marker = hv.DynamicMap(
            lambda point: point_marker(point, color="black", marker="x", size=12, line_width=3),
            streams=dict(point=cmp.param.point))
        region = hv.DynamicMap(lambda region: region_box(region), streams=dict(region=self.state.param.region))
        self._taps = []

        def tapped(element):
            tap = hv.streams.Tap(source=element, x=None, y=None)
            tap.add_subscriber(self._on_tap)
            self._taps.append(tap)
            return element

        panels, errors, rmses = [], [], []
        sources = [("Truth", cmp.runs[0], "truth")] + cmp.sources()
        err_top = 0.0
        for label, run_id, variable in sources:
            def frame(time, run_id=run_id, variable=variable, label=label):
                return map_element(cmp.field(run_id, variable, time), dated(label, time), var, units, group=label,
                                   **values, **common)

            dmap = hv.DynamicMap(frame, streams=dict(time=cmp.param.time))
            panels.append(tapped(maybe_rasterize(dmap, npix, **common)) * coast * marker * region)
            if variable == "truth":
                continue
            rmse = cmp.rmse_map(run_id, variable)
            if rmse is not None:
                rmses.append((label, rmse))
                err_top = max(err_top, robust_clim(rmse.values, hi=99.5)[1])
        err_clim = (-err_top * 1.5 or -1.0, err_top * 1.5 or 1.0)
        for label, run_id, variable in sources[1:]:
            def err_frame(time, run_id=run_id, variable=variable, label=label):
                return map_element(cmp.error(run_id, variable, time), dated(f"Error {label}", time), "error", units,
                                   group=f"Error {label}", **colour_options("error", clim=err_clim), **common)

            dmap = hv.DynamicMap(err_frame, streams=dict(time=cmp.param.time))
            errors.append(tapped(maybe_rasterize(dmap, npix, **common)) * coast * marker)
        for label, rmse in rmses:
            element = map_element(rmse, f"RMSE {label} (period)", "rmse", units,
                                  **colour_options("spread", clim=(0.0, err_top or 1.0)), **common)
            rmses_el = tapped(maybe_rasterize(element, npix, **common)) * coast * marker
            errors.append(rmses_el)
        return hv.Layout(panels + errors).cols(3)  # axes shared by default (no .opts: app.maps)

    @param.depends("cmp.version", "cmp.baselines")
    def _maps_pane(self):
        if not self.cmp.runs:
            return pn.pane.Markdown("*Pick one or more runs with predictions to compare them.*",
                                    css_classes=["fs-compare-empty"])
        layout = self.maps()
        if layout is None:
            return pn.pane.Markdown("*The first run has no truth to compare with.*")
        return pn.Column(self._time_widget(), pn.pane.HoloViews(layout, css_classes=["fs-compare-maps"], linked_axes=False),
                         sizing_mode="stretch_width")

    @param.depends("cmp.version", "cmp.baselines", "cmp.breakdown", "state.region")
    def _scores(self):
        if not self.cmp.runs:
            return pn.pane.Markdown("")
        table = self.cmp.scores_table()
        if table.empty:
            return pn.pane.Markdown(f"*No scores by {self.cmp.breakdown} yet (the runs have not been evaluated).*")
        return pn.pane.DataFrame(table, index=False, float_format="{:.4g}".format, css_classes=["fs-compare-scores"],
                                 sizing_mode="stretch_width", max_height=400, styles={"overflow": "auto"})

    @param.depends("cmp.version", "cmp.baselines")
    def _spectra(self):
        import holoviews as hv
        import holoviews.plotting.bokeh  # noqa: F401  (.opts() needs a loaded plotting backend)

        if not self.cmp.runs:
            return pn.pane.Markdown("")
        df = self.cmp.spectra()
        curves = [hv.Curve(g, "wavelength", "power", label=src).opts(logx=True, logy=True, tools=["hover"], line_width=2)
                  for src, g in df.groupby("source", sort=False)]
        plot = hv.Overlay(curves).opts(title="Power spectra (time mean)", xlabel="wavelength (grid cells)",
                                       ylabel="power", height=300, responsive=True, legend_position="bottom_left",
                                       show_grid=True, invert_xaxis=True, logx=True, logy=True)
        return pn.pane.HoloViews(plot, css_classes=["fs-compare-spectra"], sizing_mode="stretch_width", linked_axes=False)

    @param.depends("cmp.point", "cmp.version", "cmp.baselines")
    def _series(self):
        import holoviews as hv
        import holoviews.plotting.bokeh  # noqa: F401  (.opts() needs a loaded plotting backend)

        if self.cmp.point is None:
            return pn.pane.Markdown("*Click a map to see the time series at that point.*", css_classes=["fs-compare-series"])
        df = self.cmp.series()
        lat, lon = self.cmp.point
        curves = [hv.Curve(g, "time", "value", label=src).opts(tools=["hover"], line_width=1.5)
                  for src, g in df.groupby("source", sort=False)]
        plot = hv.Overlay(curves).opts(title=f"Time series at {lat:.2f}°N, {lon:.2f}°E", height=280, responsive=True,
                                       legend_position="top_left", show_grid=True)
        return pn.pane.HoloViews(plot, css_classes=["fs-compare-series"], sizing_mode="stretch_width", linked_axes=False)

    def __panel__(self):
        return pn.Column(
            "### Compare runs",
            self._runs,
            pn.Row(pn.pane.Markdown("Baselines:", width=80, sizing_mode="fixed"), self._baselines),
            self._maps_pane,
            self._series,
            pn.Row(pn.pane.Markdown("**Scores by**", width=80, sizing_mode="fixed"), self._breakdown),
            self._scores,
            self._spectra,
            sizing_mode="stretch_width",
        )
