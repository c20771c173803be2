"""The ML-Bench view: the CORDEX ML-Bench scorecard of chosen runs (with the benchmark's
baselines) as a sortable table coloured per column, extrapolation skill (historical vs end-century
RMSE) side by side, and for a clicked cell (or the chosen run, test file and index) the truth,
model and bias maps of one climate index and the truth's and model's power spectra."""

from __future__ import annotations

import panel as pn
import param
from panel.viewable import Viewer

from ..colours import kind_of
from ..colours import options as colour_options
from ..maps import aspect_of, coastline, land_mask, map_element
from ..mlbench import KEYS, MLBenchState
from ..projection import grid_of
from ..state import AppState

#: Units of an index map that are not the variable's own (engine.evaluation.diagnostics).
_INDEX_UNITS = {"su": "days", "cdd": "days", "cwd": "days", "lag1_autocorr": "1"}
#: Short experiment names for chart labels.
_SHORT = {"ESD_pseudo_reality": "ESD", "Emulator_hist_future": "Emulator"}


def _column_colours(column) -> list[str]:
    """CSS backgrounds of one score column: green its lowest value, red its highest (every column is
    lower-is-better); an empty cell (a baseline without that variable) stays uncoloured."""
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    values = column.to_numpy(dtype=float)
    finite = np.isfinite(values)
    if not finite.any():
        return [""] * len(values)
    low, high = values[finite].min(), values[finite].max()
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    cmap = colormaps["RdYlGn_r"]
    # the map's middle third only: pale enough for the black text to stay legible
    return [f"background-color: {to_hex(cmap(0.2 + 0.6 * v))}" if ok else ""
            for v, ok in zip(scaled, finite)]


