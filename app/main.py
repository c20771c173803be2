"""The served dashboard: ``python -m app`` (localhost) or ``panel serve app``.

Panel runs this file once per browser session, so each session gets its own
:class:`~app.state.AppState` and its own views: one session's choices, selected runs and
attributions never show in another. What sessions have in common (predictions, scores, data
checks) is read once per server (:mod:`app.cache`).

Many sessions at once (a shared login node):

- callbacks run in Panel's thread pool (``pn.config.nthreads``), never on the event loop, so
  one session reading a large file does not hold up the others' pages and clicks;
- engine imports that cost seconds (torch through the model registry) happen once per server
  (:mod:`app.warmup`); a session's page is shown first and its choices are read in a threaded
  ``pn.state.onload``;
- the browser's work per page is kept down (:mod:`app.pagecost`: canvas maps, no MathJax bundle;
  the run-store poll runs in the background, without the busy indicator);
- a tab's view is built when the tab is first opened (:mod:`app.lazytabs`), and only the open
  tab is rendered (``Tabs(dynamic=True)``); files are read when a view shows them, through the
  shared cache; panes show Panel's loading indicator while they re-render;
- the open tab, dataset, run(s), time and region live in the URL (:mod:`app.urlstate`).
"""

import os

import panel as pn
from panel.io.callbacks import PeriodicCallback

# Absolute imports: Panel loads this folder as a package of its own (``bokeh_app_<id>``), so
# relative ones would give the sessions a second copy of every app module, beside the ``app`` one
# that ``serve_setup.py`` warmed up: its caches and warm-up would then be lost on the sessions.
from app import pagecost, warmup
from app.lazytabs import LazyTabs
from app.state import AppState
from app.urlstate import UrlState
from app.views import (CompareView, DataView, ExperimentView, ExplainView, MLBenchView, ResultsView, RunsView,
                    UncertaintyView)

#: Milliseconds between two reads of the run store.
POLL_MS = 1000

#: Threads of Panel's pool for callbacks (``python -m app --num-threads`` sets it for the server).
NTHREADS = int(os.environ.get("FINESCALE_APP_THREADS", "4"))

pagecost.configure()  # canvas maps, no MathJax bundle (app.pagecost): less browser work per page
if pn.config.nthreads is None:
    pn.config.nthreads = NTHREADS
pn.extension("tabulator", sizing_mode="stretch_width", loading_indicator=True, notifications=True)


# The catalogue is the server operator's choice (python -m app --catalog), never the browser's.
CATALOG = os.environ.get("FINESCALE_CATALOG") or None
warmup.start(CATALOG)  # once per server process: torch, catalogue, default dataset, land mask
state = AppState(catalog=CATALOG)

#: The tabs, each with the function that builds its view for a session's state.
TABS = {
    "Data": lambda s: DataView(state=s),
    "Experiment": lambda s: ExperimentView(state=s),
    "Runs": lambda s: pn.Column(RunsView(state=s), ResultsView(state=s), sizing_mode="stretch_width"),
    "Compare": lambda s: CompareView(state=s),
    "Uncertainty": lambda s: UncertaintyView(state=s),
    "Explain": lambda s: ExplainView(state=s),
    "ML-Bench": lambda s: MLBenchView(state=s),
}

url = UrlState(tabs=list(TABS))
if pn.state.location is not None:
    # The query string <-> url's values (a link reopens the same view; back/forward work).
    pn.state.location.sync(url, {name: name for name in ("tab", "dataset", "variable", "run", "runs", "time", "region")})
_started = False


def _on_build(name, view) -> None:
    # The compare state's runs follow the URL once the session is started (else _start binds them).
    if name == "Compare" and _started:
        url.bind_compare(view.cmp)


# Each tab's view is built when first shown (app.lazytabs): a session starts with the open tab only.
lazy = LazyTabs({name: (lambda make=make: make(state)) for name, make in TABS.items()},
                active=list(TABS).index(url.tab) if url.tab in TABS else 0, on_build=_on_build,
                css_classes=["fs-tabs"])
tabs = lazy.tabs


@pn.depends(state.param.dataset, state.param.variable, state.param.region)
def _summary(dataset, variable, region):
    where = "whole domain" if region is None else f"{region[0]:.2f}–{region[1]:.2f}°N, {region[2]:.2f}–{region[3]:.2f}°E"
    return pn.pane.Markdown(f"**Dataset** {dataset or '…'} · **variable** {variable or '…'}\n\n"
                            f"**Region** {where}", css_classes=["fs-summary"])


template = pn.template.FastListTemplate(
    title="finescale — deep-learning downscaling",
    # A line of text: no loading indicator (its on/off is two more layouts in the browser).
    sidebar=[pn.param.ParamFunction(_summary, loading_indicator=False), pn.layout.Divider(),
             pn.pane.Markdown(state.param.message, css_classes=["fs-status-message"])],
    main=[tabs],
    sidebar_width=300,
    accent="#1f6f8b",
)


def _notifier(area):
    """A toast in this session's notification area when a run of the store finishes or fails
    (seen from any tab). The area is taken while the session is current: polls run in threads."""

    def notify(run_id: str, new_state: str) -> None:
        if area is None:
            return
        if new_state == "completed":
            area.success(f"Run {run_id} completed.", duration=8000)
        elif new_state == "failed":
            area.error(f"Run {run_id} failed — see the Runs tab.", duration=0)

    return notify


def _start() -> None:
    global _started
    # The session's choices are read here, after the page is shown. Reading them while the
    # document was made (so that its first document held the catalogue and maps) saved browser
    # layouts but lost the map refresh after a Runs-table click in about 1 of 3 tries
    # (tests/app/test_browser_work.py::test_the_url_holds_the_view_and_a_link_reopens_it).
    state.start()
    state.on_run_state = _notifier(pn.state.notifications)
    url.bind(state, tabs)
    _started = True
    if "Compare" in lazy.built():
        url.bind_compare(lazy.view("Compare").cmp)
    # Training runs in another process; the page only reads the run store, so it follows runs
    # from this page, the command line or SLURM alike. Threaded like every callback. In the
    # background: a poll is not the user waiting, so it does not turn the template's busy
    # indicator on (it did every second: two patches and a spinning icon that kept each idle
    # page redrawing, ~0.1 CPU s per second per page in Chromium). Scoped to this session's
    # document, as Panel's own background callbacks (FileSelector's refresh) are.
    PeriodicCallback(callback=state.poll, period=POLL_MS, background=True).start()


pn.state.onload(_start, threaded=bool(pn.config.nthreads))
template.servable()
