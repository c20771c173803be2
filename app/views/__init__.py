"""The dashboard's views: one :class:`panel.viewable.Viewer` per concern, all rendering one
:class:`app.state.AppState`.

- :class:`DataView` — catalogue dataset and variable
- :class:`ExperimentView` — model, training, periods and launcher form with inline validation
- :class:`RunsView` — every run in the run store, progress and loss curve of the selected one, cancel
- :class:`ResultsView` — linked maps (truth, bicubic, model, RMSE) with coastlines, time selector, scores
- :class:`CompareView` — several runs and baselines: maps, errors, RMSE, scores by season/region, spectra,
  time series at a clicked point
- :class:`UncertaintyView` — ensemble members, mean, spread, rank histogram, spread-skill
- :class:`ExplainView` — attributions (Captum) for a clicked pixel or a drawn box
- :class:`MLBenchView` — the CORDEX ML-Bench scorecard and index maps of ML-Bench runs

Example (notebook)
------------------
>>> import panel as pn
>>> pn.extension("tabulator")                 # doctest: +SKIP
>>> state = AppState(); state.start()         # doctest: +SKIP
>>> ResultsView(state=state)                  # doctest: +SKIP
"""

from .compare import CompareView
from .data import DataView
from .experiment import ExperimentView
from .explain import ExplainView
from .mlbench import MLBenchView
from .results import ResultsView
from .runs import RunsView
from .uncertainty import UncertaintyView

__all__ = ["CompareView", "DataView", "ExperimentView", "ExplainView", "MLBenchView", "ResultsView", "RunsView", "UncertaintyView"]
