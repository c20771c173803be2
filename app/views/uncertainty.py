"""The uncertainty view: ensemble members, mean and spread maps, rank histogram, spread-skill.

For runs whose predictions.nc holds ``model`` with a ``member`` dimension (diffusion samples,
Monte-Carlo dropout, deep ensembles; see :mod:`engine.inference.ensembles`).
"""

from __future__ import annotations

import panel as pn
import param
from panel.viewable import Viewer

from ..analysis import EnsembleState
from ..maps import aspect_of, coastline, land_mask, map_element, maybe_rasterize, robust_clim
from ..state import AppState

_TITLES = {"truth": "Truth", "member": "Member", "mean": "Ensemble mean", "spread": "Spread (member std)",
           "error": "Error of the mean"}


class UncertaintyView(Viewer):
    """Ensemble maps and calibration plots of one run.

    Parameters
    ----------
    state : AppState
    """

    state = param.ClassSelector(class_=AppState)
    width = param.Integer(default=300, doc="Width of one map in pixels.")
    # A parameter (not a plain attribute) so that @param.depends("ens.version") watches it.
    ens = param.ClassSelector(class_=EnsembleState, doc="The ensemble state (made from state by default).")

    def __init__(self, **params):
        if params.get("ens") is None:
            params["ens"] = EnsembleState(app=params["state"])
        super().__init__(**params)
        w = pn.widgets
        self._run = w.Select.from_param(self.ens.param.run, name="Ensemble run", css_classes=["fs-ens-run"])
        self._member = w.IntSlider.from_param(self.ens.param.member, name="Member", css_classes=["fs-ens-member"])

    def _time_widget(self):
        if len(self.ens.param.time.objects) < 2:
            return pn.pane.Markdown("")
        return pn.widgets.DiscreteSlider.from_param(self.ens.param.time, name="Time", css_classes=["fs-ens-time"],
                                                    sizing_mode="stretch_width")

    def maps(self):
        """Truth, one member, mean, spread and error of the mean (a Layout), or None."""
        import holoviews as hv
        import holoviews.plotting.bokeh  # noqa: F401  (.opts() needs a loaded plotting backend)

        ens = self.ens
        fields = ens.fields()
        if not fields:
            return None
        ds = ens.dataset
        truth = fields["truth"]
        lat, lon = truth["lat"].values, truth["lon"].values
        units = str(ds["truth"].attrs.get("units", ""))
        var = str(ds.attrs.get("variable", "value")) or "value"
        common = dict(colorbar=True, frame_width=self.width - 90, aspect=aspect_of(lat, lon), tools=["hover"])
        clim = robust_clim(ds["truth"].values)
        spread_top = robust_clim(ds["model"].isel(time=slice(0, 8)).std("member").values, hi=99.5)[1] if "time" in ds.dims \
            else robust_clim(fields["spread"].values)[1]
        coast = coastline(land_mask(lat, lon))
        opts = {"truth": dict(cmap="RdYlBu_r", clim=clim), "member": dict(cmap="RdYlBu_r", clim=clim),
                "mean": dict(cmap="RdYlBu_r", clim=clim), "spread": dict(cmap="viridis", clim=(0.0, spread_top or 1.0)),
                "error": dict(cmap="RdBu_r", clim=(-3 * (spread_top or 1.0), 3 * (spread_top or 1.0)))}
        panels = []
        for name in ("truth", "member", "mean", "spread", "error"):
            def frame(time, member, name=name):
                title = f"Member {member}" if name == "member" else _TITLES[name]
                value = "spread" if name == "spread" else ("error" if name == "error" else var)
                return map_element(ens.fields(time, member)[name], title, value, units, **opts[name], **common)

            dmap = hv.DynamicMap(frame, streams=dict(time=ens.param.time, member=ens.param.member))
            panels.append(maybe_rasterize(dmap, truth.size, **common) * coast)
        return hv.Layout(panels).cols(3).opts(shared_axes=True)

    @param.depends("ens.version")
    def _maps_pane(self):
        if self.ens.run is None:
            return pn.pane.Markdown(
                "*No run with ensemble predictions yet. Train a diffusion run (training.learning = diffusion) or a "
                "model with dropout and set inference.members > 1; its predictions then have members.*",
                css_classes=["fs-ens-empty"])
        layout = self.maps()
        return pn.Column(pn.pane.Markdown(f"{self.ens.members} members", css_classes=["fs-ens-members"]),
                         self._time_widget(), pn.pane.HoloViews(layout, css_classes=["fs-ens-maps"], linked_axes=False),
                         sizing_mode="stretch_width")

    @param.depends("ens.version")
    def _calibration(self):
        import holoviews as hv
        import holoviews.plotting.bokeh  # noqa: F401  (.opts() needs a loaded plotting backend)

        if self.ens.run is None:
            return pn.pane.Markdown("")
        ranks = self.ens.rank_histogram()
        m = self.ens.members
        bars = hv.Bars([(int(r), float(v)) for r, v in zip(ranks["rank"].values, ranks.values)], "rank", "frequency").opts(
            title="Rank histogram (flat = calibrated)", height=280, responsive=True, tools=["hover"], color="#1f6f8b")
        flat = hv.HLine(1.0 / (m + 1)).opts(color="black", line_dash="dashed")
        ss = self.ens.spread_skill()
        top = float(max(ss["spread"].max(), ss["rmse"].max())) if len(ss) else 1.0
        skill = (hv.Curve(ss, "spread", "rmse").opts(line_width=2) * hv.Scatter(ss, "spread", "rmse").opts(size=7, tools=["hover"])
                 * hv.Curve([(0, 0), (top, top)]).opts(color="gray", line_dash="dashed")).opts(
            title="Spread–skill (1:1 = calibrated)", xlabel="spread (binned)", ylabel="RMSE of the mean", height=280,
            responsive=True, show_grid=True)
        scores = self.ens.scores()
        text = " · ".join(f"{k.replace('_', ' ')} **{v:.4g}**" for k, v in scores.items())
        return pn.Column(pn.pane.Markdown(text, css_classes=["fs-ens-scores"]),
                         pn.Row(pn.pane.HoloViews(bars * flat, css_classes=["fs-rank-histogram"], sizing_mode="stretch_width"),
                                pn.pane.HoloViews(skill, css_classes=["fs-spread-skill"], sizing_mode="stretch_width"),
                                sizing_mode="stretch_width"),
                         sizing_mode="stretch_width")

    def __panel__(self):
        return pn.Column("### Uncertainty", pn.Row(self._run, self._member), self._maps_pane, self._calibration,
                         sizing_mode="stretch_width")
