"""The served dashboard: ``panel serve app`` (or ``make app``, bound to 127.0.0.1).

Panel runs this file once per browser session, so each session gets its own
:class:`~app.state.AppState`; engine imports that cost seconds (torch through the model
registry) happen after the page is shown, in ``pn.state.onload``.
"""

import panel as pn

from .state import AppState
from .views import DataView, ExperimentView, ResultsView, RunsView

#: Milliseconds between two reads of the run store.
POLL_MS = 1000

pn.extension("tabulator", sizing_mode="stretch_width")

state = AppState()

template = pn.template.FastListTemplate(
    title="finescale — deep-learning downscaling",
    sidebar=[DataView(state=state), ExperimentView(state=state)],
    main=[RunsView(state=state), ResultsView(state=state)],
    sidebar_width=380,
    accent="#1f6f8b",
)


def _start() -> None:
    state.start()
    # Training runs in another process; the page only reads the run store, so it follows runs
    # from this page, the command line or SLURM alike.
    pn.state.add_periodic_callback(state.poll, period=POLL_MS)


pn.state.onload(_start)
template.servable()
