"""The served dashboard: ``python -m app`` (localhost) or ``panel serve app``.

Panel runs this file once per browser session, so each session gets its own
:class:`~app.state.AppState` and its own views: one session's choices, selected runs and
attributions never show in another. What sessions have in common (predictions, scores, data
checks) is read once per server (:mod:`app.cache`).

Many sessions at once (a shared login node):

- callbacks run in Panel's thread pool (``pn.config.nthreads``), never on the event loop, so
  one session reading a large file does not hold up the others' pages and clicks;
- engine imports that cost seconds (torch through the model registry) happen after the page is
  shown, in a threaded ``pn.state.onload``;
- only the open tab is rendered (``Tabs(dynamic=True)``); the views' states are cheap to make
  (files are read when a view shows them, through the shared cache); panes show Panel's
  loading indicator while they re-render;
- the open tab, dataset, run(s), time and region live in the URL (:mod:`app.urlstate`).
"""

import os

import panel as pn

from . import warmup
from .state import AppState
from .urlstate import UrlState
from .views import CompareView, DataView, ExperimentView, ExplainView, ResultsView, RunsView, UncertaintyView

#: Milliseconds between two reads of the run store.
POLL_MS = 1000

#: Threads of Panel's pool for callbacks (``python -m app --num-threads`` sets it for the server).
NTHREADS = int(os.environ.get("FINESCALE_APP_THREADS", "4"))

if pn.config.nthreads is None:
    pn.config.nthreads = NTHREADS
pn.extension("tabulator", sizing_mode="stretch_width", loading_indicator=True, notifications=True)


# The catalogue is the server operator's choice (python -m app --catalog), never the browser's.
CATALOG = os.environ.get("FINESCALE_CATALOG") or None
warmup.start(CATALOG)  # once per server process: torch, catalogue, default dataset, land mask
state = AppState(catalog=CATALOG)

compare = CompareView(state=state)
views = {
    "Data": DataView(state=state),
    "Experiment": ExperimentView(state=state),
    "Runs": pn.Column(RunsView(state=state), ResultsView(state=state), sizing_mode="stretch_width"),
    "Compare": compare,
    "Uncertainty": UncertaintyView(state=state),
    "Explain": ExplainView(state=state),
}
# dynamic: only the open tab is rendered and sent to the browser (its maps are built then).
tabs = pn.Tabs(*views.items(), dynamic=True, css_classes=["fs-tabs"], sizing_mode="stretch_width")
url = UrlState(tabs=list(views))
if pn.state.location is not None:
    # The query string <-> url's values (a link reopens the same view; back/forward work).
    pn.state.location.sync(url, {name: name for name in ("tab", "dataset", "variable", "run", "runs", "time", "region")})
if url.tab in views and url.tab != "Data":  # a link to another tab opens on it
    tabs.active = list(views).index(url.tab)


@pn.depends(state.param.dataset, state.param.variable, state.param.region)
def _summary(dataset, variable, region):
    where = "whole domain" if region is None else f"{region[0]:.2f}–{region[1]:.2f}°N, {region[2]:.2f}–{region[3]:.2f}°E"
    return pn.pane.Markdown(f"**Dataset** {dataset or '…'} · **variable** {variable or '…'}\n\n"
                            f"**Region** {where}", css_classes=["fs-summary"])


template = pn.template.FastListTemplate(
    title="finescale — deep-learning downscaling",
    sidebar=[_summary, pn.layout.Divider(),
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
    state.start()
    state.on_run_state = _notifier(pn.state.notifications)
    url.bind(state, tabs)
    url.bind_compare(compare.cmp)
    # Training runs in another process; the page only reads the run store, so it follows runs
    # from this page, the command line or SLURM alike. Threaded like every callback.
    pn.state.add_periodic_callback(state.poll, period=POLL_MS)


pn.state.onload(_start, threaded=bool(pn.config.nthreads))
template.servable()
