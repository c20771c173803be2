"""The explain view: click a pixel or draw a box on the prediction map, choose a method, see
attribution maps per input channel and the channel importance (Captum via engine.explain).

The attribution maps open zoomed to the attributed area (:mod:`app.zoom`: the explained pixel
or box and the cells holding a noticeable share of the attribution); "full domain" shows the
whole grid."""

from __future__ import annotations

import numpy as np
import panel as pn
import param
from panel.viewable import Viewer

from ..analysis import ExplainState
from ..maps import (aspect_of, coastline, land_mask, map_crs_of, map_element, marker as point_marker, region_box,
                    robust_clim, tap_latlon)
from ..state import AppState


class ExplainView(Viewer):
    """Attributions of a trained run.

    Parameters
    ----------
    state : AppState
    """

    state = param.ClassSelector(class_=AppState)
    width = param.Integer(default=300, doc="Width of one map in pixels.")
    # A parameter (not a plain attribute) so that @param.depends("xp.point") watches it.
    xp = param.ClassSelector(class_=ExplainState, doc="The explain state (made from state by default).")
    zoom = param.Selector(default="attributed area", objects=["attributed area", "full domain"],
                          doc="Attribution maps zoomed to the attributed area (app.zoom) or the whole domain.")

    def __init__(self, **params):
        if params.get("xp") is None:
            params["xp"] = ExplainState(app=params["state"])
        super().__init__(**params)
        w = pn.widgets
        self._run = w.Select.from_param(self.xp.param.run, name="Run", css_classes=["fs-xp-run"])
        self._time = w.Select.from_param(self.xp.param.time, name="Time", css_classes=["fs-xp-time"])
        self._method = w.Select.from_param(self.xp.param.method, name="Method", css_classes=["fs-xp-method"])
        self._target = w.RadioButtonGroup.from_param(self.xp.param.target, name="Explain", css_classes=["fs-xp-target"])
        self._steps = w.IntInput.from_param(self.xp.param.n_steps, name="Steps / samples")
        self._zoom = w.RadioButtonGroup.from_param(self.param.zoom, name="Maps show", css_classes=["fs-xp-zoom"])
        self._go = w.Button(label="Explain", color="primary", css_classes=["fs-explain"])
        self._go.on_click(self._on_go)
        self._tap = self._bounds = None
        self.xp.param.watch(lambda e: setattr(self._go, "disabled", e.new), "busy")

    def _on_go(self, event) -> None:
        from panel.io.state import set_curdoc

        doc = pn.state.curdoc  # this session's document, captured on the event loop
        dispatch = None
        if doc is not None and doc.session_context:
            def run_in_session(fn):
                # On the loop *and* with this session as Panel's current document: panes that
                # re-render then build their Bokeh models for this page (without it the new
                # plots arrive unlaid-out).
                def callback():
                    with set_curdoc(doc):
                        fn()
                doc.add_next_tick_callback(callback)

            dispatch = run_in_session
        self.xp.explain_async(dispatch)

    def _on_tap(self, x=None, y=None):
        if x is not None and y is not None:
            # Taps come in the map's CRS (native x/y on a projected grid): the point is lat/lon.
            pred = self.xp.prediction()
            self.xp.point = tap_latlon(pred, x, y) if pred is not None else (float(y), float(x))
            self.xp.target = "pixel"

    def _on_bounds(self, bounds=None):
        if bounds is None:
            return
        pred = self.xp.prediction()
        if pred is not None:  # a box drawn in the map's CRS, as the lon/lat box around it
            from ..projection import bounds_to_latlon

            bounds = bounds_to_latlon(map_crs_of(pred), bounds)
            if bounds is None:
                return
        x0, y0, x1, y1 = bounds
        if x1 > x0 and y1 > y0:
            self.state.region = (float(y0), float(y1), float(x0), float(x1))
            self.xp.target = "region"

    def prediction_map(self):
        """The prediction at the chosen time, with a Tap (pixel) and a BoundsXY (box) stream."""
        import holoviews as hv
        import holoviews.plotting.bokeh  # noqa: F401  (.opts() needs a loaded plotting backend)

        xp = self.xp
        pred = xp.prediction()
        if pred is None:
            return None
        lat, lon = pred["lat"].values, pred["lon"].values
        ds = xp.prediction_dataset
        common = dict(colorbar=True, frame_width=self.width + 60, aspect=aspect_of(lat, lon),
                      tools=["hover", "tap", "box_select"])
        clim = robust_clim(ds["truth"].values if "truth" in ds else pred.values)
        dmap = hv.DynamicMap(lambda time: map_element(xp.prediction(time), "Prediction: click a pixel or draw a box",
                                                      str(ds.attrs.get("variable", "value")),
                                                      str(pred.attrs.get("units", "")), cmap="RdYlBu_r", clim=clim,
                                                      **common),
                             streams=dict(time=xp.param.time))
        self._tap = hv.streams.Tap(source=dmap, x=None, y=None)
        self._tap.add_subscriber(self._on_tap)
        self._bounds = hv.streams.BoundsXY(source=dmap, bounds=None)
        self._bounds.add_subscriber(self._on_bounds)
        marker = hv.DynamicMap(
            lambda point: point_marker(point, color="black", marker="x", size=14, line_width=3),
            streams=dict(point=xp.param.point))
        region = hv.DynamicMap(lambda region: region_box(region), streams=dict(region=self.state.param.region))
        return dmap * coastline(land_mask(lat, lon)) * marker * region

    @param.depends("xp.run_version")
    def _prediction_pane(self):
        if self.xp.run is None:
            return pn.pane.Markdown("*Attributions need a completed run with a checkpoint: train one first.*",
                                    css_classes=["fs-xp-empty"])
        return pn.pane.HoloViews(self.prediction_map(), css_classes=["fs-xp-prediction"], linked_axes=False)

    @param.depends("xp.point", "xp.target", "state.region", "xp.busy", "xp.error")
    def _status(self):
        xp = self.xp
        if xp.error:
            return pn.pane.Alert(xp.error, alert_type="danger", css_classes=["fs-xp-error"])
        if xp.busy:
            return pn.Row(pn.indicators.LoadingSpinner(value=True, size=24, sizing_mode="fixed"),
                          pn.pane.Markdown(f"Computing {xp.method.replace('_', ' ')}…"), css_classes=["fs-xp-busy"])
        if xp.target == "pixel":
            what = f"pixel **{xp.point[0]:.2f}°N, {xp.point[1]:.2f}°E**" if xp.point else "*no pixel clicked yet*"
        elif xp.target == "region":
            r = self.state.region
            what = f"box **{r[0]:.2f}–{r[1]:.2f}°N, {r[2]:.2f}–{r[3]:.2f}°E**" if r else "*no box drawn yet*"
        else:
            what = "the whole domain"
        return pn.pane.Markdown(f"Explaining {what}", css_classes=["fs-xp-status"])

    def attribution_layout(self):
        """Attribution maps per input channel (Layout) and the importance bars, or None."""
        import holoviews as hv
        import holoviews.plotting.bokeh  # noqa: F401  (.opts() needs a loaded plotting backend)

        from ..zoom import attributed_extent, explained_target

        maps = self.xp.channel_maps()
        if not maps:
            return None
        point, region = explained_target(self.xp.result) if self.zoom == "attributed area" else (None, None)
        panels = []
        for name, da in maps.items():
            lat, lon = da["lat"].values, da["lon"].values
            top = robust_clim(da.values, hi=99.5, symmetric=True)[1]
            label = name.replace("input_", "input: ").replace("static_", "static: ").replace("_", " ")
            element = map_element(da, label, "attribution", "", cmap="RdBu_r", clim=(-top, top), colorbar=True,
                                  frame_width=self.width - 90, aspect=aspect_of(lat, lon), tools=["hover"])
            panel = element * coastline(land_mask(lat, lon))
            # Zoomed to where the attribution is (a pixel's receptive field is a speck on the
            # whole domain); "full domain" shows everything.
            extent = attributed_extent(da, point=point, region=region) if point is not None else None
            if extent is not None:
                panel = panel.opts(xlim=extent[:2], ylim=extent[2:])
            panels.append(panel)
        imp = self.xp.importance()
        bars = hv.Bars(imp, "channel", "importance").opts(
            title="Channel importance (share of |attribution|)", height=260, responsive=True, tools=["hover"],
            color="#1f6f8b", ylim=(0, float(np.nanmax(imp["importance"])) * 1.1 if len(imp) else 1))
        return hv.Layout(panels).cols(3).opts(shared_axes=False), bars

    # Info, importance bars and maps are three panes updated separately: the bars and the grid
    # of maps rebuilt in one pane left the maps unlaid-out in the served page (Panel 1.9).
    @param.depends("xp.version")
    def _info(self):
        from ..downloads import attributions_file

        ds = self.xp.result
        if ds is None:
            return pn.pane.Markdown("*Attribution maps appear here.*", css_classes=["fs-xp-info"])
        info = f"method **{ds.attrs.get('method')}**, time {str(ds['time'].values[0])[:16]}"
        if "convergence_delta" in ds:
            info += f", IG convergence delta {float(np.abs(ds['convergence_delta']).max()):.3g}"
        download = pn.widgets.FileDownload(
            callback=lambda: attributions_file(self.xp.result), label="Attributions (NetCDF)",
            filename=f"{self.xp.run or 'run'}-attributions-{ds.attrs.get('method', '')}.nc",
            css_classes=["fs-dl-attributions"], width=220, sizing_mode="fixed")
        return pn.Row(pn.pane.Markdown(info, css_classes=["fs-xp-info"]), download, sizing_mode="stretch_width")

    @param.depends("xp.version")
    def _importance(self):
        res = self.attribution_layout()
        if res is None:
            return pn.pane.Markdown("")
        return pn.pane.HoloViews(res[1], css_classes=["fs-xp-importance"], sizing_mode="stretch_width",
                                 linked_axes=False)

    @param.depends("xp.version", "zoom")
    def _maps(self):
        res = self.attribution_layout()
        if res is None:
            return pn.pane.Markdown("")
        # linked_axes=False: Panel links the axes of every HoloViews pane with the same
        # dimensions; the prediction map's zoom must not drive the LR/HR attribution maps.
        return pn.pane.HoloViews(res[0], css_classes=["fs-xp-maps"], linked_axes=False)

    def _result(self):
        """The result panes (info, importance bars, attribution maps) in a column."""
        return pn.Column(self._info, self._importance, self._maps, sizing_mode="stretch_width")

    def __panel__(self):
        return pn.Column(
            "### Explain",
            pn.Row(self._run, self._time, self._method),
            pn.Row(self._target, self._steps, self._go, self._zoom),
            self._status,
            self._prediction_pane,
            self._info,
            self._importance,
            self._maps,
            sizing_mode="stretch_width",
        )
