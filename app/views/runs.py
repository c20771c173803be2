"""The runs view: every run in the run store, live progress of the selected one, cancel."""

from __future__ import annotations

import pandas as pd
import panel as pn
from bokeh.models.widgets.tables import NumberFormatter
import param
from panel.viewable import Viewer

from ..state import RUN_COLUMNS, AppState, _epoch_label

_FINAL = ("completed", "failed", "cancelled")


class RunsView(Viewer):
    """The runs table (also runs started from the command line or SLURM) and the progress of
    the selected run: state, epoch, progress bar, loss curve, log tail and a Cancel button.

    The table is refreshed by :meth:`AppState.poll` (a periodic callback in the served app);
    clicking a row selects the run for this view and the results view.

    Parameters
    ----------
    state : AppState
    """

    state = param.ClassSelector(class_=AppState)

    def __init__(self, **params):
        super().__init__(**params)
        self._table = pn.widgets.Tabulator(
            self._frame(),
            selectable=1,
            disabled=True,
            show_index=False,
            max_height=220,
            layout="fit_data_stretch",
            formatters={"progress": {"type": "progress", "max": 1}, "rmse": NumberFormatter(format="0.000")},
            css_classes=["fs-runs-table"],
            sizing_mode="stretch_width",
        )
        self._syncing = False
        self._table.param.watch(self._on_selection, "selection")
        self.state.param.watch(self._on_runs, ["runs", "selected_run"])
        self._cancel = pn.widgets.Button(label="Cancel run", color="danger", disabled=True, width=140,
                                         sizing_mode="fixed", css_classes=["fs-cancel"])
        self._cancel.on_click(lambda event: self.state.cancel())
        self._progress = pn.indicators.Progress(value=0, max=100, bar_color="primary", sizing_mode="stretch_width",
                                                css_classes=["fs-progress"])

    def _frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.state.runs, columns=list(RUN_COLUMNS))

    def _on_runs(self, *events) -> None:
        self._syncing = True  # replacing the table's value must not count as a user click
        try:
            frame = self._frame()
            if not frame.equals(self._table.value):
                self._table.value = frame
            ids = list(frame["run_id"])
            selected = [ids.index(self.state.selected_run)] if self.state.selected_run in ids else []
            if selected != self._table.selection:
                self._table.selection = selected
        finally:
            self._syncing = False

    def _on_selection(self, event) -> None:
        if self._syncing or not event.new:
            return
        frame = self._table.value
        if event.new[0] < len(frame):
            self.state.selected_run = str(frame.iloc[event.new[0]]["run_id"])

    @param.depends("state.run_status", "state.selected_run")
    def _status(self):
        s = self.state
        if s.selected_run is None:
            self._cancel.disabled = True
            return pn.pane.Markdown("*Select a run in the table, or start one with **Train**.*")
        status = s.run_status
        state = status.get("state", "pending")
        self._cancel.disabled = state in _FINAL
        self._progress.value = int(round(100 * float(status.get("progress") or 0.0)))
        self._progress.bar_color = {"failed": "danger", "cancelled": "warning", "completed": "success"}.get(state, "primary")
        parts = [f"**{s.selected_run}** — state **{state}**"]
        label = _epoch_label(status)
        if label:
            parts.append(f"epochs done {label}")
        if status.get("launcher"):
            parts.append(f"launcher {status['launcher']}" + (f", job {status['job_id']}" if status.get("job_id") else ""))
        summary = pn.pane.Markdown(" · ".join(parts), css_classes=["fs-run-status"])
        if not status.get("error") or state == "cancelled":
            return summary
        # Plain text: an error message is never interpreted as Markdown or HTML.
        return pn.Column(summary, pn.pane.Str(str(status["error"]), styles={"color": "#a00", "font-size": "12px"},
                                               css_classes=["fs-run-error"]))

    @param.depends("state.epochs_log")
    def _loss_curve(self):
        import holoviews as hv
        import holoviews.plotting.bokeh  # noqa: F401  (.opts() needs a loaded plotting backend)

        history = self.state.loss_history
        if history.empty:
            return pn.pane.Markdown("*The loss curve appears after the first epoch.*", height=60)
        history = history.assign(epoch=history["epoch"] + 1)  # events count from 0, people from 1
        layers = []
        for metric, group in history.groupby("metric"):
            layers.append(hv.Curve(group, "epoch", ("value", "loss"), label=metric).opts(tools=["hover"]))
            layers.append(hv.Scatter(group, "epoch", ("value", "loss"), label=metric).opts(size=6))
        epochs = sorted(set(history["epoch"]))
        plot = hv.Overlay(layers).opts(
            height=220, responsive=True, title="Loss per epoch", legend_position="top_right", show_grid=True,
            xticks=epochs if len(epochs) <= 12 else None,
        )
        return pn.pane.HoloViews(plot, sizing_mode="stretch_width", css_classes=["fs-loss-curve"])

    @param.depends("state.log_tail")
    def _logs(self):
        return pn.pane.Str(self.state.log_tail or "(no log output yet)", styles={"font-size": "11px"},
                           max_height=240, sizing_mode="stretch_width")

    def __panel__(self):
        return pn.Column(
            "### Runs",
            self._table,
            pn.Row(self._status, self._cancel),
            self._progress,
            self._loss_curve,
            pn.Card(self._logs, title="Log", collapsed=True, sizing_mode="stretch_width"),
            sizing_mode="stretch_width",
        )