class MLBenchView(Viewer):
    """Scorecard table and index maps of the store's ML-Bench runs.

    Parameters
    ----------
    state : AppState
    """

    state = param.ClassSelector(class_=AppState)
    width = param.Integer(default=320, doc="Width of one map in pixels.")
    # A parameter (not a plain attribute) so that @param.depends("mb.version") watches it.
    mb = param.ClassSelector(class_=MLBenchState, doc="The ML-Bench state (made from state by default).")

    def __init__(self, **params):
        if params.get("mb") is None:
            params["mb"] = MLBenchState(app=params["state"])
        super().__init__(**params)
        w, mb = pn.widgets, self.mb
        self._runs = w.MultiChoice.from_param(mb.param.runs, name="Runs to score", css_classes=["fs-mb-runs"])
        self._baselines = w.Checkbox.from_param(mb.param.baselines, name="with the baselines")
        self._all_tests = w.Checkbox.from_param(mb.param.all_tests, name="every test set of both experiments")
        self._score = w.Button(label="Score", color="primary", css_classes=["fs-mb-score"])
        self._score.on_click(lambda event: mb.score())
        self._run = w.Select.from_param(mb.param.run, name="Run", css_classes=["fs-mb-run"])
        self._test = w.Select.from_param(mb.param.test, name="Test file", css_classes=["fs-mb-test"])
        self._variable = w.Select.from_param(mb.param.variable, name="Variable", css_classes=["fs-mb-variable"])
        self._index = w.Select.from_param(mb.param.index, name="Index", css_classes=["fs-mb-index"])
        self._season = w.Select.from_param(mb.param.season, name="Season", css_classes=["fs-mb-season"])
        self._draw = w.Button(label="Draw maps", color="primary", css_classes=["fs-mb-draw"])
        self._draw.on_click(lambda event: mb.load_maps())
        mb.param.watch(self._on_busy, "busy")

    def _on_busy(self, event) -> None:
        self._score.disabled = self._draw.disabled = event.new

    @param.depends("mb.busy", "mb.error")
    def _status(self):
        if self.mb.error:
            return pn.pane.Alert(self.mb.error, alert_type="danger", css_classes=["fs-mb-error"])
        if self.mb.busy:
            return pn.Row(pn.indicators.LoadingSpinner(value=True, size=24, sizing_mode="fixed"),
                          pn.pane.Markdown("Computing…"), css_classes=["fs-mb-busy"])
        if not self.mb.param.runs.objects:
            return pn.pane.Markdown(
                "*No ML-Bench run in this run store yet: train one with* `python -m engine mlbench train ...`",
                css_classes=["fs-mb-empty"])
        return pn.pane.Markdown("")

    @param.depends("mb.version")
    def _table(self):
        table = self.mb.table
        if table is None:
            return pn.pane.Markdown("*Choose runs and press Score: one row per model and test set, lower is "
                                    "better in every column.*", css_classes=["fs-mb-table-empty"])
        scores = self.mb.score_columns()
        formatters = {c: {"type": "money", "precision": 4, "symbol": ""} for c in scores}
        widget = pn.widgets.Tabulator(table, disabled=True, show_index=False, formatters=formatters,
                                      frozen_columns=list(KEYS[:2]), layout="fit_data_table", max_height=420,
                                      css_classes=["fs-mb-table"], sizing_mode="stretch_width")
        # each column coloured on its own scale, green the lowest (lower is better in every column)
        widget.style.apply(_column_colours, subset=scores, axis=0)
        widget.on_click(lambda event: self.mb.select_cell(event.row, event.column))
        return widget

    def spectra_plot(self):
        """Radially averaged power spectra of truth and model (log-log; holoviews Overlay), or None."""
        import holoviews as hv
        import holoviews.plotting.bokeh  # noqa: F401

        ds = self.mb.spectra
        if ds is None:
            return None
        k = ds["wavenumber"].values[1:]  # wavenumber 0 is the domain mean
        curves = [hv.Curve((k, ds[name].values[1:]), "wavenumber", "power", label=label)
                  for name, label in (("truth", "truth"), ("model", "model"))]
        title = f"Power spectra: {ds.attrs.get('variable', '')} ({ds.attrs.get('test', '')}, {ds.attrs.get('season', '')})"
        return hv.Overlay(curves).opts(logx=True, logy=True, title=title, frame_width=self.width + 60,
                                       frame_height=220, legend_position="bottom_left", tools=["hover"])

    def extrapolation_plot(self):
        """Historical vs end-century RMSE of every model and experiment, side by side (holoviews
        Bars), or None."""
        import holoviews as hv
        import holoviews.plotting.bokeh  # noqa: F401

        wide = self.mb.extrapolation()
        if wide is None or wide.empty:
            return None
        long = wide.melt(id_vars=["model", "experiment"], var_name="period", value_name="rmse")
        long["model / experiment"] = long["model"] + " / " + long["experiment"].map(_SHORT).fillna(long["experiment"])
        period = hv.Dimension("period", values=["historical", "end_century"])
        return hv.Bars(long, ["model / experiment", period], "rmse").opts(
            title=f"Extrapolation skill: {self.mb.variable} RMSE, historical vs end century (perfect predictors)",
            frame_width=2 * self.width, frame_height=220, xrotation=30, tools=["hover"], ylabel="RMSE")

    def map_layout(self):
        """Truth, model and bias maps of the chosen index (a holoviews Layout), or None."""
        import holoviews as hv
        import holoviews.plotting.bokeh  # noqa: F401  (.opts() needs a loaded plotting backend)

        ds = self.mb.maps
        if ds is None:
            return None
        var, index = str(ds.attrs.get("variable", "")), str(ds.attrs.get("index", ""))
        units = _INDEX_UNITS.get(index, str(ds["truth"].attrs.get("units", "")))
        lat, lon = ds["lat"].values, ds["lon"].values
        kind = kind_of(var, units) if index not in _INDEX_UNITS else "other"
        values = colour_options(kind, ds["truth"].values)
        common = dict(colorbar=True, frame_width=self.width - 90, aspect=aspect_of(lat, lon), tools=["hover"])
        coast = coastline(land_mask(lat, lon))
        where = f"{ds.attrs.get('test', '')}, {ds.attrs.get('season', '')}"
        # The benchmark's files carry 2-D lat/lon but no grid mapping (a curvilinear grid here):
        # such a mesh is rasterized on the server (datashader), as bokeh's own irregular mesh
        # took about 12 s per 128 x 128 map.
        curvilinear = grid_of(ds["truth"]).kind == "curvilinear"
        panels = []
        for name, title, opts in (("truth", "Truth", values), ("model", "Model", values),
                                  ("bias", "Bias (model − truth)", colour_options("error", ds["bias"].values))):
            label = f"{title}: {var} {index} ({where})"
            element = map_element(ds[name], label, f"{index}", units, group=f"mlbench {name}", **opts, **common)
            if curvilinear:
                from holoviews.operation.datashader import rasterize

                element = rasterize(element).opts(title=label, **opts, **common)
            panels.append(element * coast)
        return hv.Layout(panels).cols(3)  # axes shared by default (no .opts: app.maps)

    @param.depends("mb.maps_version")
    def _maps(self):
        layout = self.map_layout()
        if layout is None:
            return pn.pane.Markdown("*Choose a run, a test file and an index, then Draw maps.*",
                                    css_classes=["fs-mb-maps-empty"])
        return pn.pane.HoloViews(layout, css_classes=["fs-mb-maps"], linked_axes=False)

    @param.depends("mb.maps_version")
    def _spectra(self):
        plot = self.spectra_plot()
        if plot is None:
            return pn.pane.Markdown("")
        return pn.pane.HoloViews(plot, css_classes=["fs-mb-spectra"])

    @param.depends("mb.version", "mb.variable")
    def _extrapolation(self):
        plot = self.extrapolation_plot()
        if plot is None:
            return pn.pane.Markdown("")
        return pn.pane.HoloViews(plot, css_classes=["fs-mb-extrapolation"])

    def __panel__(self):
        return pn.Column(
            "### CORDEX ML-Bench",
            pn.Row(self._runs, pn.Column(self._baselines, self._all_tests), self._score, sizing_mode="stretch_width"),
            self._status,
            pn.pane.Markdown("*Click a model's cell to draw its index maps and spectra for that test file.*"),
            self._table,
            self._extrapolation,
            "#### Index maps",
            pn.Row(self._run, self._test, self._variable, self._index, self._season, self._draw,
                   sizing_mode="stretch_width"),
            self._maps,
            self._spectra,
            sizing_mode="stretch_width",
        )
