"""The results view: linked maps of truth, bicubic, model and RMSE, a time selector and scores.

Coastlines are drawn offline (see :mod:`app.maps`).
"""

from __future__ import annotations

import panel as pn
import param
from panel.viewable import Viewer

from ..colours import kind_of_array, limits
from ..colours import options as colour_options
from ..maps import MapFrames, aspect_of, coastline, dated, land_mask, map_element  # noqa: F401  (map_element re-exported)
from ..state import AppState

#: Above this many pixels a map is rasterized by datashader on the server (aggregated to the
#: screen's resolution) instead of sending every pixel to the browser.
RASTERIZE_ABOVE = 300_000

#: Metrics shown first in the scores table (when the evaluation wrote them); the rest are one
#: click away.
HEADLINE_METRICS = ("rmse", "mae", "bias", "pearson", "ssim", "psnr", "rmse_skill", "mae_skill")

_TITLES = {"truth": "Truth", "bicubic": "Bicubic", "model": "Model", "rmse": "RMSE of the model (test period)"}


class ResultsView(Viewer):
    """Maps of the selected run at the selected time, and its scores table.

    Parameters
    ----------
    state : AppState
    """

    state = param.ClassSelector(class_=AppState)
    width = param.Integer(default=420, doc="Width of one map in pixels.")
    clim = param.Range(default=None, allow_None=True, doc="Colour limits of truth, bicubic and model (None: from "
                                                         "the data's 1st and 99th percentiles over the period).")

    def _time_widget(self):
        labels = self.state.times
        if len(labels) < 2:
            return pn.pane.Markdown(f"Time: **{labels[0]}**" if labels else "")
        slider = pn.widgets.DiscreteSlider.from_param(self.state.param.selected_time, label="Time",
                                                      css_classes=["fs-time-slider"], sizing_mode="stretch_width")
        # A player steps through the dates (one frame a second: each is a server round trip).
        player = pn.widgets.DiscretePlayer.from_param(self.state.param.selected_time, interval=1000,
                                                      loop_policy="once", show_value=False, visible_buttons=[
                                                          "previous", "play", "pause", "next"],
                                                      css_classes=["fs-time-player"], width=260, sizing_mode="fixed")
        return pn.Row(slider, player, sizing_mode="stretch_width")

    def _clim_widget(self, auto: tuple[float, float]):
        """Two number boxes for the colour limits (empty: automatic), and a reset button."""
        lo, hi = self.clim or auto
        low = pn.widgets.FloatInput(label="Colour min", value=round(float(lo), 4), width=120, sizing_mode="fixed",
                                    css_classes=["fs-clim-min"])
        high = pn.widgets.FloatInput(label="Colour max", value=round(float(hi), 4), width=120, sizing_mode="fixed",
                                     css_classes=["fs-clim-max"])
        reset = pn.widgets.Button(label="Auto", width=70, sizing_mode="fixed", css_classes=["fs-clim-auto"])

        def apply(*events):
            if low.value is not None and high.value is not None and high.value > low.value:
                self.clim = (float(low.value), float(high.value))

        low.param.watch(apply, "value")
        high.param.watch(apply, "value")
        reset.on_click(lambda e: setattr(self, "clim", None))
        return pn.Row(low, high, reset, css_classes=["fs-clim"], sizing_mode="stretch_width")

    def auto_clim(self) -> tuple[float, float] | None:
        """The automatic colour limits of the selected run's fields (by kind of variable)."""
        s = self.state
        ds = s.predictions
        if ds is None:
            return None
        truth = ds["truth"] if "truth" in ds else None
        kind = kind_of_array(truth if truth is not None else ds[s.MAP_FIELDS[2]], s.variable_name)
        return limits(truth.values if truth is not None else ds["model"].values, kind)

    def maps(self):
        """The 2 x 2 layout of linked maps (a holoviews ``Layout``), or None without results."""
        import holoviews as hv
        import holoviews.plotting.bokeh  # noqa: F401  (.opts() needs a loaded plotting backend)

        s = self.state
        if s.predictions is None:
            return None
        truth = s.map_field("truth")
        units = str(truth.attrs.get("units", "")) if truth is not None else ""
        variable = s.variable_name or (truth.name if truth is not None else "value") or "value"
        ds = s.predictions
        kind = kind_of_array(ds["truth"] if "truth" in ds else truth, variable)
        # One colour scale for truth, bicubic and model, fixed over the period so it does not
        # jump when the time changes; robust percentiles ignore a few extreme pixels.
        clim = self.clim or self.auto_clim()
        value_opts = colour_options(kind, clim=clim)
        coast = coastline(land_mask(ds["lat"].values, ds["lon"].values))  # thinned on large grids
        big = truth is not None and truth.size > RASTERIZE_ABOVE
        panels = []
        lat, lon = ds["lat"].values, ds["lon"].values
        common = dict(colorbar=True, frame_width=self.width - 90, aspect=aspect_of(lat, lon), tools=["hover"])
        for name in s.MAP_FIELDS:
            if s.map_field(name) is None:
                continue
            if name == "rmse":
                rmse = s.map_field("rmse")
                element = map_element(rmse, _TITLES[name], "rmse", units, **colour_options("spread", rmse.values), **common)
            else:
                # Options are set on the frames' element, not on the DynamicMap, so the four maps
                # keep their own titles and colour maps; set once (MapFrames), the group fixed
                # while the title carries the date.
                frames = MapFrames(variable, units, group=_TITLES[name], **value_opts, **common)

                def frame(time, name=name, frames=frames):
                    return frames(s.map_field(name, time), dated(_TITLES[name], time))

                # A DynamicMap keeps the plot and only swaps the data when the time changes.
                element = hv.DynamicMap(frame, streams=dict(time=s.param.selected_time))
            if big:
                from holoviews.operation.datashader import rasterize

                element = rasterize(element).opts(**common)
            panels.append(element * coast)
        # Shared axes: zooming or panning one map moves all four.
        return hv.Layout(panels).cols(2)  # axes shared by default (no .opts: app.maps)

    def maps_png(self):
        """The maps on screen (same fields, date, colour maps and limits) as a PNG (BytesIO)."""
        from ..downloads import maps_png

        s = self.state
        ds = s.predictions
        if ds is None:
            raise ValueError("no run with predictions is selected")
        variable = s.variable_name or "value"
        kind = kind_of_array(ds["truth"] if "truth" in ds else ds["model"], variable)
        value_opts = colour_options(kind, clim=self.clim or self.auto_clim())
        panels = []
        for name in s.MAP_FIELDS:
            da = s.map_field(name)
            if da is None:
                continue
            if name == "rmse":
                panels.append((_TITLES[name], da, colour_options("spread", da.values)))
            else:
                panels.append((dated(_TITLES[name], s.selected_time), da.rename(variable), value_opts))
        return maps_png(panels, coast=land_mask(ds["lat"].values, ds["lon"].values))

    def downloads(self):
        """Download buttons: predictions (NetCDF), scores (CSV), the maps on screen (PNG)."""
        from .. import downloads as D

        s = self.state
        run = s.selected_run or "run"
        w = pn.widgets.FileDownload
        return pn.Row(
            w(callback=lambda: D.predictions_file(s), filename=f"{run}-predictions.nc", label="Predictions (NetCDF)",
              css_classes=["fs-dl-predictions"], width=200, sizing_mode="fixed"),
            w(callback=lambda: D.scores_file(s), filename=f"{run}-scores.csv", label="Scores (CSV)",
              css_classes=["fs-dl-scores"], width=160, sizing_mode="fixed",
              disabled=s.scores is None),
            w(callback=self.maps_png, filename=self._png_filename(), label="Maps (PNG)",
              css_classes=["fs-dl-maps"], width=160, sizing_mode="fixed"),
            sizing_mode="stretch_width",
        )

    def _png_filename(self) -> str:
        s = self.state
        time = (s.selected_time or "").replace(" 00:00", "").replace(" ", "T").replace(":", "")
        return f"{s.selected_run or 'run'}-maps-{time or 'all'}.png"

    @param.depends("state.results_version", "clim")
    def _maps_pane(self):
        layout = self.maps()
        if layout is None:
            if self.state.selected_run is None:
                text = "*Maps appear here when a run with predictions is selected.*"
            else:
                text = "*Maps appear here when the selected run has written its predictions.*"
            return pn.pane.Markdown(text)
        return pn.Column(
            pn.pane.Markdown(f"#### Maps — run `{self.state.selected_run}`", css_classes=["fs-maps-title"]),
            self._time_widget(),
            self._clim_widget(self.auto_clim() or (0.0, 1.0)),
            self._downloads_row(),
            pn.pane.HoloViews(layout, css_classes=["fs-maps"], linked_axes=False),
            sizing_mode="stretch_width",
        )

    def _downloads_row(self):
        row = self.downloads()
        self._png_download = row[2]
        return row

    @param.depends("state.selected_time", watch=True)
    def _png_name(self):
        # The PNG's file name carries the date shown: only that name changes with the time, in
        # the same widget (a re-created row swaps a layout's children, and Chromium lays the
        # whole tab out again, maps included).
        if getattr(self, "_png_download", None) is not None:
            self._png_download.filename = self._png_filename()

    @param.depends("state.scores")
    def _scores_pane(self):
        table = self.state.scores
        if table is None:
            return pn.pane.Markdown("*Scores appear when the run has been evaluated.*")
        headline = ["model"] + [m for m in HEADLINE_METRICS if m in table.columns]
        table_kw = dict(index=False, float_format="{:.4g}".format, sizing_mode="stretch_width")
        return pn.Column(
            "#### Scores (test period, whole domain)",
            pn.pane.DataFrame(table[headline], css_classes=["fs-scores"], **table_kw),
            pn.Card(pn.pane.DataFrame(table, css_classes=["fs-scores-all"], styles={"overflow-x": "auto"}, **table_kw),
                    title=f"All {table.shape[1] - 1} metrics", collapsed=True, sizing_mode="stretch_width"),
            sizing_mode="stretch_width",
        )

    def __panel__(self):
        return pn.Column("### Results", self._maps_pane, self._scores_pane, sizing_mode="stretch_width")
