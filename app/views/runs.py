"""The runs view: every run in the run store, live progress of the selected one, cancel."""

from __future__ import annotations

import pandas as pd
import panel as pn
from bokeh.models.widgets.tables import NumberFormatter
import param
from panel.viewable import Viewer

from engine.runs import FINAL_STATES as _FINAL  # died and corrupt runs are final too

from ..serial import one_at_a_time
from ..state import RUN_COLUMNS, AppState, _epoch_label


def _duration(seconds: float) -> str:
    """'1 h 05 min', '3 min 20 s', '12 s'."""
    seconds = int(round(max(seconds, 0)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h} h {m:02d} min"
    return f"{m} min {s:02d} s" if m else f"{s} s"


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
            # Several rows may be ticked (ctrl/shift-click): they are the runs the compare view
            # shows; the last clicked is the selected run of the progress and results views.
            selectable=True,
            disabled=True,
            show_index=False,
            max_height=260,
            layout="fit_data_fill",
            # Wide enough for every state name ("completed", "cancelled"), never cut.
            widths={"state": 110, "progress": 110, "variable": 90, "units": 80, "epoch": 70, "rmse": 80},
            titles={"rmse": "rmse (model)", "units": "units"},
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

    @one_at_a_time  # an older read of the store must not overwrite a newer one (a run left "running")
    def _on_runs(self, *events) -> None:
        self._syncing = True  # replacing the table's value must not count as a user click
        try:
            frame = self._frame()
            if not frame.equals(self._table.value):
                self._table.value = frame
            ids = list(frame["run_id"])
            picked = [r for r in self.state.picked_runs if r in ids]
            if self.state.selected_run in ids and self.state.selected_run not in picked:
                picked = [self.state.selected_run]
            selected = [ids.index(r) for r in picked]
            if sorted(selected) != sorted(self._table.selection):
                self._table.selection = selected
        finally:
            self._syncing = False

    def _on_selection(self, event) -> None:
        if self._syncing or not event.new:
            return
        frame = self._table.value
        rows = [i for i in event.new if i < len(frame)]
        if not rows:
            return
        added = [i for i in rows if i not in (event.old or [])]
        self.state.picked_runs = [str(frame.iloc[i]["run_id"]) for i in rows]
        self.state.selected_run = str(frame.iloc[(added or rows)[-1]]["run_id"])

    @param.depends("state.run_status", "state.selected_run", "state.progress_info")
    def _status(self):
        s = self.state
        if s.selected_run is None:
            self._cancel.disabled = True
            return pn.pane.Markdown("*Select a run in the table, or start one with **Train**.*")
        status = s.run_status
        state = status.get("state", "pending")
        self._cancel.disabled = state in _FINAL
        self._progress.value = int(round(100 * float(status.get("progress") or 0.0)))
        self._progress.bar_color = {"failed": "danger", "died": "danger", "corrupt": "danger", "cancelled": "warning", "completed": "success"}.get(state, "primary")
        parts = [f"**{s.selected_run}** — state **{state}**"]
        label = _epoch_label(status)
        if label:
            parts.append(f"epochs done {label}")
        info = s.progress_info
        if info.get("step") and state not in _FINAL:
            steps = f"/{info['steps']}" if info.get("steps") else ""
            parts.append(f"epoch {info['epoch']}, step {info['step']}{steps}")
            if "loss" in info:
                parts.append(f"loss {info['loss']:.4g}")
        if info.get("samples_per_s"):
            parts.append(f"{info['samples_per_s']:.0f} samples/s")
        if info.get("eta_s") is not None and state not in _FINAL:
            parts.append(f"ETA {_duration(info['eta_s'])}")
        if status.get("launcher"):
            parts.append(f"launcher {status['launcher']}" + (f", job {status['job_id']}" if status.get("job_id") else ""))
        summary = pn.pane.Markdown(" · ".join(parts), css_classes=["fs-run-status"])
        if not status.get("error") or state == "cancelled":
            return summary
        # Plain text: an error message is never interpreted as Markdown or HTML.
        return pn.Column(summary, pn.pane.Str(str(status["error"]), styles={"color": "#a00", "font-size": "12px"},
                                               css_classes=["fs-run-error"]))

    @param.depends("state.epochs_log", "state.step_log")
    def _loss_curve(self):
        import holoviews as hv
        import holoviews.plotting.bokeh  # noqa: F401  (.opts() needs a loaded plotting backend)

        history = self.state.loss_history
        steps = pd.DataFrame(self.state.step_log, columns=["epoch", "metric", "value"])
        if history.empty and steps.empty:
            return pn.pane.Markdown("*The loss curve appears after the first training steps.*", height=60)
        history = history.assign(epoch=history["epoch"] + 1)  # events count from 0, people from 1
        layers = []
        # Step losses (written every few seconds) as a thin line, so progress shows within an epoch.
        for metric, group in steps.groupby("metric"):
            layers.append(hv.Curve(group, "epoch", ("value", "loss"), label=metric).opts(
                line_width=1, alpha=0.6, tools=["hover"]))
        for metric, group in history.groupby("metric"):
            layers.append(hv.Curve(group, "epoch", ("value", "loss"), label=metric).opts(tools=["hover"]))
            layers.append(hv.Scatter(group, "epoch", ("value", "loss"), label=metric).opts(size=6))
        epochs = sorted(set(history["epoch"]))
        plot = hv.Overlay(layers).opts(
            height=220, responsive=True, title="Loss (per step and per epoch)", legend_position="top_right", show_grid=True,
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
