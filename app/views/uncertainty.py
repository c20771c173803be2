"""The uncertainty view: ensemble members, mean and spread maps, rank histogram, spread-skill.

For runs whose predictions.nc holds ``model`` with a ``member`` dimension (diffusion samples,
Monte-Carlo dropout, deep ensembles; see :mod:`engine.inference.ensembles`).
"""

from __future__ import annotations

import panel as pn
import param
from panel.viewable import Viewer

from ..analysis import EnsembleState
from ..colours import kind_of_array
from ..colours import options as colour_options
from ..maps import aspect_of, coastline, dated, land_mask, map_element, maybe_rasterize
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
        kind = kind_of_array(ds["truth"], var)
        # Colour ranges over (up to) the first 8 times, so they do not jump with the slider.
        first = ds.isel(time=slice(0, 8)) if "time" in ds.dims else ds
        values = colour_options(kind, first["truth"].values)
        spread = first["model"].std("member")
        # The error of the mean gets its own symmetric range: tied to the spread it showed
        # +-0.02 K where the errors are about 1 K.
        error = first["model"].mean("member") - first["truth"]
        coast = coastline(land_mask(lat, lon))
        opts = {"truth": values, "member": values, "mean": values,
                "spread": colour_options("spread", spread.values),
                "error": colour_options("error", error.values)}
        panels = []
        for name in ("truth", "member", "mean", "spread", "error"):
            def frame(time, member, name=name):
                title = f"Member {member}" if name == "member" else _TITLES[name]
                value = "spread" if name == "spread" else ("error" if name == "error" else var)
                # A fixed group per map: the title changes with the member and the date, and a
                # new group per frame would drop the coastline layer of the overlay.
                return map_element(ens.fields(time, member)[name], dated(title, time), value, units,
                                   group=_TITLES[name], **opts[name], **common)

            dmap = hv.DynamicMap(frame, streams=dict(time=ens.param.time, member=ens.param.member))
            panels.append(maybe_rasterize(dmap, truth.size, **common) * coast)
        return hv.Layout(panels).cols(3)  # axes shared by default (no .opts: app.maps)

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
        # Axes fitted to the bins (both the same range, so the 1:1 line is the diagonal): from
        # 0 they squashed every bin into a corner when spread and error are far from 0.
        if len(ss):
            lo = float(min(ss["spread"].min(), ss["rmse"].min()))
            hi = float(max(ss["spread"].max(), ss["rmse"].max()))
            pad = 0.08 * (hi - lo) or 0.1 * abs(hi) or 1.0
            lim = (lo - pad, hi + pad)
        else:
            lim = (0.0, 1.0)
        units = str(self.ens.dataset["truth"].attrs.get("units", "")) if self.ens.dataset is not None else ""
        suffix = f" ({units})" if units else ""
        skill = (hv.Curve(ss, "spread", "rmse").opts(line_width=2) * hv.Scatter(ss, "spread", "rmse").opts(size=7, tools=["hover"])
                 * hv.Curve([(lim[0], lim[0]), (lim[1], lim[1])]).opts(color="gray", line_dash="dashed")).opts(
            title="Spread–skill (1:1 = calibrated)", xlabel=f"spread (binned){suffix}", ylabel=f"RMSE of the mean{suffix}",
            height=320, width=380, xlim=lim, ylim=lim, show_grid=True)
        scores = self.ens.scores()
        text = " · ".join(f"{k.replace('_', ' ')} **{v:.4g}**" for k, v in scores.items())
        return pn.Column(pn.pane.Markdown(text, css_classes=["fs-ens-scores"]),
                         pn.Row(pn.pane.HoloViews(bars * flat, css_classes=["fs-rank-histogram"], sizing_mode="stretch_width"),
                                pn.pane.HoloViews(skill, css_classes=["fs-spread-skill"], sizing_mode="fixed"),
                                sizing_mode="stretch_width"),
                         sizing_mode="stretch_width")

    def __panel__(self):
        return pn.Column("### Uncertainty", pn.Row(self._run, self._member), self._maps_pane, self._calibration,
                         sizing_mode="stretch_width")
