"""The dashboard's state: plain :class:`param.Parameterized` objects, no widgets.

Everything the dashboard shows is derived from :class:`AppState`; the views in
:mod:`app.views` only render it and write user choices back into it. That keeps the logic
testable without a browser (change a parameter, look at the derived ones) and lets the same
state drive a served page and notebook widgets.

The state talks to the engine only through its public API: the catalogue
(:mod:`engine.data.catalog`), the registries (:mod:`engine.registry`), the configuration
(:class:`engine.config.ExperimentConfig`), the launchers (:func:`engine.launch.submit`,
:func:`engine.launch.attach`) and the run store (:class:`engine.runs.RunStore`). It never
reaches into a training process: progress is read from the run folder by :meth:`AppState.poll`.

Example
-------
>>> state = AppState(run_root="/tmp/finescale-runs")   # doctest: +SKIP
>>> state.load_choices()                               # doctest: +SKIP
>>> state.dataset = "demo_alps"                        # doctest: +SKIP
>>> state.config_error                                 # doctest: +SKIP
''
>>> run_id = state.train()                             # doctest: +SKIP
"""

from __future__ import annotations

import threading
from typing import Any

import param

from .form import DEMO_TRAINING, MAX_CONFIG_BYTES, FormState
from .runs import JOB_CHECK_SECONDS, RUN_COLUMNS, RunsState
from .values import _as_list, _epoch_label, _valid_mask, launcher_choices, set_choices

__all__ = ["AppState", "DEMO_TRAINING", "JOB_CHECK_SECONDS", "MAX_CONFIG_BYTES", "RUN_COLUMNS", "FormState",
           "launcher_choices", "set_choices", "_as_list", "_epoch_label", "_valid_mask"]


class AppState(RunsState):
    """All state of the dashboard: data choice, experiment form, runs, selected run and time.

    Built in layers, one module each: :mod:`~app.state.form` (the form's fields and the
    configuration), :mod:`~app.state.choices` (choices from the catalogue and registries),
    :mod:`~app.state.checks` (checks beside the fields), :mod:`~app.state.results` (the selected
    run's results), :mod:`~app.state.runs` (launching, polling, progress).

    Parameters
    ----------
    run_root : str
        The run store folder (default ``$FINESCALE_RUNS`` or ``./runs``). The dashboard only
        reads and writes below it: runs are addressed by id, never by a path from the user.
    catalog : str or None
        The intake catalogue (None: the engine's default, with the embedded demo).
    """

    def __init__(self, **params: Any):
        super().__init__(**params)
        from engine.runs import RunStore

        self._store = RunStore(self.run_root)
        with param.edit_constant(self):
            self.run_root = str(self._store.root)
        self._handles: dict[str, Any] = {}  # launcher handles of runs submitted from this session
        self._run_names: dict[str, str] = {}  # run id -> config name (config.yaml never changes)
        self._run_vars: dict[str, tuple[str, str]] = {}  # run id -> (variable, units)
        self._predictions = None  # xarray.Dataset of the selected run, in memory
        self._predictions_key: tuple | None = None
        self._static_cache: dict[tuple, Any] = {}
        self._rmse = None
        self._job_checked: dict[str, float] = {}
        self._launch_extra: dict[str, Any] = {}  # launch.extra of a loaded file (YAML only)
        self._switched = ""  # why a loaded file's launcher was switched (see apply_config)
        self._poll_lock = threading.Lock()
        #: Called as ``on_run_state(run_id, state)`` when a run reaches a final state between two
        #: polls (the served app shows a notification); None: nobody listens.
        self.on_run_state = None
        from ..schema import ExperimentOptions

        with param.edit_constant(self):
            self.options = ExperimentOptions()
        self.options.param.watch(lambda *events: self._validate(), [n for n in self.options.param if n not in ("name", "version")])
        self.options.param.watch(lambda *events: self._update_predictors(), ["data_downscaling", "data_lowres"])

    # ======================================================================================
    # Choices: catalogue and registries
    # ======================================================================================
    def start(self) -> None:
        """Read the choices and the run store once (the served app then polls periodically)."""
        self.load_choices()
        self.poll()

    @property
    def store(self):
        """The :class:`engine.runs.RunStore` this dashboard reads."""
        return self._store
