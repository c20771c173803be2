"""The dashboard's views: one :class:`panel.viewable.Viewer` per concern, all rendering one
:class:`app.state.AppState`.

- :class:`DataView` — catalogue dataset and variable
- :class:`ExperimentView` — model, training, periods and launcher form with inline validation
- :class:`RunsView` — every run in the run store, progress and loss curve of the selected one, cancel
- :class:`ResultsView` — linked maps (truth, bicubic, model, RMSE) with coastlines, time selector, scores

Example (notebook)
------------------
>>> import panel as pn
>>> pn.extension("tabulator")                 # doctest: +SKIP
>>> state = AppState(); state.start()         # doctest: +SKIP
>>> ResultsView(state=state)                  # doctest: +SKIP
"""

from .data import DataView
from .experiment import ExperimentView
from .results import ResultsView
from .runs import RunsView

__all__ = ["DataView", "ExperimentView", "ResultsView", "RunsView"]
