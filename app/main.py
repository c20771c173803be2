"""The served dashboard: ``python -m app`` (localhost) or ``panel serve app``.

Panel runs this file once per browser session, so each session gets its own
:class:`~app.state.AppState` and its own views: one session's choices, selected runs and
attributions never show in another. Engine imports that cost seconds (torch through the model
registry) happen after the page is shown, in ``pn.state.onload``; tabs render when first opened.
"""

import os

import panel as pn

from .state import AppState
from .views import CompareView, DataView, ExperimentView, ExplainView, ResultsView, RunsView, UncertaintyView

#: Milliseconds between two reads of the run store.
POLL_MS = 1000

pn.extension("tabulator", sizing_mode="stretch_width")

# The catalogue is the server operator's choice (python -m app --catalog), never the browser's.
state = AppState(catalog=os.environ.get("FINESCALE_CATALOG") or None)

tabs = pn.Tabs(
    ("Data", DataView(state=state)),
    ("Experiment", ExperimentView(state=state)),
    ("Runs", pn.Column(RunsView(state=state), ResultsView(state=state))),
    ("Compare", CompareView(state=state)),
    ("Uncertainty", UncertaintyView(state=state)),
    ("Explain", ExplainView(state=state)),
    dynamic=True,  # only the open tab is rendered and sent to the browser
    css_classes=["fs-tabs"],
    sizing_mode="stretch_width",
)



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


def _start() -> None:
    state.start()
    # Training runs in another process; the page only reads the run store, so it follows runs
    # from this page, the command line or SLURM alike.
    pn.state.add_periodic_callback(state.poll, period=POLL_MS)


pn.state.onload(_start)
template.servable()
