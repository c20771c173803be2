"""The view in the URL: tab, dataset, run(s), time and region in the query string.

A link copied from the address bar reopens the same view: ``?tab=Runs&dataset=demo_alps&
run=20250101-abc&time=2003-07-02&region=44,46,8,10``. :class:`UrlState` holds those values as
plain strings and is synchronised with the browser's location by Panel
(``pn.state.location.sync``); it copies them into :class:`~app.state.AppState` (and the compare
state) once the session's choices are loaded, and back whenever the user changes them.

Values from the URL are checked like any input: an unknown dataset, run or tab is ignored
(the message says so); runs are addressed by id inside the run store only.

Example
-------
>>> url = UrlState(tabs=["Data", "Runs"])
>>> url.tab, url.parse_region("44,46,8,10")
('Data', (44.0, 46.0, 8.0, 10.0))
"""

from __future__ import annotations

import logging
from typing import Any

import param

log = logging.getLogger(__name__)

#: Query-string names of the synchronised values.
QUERY = {"tab": "tab", "dataset": "dataset", "variable": "variable", "run": "run", "runs": "runs", "time": "time",
         "region": "region"}


class UrlState(param.Parameterized):
    """What the query string holds (strings; '' = not set).

    Parameters
    ----------
    tabs : list of str
        The tab names, in order (the ``tab`` value is one of them).
    """

    tab = param.String(default="", doc="Name of the open tab.")
    dataset = param.String(default="", doc="Catalogue entry of the Data tab.")
    variable = param.String(default="", doc="Variable of the dataset.")
    run = param.String(default="", doc="Selected run id (Runs tab).")
    runs = param.String(default="", doc="Compared run ids, comma separated.")
    time = param.String(default="", doc="Shown time (a date label of the predictions).")
    region = param.String(default="", doc="lat_min,lat_max,lon_min,lon_max of the picked region.")

    def __init__(self, tabs: list[str] | None = None, **params: Any):
        self._tabs = list(tabs or [])
        if self._tabs and not params.get("tab"):
            params["tab"] = self._tabs[0]
        super().__init__(**params)
        self._applying = False
        self.app = None
        self.compare = None
        self.tabs_widget = None

    # -- parsing --------------------------------------------------------------------------
    @staticmethod
    def parse_region(text: str) -> tuple[float, float, float, float] | None:
        """``"44,46,8,10"`` -> (44.0, 46.0, 8.0, 10.0); None for '' or anything else."""
        try:
            values = tuple(float(v) for v in str(text).split(","))
        except ValueError:
            return None
        if len(values) != 4 or not (values[0] < values[1] and values[2] < values[3]):
            return None
        if not (-90 <= values[0] and values[1] <= 90):
            return None
        return values  # type: ignore[return-value]

    @staticmethod
    def format_region(region) -> str:
        return "" if region is None else ",".join(f"{float(v):.4g}" for v in region)

    # -- binding ----------------------------------------------------------------------------
    def bind(self, app, tabs_widget=None) -> None:
        """Apply the URL's values to ``app`` (and the tabs), then keep the URL in step with them.

        Call after ``app.start()`` (the choices and runs must be known to check the values).
        """
        self.app, self.tabs_widget = app, tabs_widget
        self.apply()
        app.param.watch(self._from_app, ["dataset", "variable", "selected_run", "selected_time", "region"])
        if tabs_widget is not None:
            tabs_widget.param.watch(self._from_tabs, "active")
        self.param.watch(lambda *e: self.apply(), list(QUERY))

    def bind_compare(self, compare) -> None:
        """The compare state (built when its tab opens): its runs from and to the URL."""
        if self.compare is compare:  # bound already (the tab was built as the session started)
            return
        self.compare = compare
        self._apply_runs()
        compare.param.watch(self._from_compare, ["runs"])

    def apply(self) -> None:
        """Copy the URL's values into the dashboard's state (valid ones only)."""
        app = self.app
        if app is None or self._applying:
            return
        self._applying = True
        ignored = []
        try:
            if self.tabs_widget is not None and self.tab:
                if self.tab in self._tabs:
                    index = self._tabs.index(self.tab)
                    if self.tabs_widget.active != index:
                        self.tabs_widget.active = index
                else:
                    ignored.append(f"tab={self.tab!r}")
            if self.dataset and self.dataset != app.dataset:
                if self.dataset in app.param.dataset.objects:
                    app.dataset = self.dataset
                else:
                    ignored.append(f"dataset={self.dataset!r}")
            if self.variable and self.variable != app.variable:
                if self.variable in app.param.variable.objects:
                    app.variable = self.variable
                else:
                    ignored.append(f"variable={self.variable!r}")
            region = self.parse_region(self.region) if self.region else None
            if self.region and region is None:
                ignored.append(f"region={self.region!r}")
            elif region is not None and region != app.region:
                app.region = region
            if self.run and self.run != app.selected_run:
                if self.run in {r["run_id"] for r in app.runs}:
                    app.selected_run = self.run
                else:
                    ignored.append(f"run={self.run!r}")
            if self.time and self.time != app.selected_time:
                match = [t for t in app.times if t.startswith(self.time)]
                if match:
                    app.selected_time = match[0]
            self._apply_runs()
        finally:
            self._applying = False
        if ignored:
            app.message = "Not in this dashboard, ignored from the link: " + ", ".join(ignored)

    def _apply_runs(self) -> None:
        cmp = self.compare
        if cmp is None or not self.runs:
            return
        wanted = [r for r in self.runs.split(",") if r]
        valid = [r for r in wanted if r in cmp.param.runs.objects]
        if valid and valid != list(cmp.runs):
            cmp.runs = valid

    # -- state -> URL -------------------------------------------------------------------------
    def _from_app(self, *events) -> None:
        if self._applying:
            return
        app = self.app
        self._applying = True
        try:
            with param.parameterized.batch_call_watchers(self):
                self.dataset = app.dataset or ""
                self.variable = app.variable or ""
                self.run = app.selected_run or ""
                time = app.selected_time or ""
                self.time = time[:-6] if time.endswith(" 00:00") else time
                self.region = self.format_region(app.region)
        finally:
            self._applying = False

    def _from_tabs(self, event) -> None:
        if self._applying or not self._tabs:
            return
        self._applying = True
        try:
            self.tab = self._tabs[event.new] if 0 <= event.new < len(self._tabs) else ""
        finally:
            self._applying = False

    def _from_compare(self, *events) -> None:
        if self._applying:
            return
        self._applying = True
        try:
            self.runs = ",".join(self.compare.runs)
        finally:
            self._applying = False
