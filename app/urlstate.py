"""The view in the URL: tab, dataset, run(s), time and region in the query string.

A link copied from the address bar reopens the same view: ``?tab=Runs&dataset=demo_alps&
run=20250101-abc&time=2003-07-02&region=44,46,8,10``. :class:`UrlState` holds those values as
plain strings and is synchronised with the browser's location by Panel
(``pn.state.location.sync``); it copies them into :class:`~app.state.AppState` (and the compare
state) once the session's choices are loaded, and back whenever the user changes them.

Values from the URL are checked like any input: an unknown dataset, run or tab is ignored
(the message says so); runs are addressed by id inside the run store only.

Panel runs callbacks in a thread pool, so a change from the browser's URL and a change made in the
dashboard (the time slider) can arrive in two threads at once. Every copy, either way, runs under
one lock of this object (:meth:`UrlState._copy`): a copy waits for the other instead of being
skipped, and reads the values as they are once it runs. A copy from the URL carries only the values
the URL changed, so it never moves the maps back to a time the user has left
(``tests/app/test_urlstate.py`` forces that interleaving).

Example
-------
>>> url = UrlState(tabs=["Data", "Runs"])
>>> url.tab, url.parse_region("44,46,8,10")
('Data', (44.0, 46.0, 8.0, 10.0))
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import param

log = logging.getLogger(__name__)

#: Query-string names of the synchronised values.
QUERY = {"tab": "tab", "dataset": "dataset", "variable": "variable", "run": "run", "runs": "runs", "time": "time",
         "region": "region"}


def url_time(label: str | None) -> str:
    """How the URL writes a time label: "2003-07-02 00:00" -> "2003-07-02" (other hours kept)."""
    label = label or ""
    return label[:-6] if label.endswith(" 00:00") else label


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
        # _applying is True while this object copies values one way: the copy's own writes must
        # not be copied back (an echo). Only the thread holding _lock reads or writes it.
        self._lock = threading.RLock()
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
        self.param.watch(lambda *events: self.apply({e.name for e in events}), list(QUERY))

    def bind_compare(self, compare) -> None:
        """The compare state (built when its tab opens): its runs from and to the URL."""
        if self.compare is compare:  # bound already (the tab was built as the session started)
            return
        self.compare = compare
        # The lock, not _copy: this may run inside a copy from the URL (which opens the Compare
        # tab), and the link's runs must still be applied then.
        with self._lock:
            self._apply_runs()
        compare.param.watch(self._from_compare, ["runs"])

    def apply(self, names: set[str] | None = None) -> None:
        """Copy the URL's values into the dashboard's state (valid ones only).

        ``names``: the query values that changed (None: all). Only those are copied: a change of the
        run in the URL must not also copy back a time the user has moved away from meanwhile.
        """
        if self.app is not None:
            self._copy(self._apply_names, set(QUERY) if names is None else set(names))

    def _copy(self, copy, *args) -> None:
        """Run one copy under the lock. A copy's own writes trigger the other direction's watcher
        in this thread (an echo): ``_applying`` drops those; other threads wait on the lock."""
        with self._lock:
            if self._applying:
                return
            self._applying = True
            try:
                copy(*args)
            finally:
                self._applying = False

    def _apply_names(self, names: set[str]) -> None:
        app, ignored = self.app, []
        if "tab" in names and self.tabs_widget is not None and self.tab:
            if self.tab in self._tabs:
                index = self._tabs.index(self.tab)
                if self.tabs_widget.active != index:
                    self.tabs_widget.active = index
            else:
                ignored.append(f"tab={self.tab!r}")
        if "dataset" in names and self.dataset and self.dataset != app.dataset:
            if self.dataset in app.param.dataset.objects:
                app.dataset = self.dataset
            else:
                ignored.append(f"dataset={self.dataset!r}")
        if "variable" in names and self.variable and self.variable != app.variable:
            if self.variable in app.param.variable.objects:
                app.variable = self.variable
            else:
                ignored.append(f"variable={self.variable!r}")
        if "region" in names and self.region:
            region = self.parse_region(self.region)
            if region is None:
                ignored.append(f"region={self.region!r}")
            elif region != app.region:
                app.region = region
        if "run" in names and self.run and self.run != app.selected_run:
            if self.run in {r["run_id"] for r in app.runs}:
                app.selected_run = self.run
            else:
                ignored.append(f"run={self.run!r}")
        if "time" in names and self.time and url_time(app.selected_time) != self.time:
            match = [t for t in app.times if url_time(t) == self.time]
            if match:
                app.selected_time = match[0]
        if "runs" in names:
            self._apply_runs()
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
        self._copy(self._copy_from_app)

    def _copy_from_app(self) -> None:
        app = self.app
        with param.parameterized.batch_call_watchers(self):
            self.dataset = app.dataset or ""
            self.variable = app.variable or ""
            self.run = app.selected_run or ""
            self.time = url_time(app.selected_time)
            self.region = self.format_region(app.region)

    def _from_tabs(self, event) -> None:
        # The tab open when the copy runs (not the event's, which an older callback may carry).
        self._copy(lambda: setattr(self, "tab", self._tabs[self.tabs_widget.active]
                                   if 0 <= self.tabs_widget.active < len(self._tabs) else ""))

    def _from_compare(self, *events) -> None:
        self._copy(lambda: setattr(self, "runs", ",".join(self.compare.runs)))
