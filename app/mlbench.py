"""State of the ML-Bench tab (no widgets): the CORDEX ML-Bench scorecard and index maps of the
ML-Bench runs in the run store.

ML-Bench runs are run folders of the dashboard's store holding ``mlbench.json`` (trained with
``python -m engine mlbench train``); their ``submission/`` files are scored by the engine
(:func:`engine.mlbench.scoring.scorecard`: one row per model x test set, the baselines
``interpolation``, ``linear_regression`` and ``climatology`` beside them) and drawn as index maps
(:func:`engine.mlbench.scoring.index_maps`: truth, model and bias of one climate index on one
test file). Both are computed once per server for every session (:mod:`app.cache`, keyed by
the runs' files) in the caller's thread: Panel's thread pool in the served app.

Example
-------
>>> app = AppState(); app.poll()                       # doctest: +SKIP
>>> mb = MLBenchState(app=app)                         # doctest: +SKIP
>>> mb.runs = mb.param.runs.objects; mb.score()        # doctest: +SKIP
>>> mb.table.head()                                    # doctest: +SKIP
>>> mb.load_maps(); mb.maps["bias"]                    # doctest: +SKIP
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import param

from .serial import one_at_a_time
from .state import AppState, set_choices

log = logging.getLogger(__name__)

#: Columns that name a scorecard row (engine.mlbench.scoring.KEYS); every other column is a score.
KEYS = ("model", "domain", "experiment", "test", "period", "mode", "gcm")

#: Seasons of the index maps ("annual": the whole test period).
SEASONS = ("annual", "DJF", "MAM", "JJA", "SON")


def mlbench_runs(app: AppState) -> list[str]:
    """Ids of the store's ML-Bench runs (a ``mlbench.json`` and a ``submission/`` folder), in the
    order of ``app.runs`` (newest first)."""
    from engine.runs import RunStoreError

    out = []
    for row in app.runs:
        try:
            path = app.store.get(row["run_id"]).path
        except RunStoreError:
            continue
        if (path / "mlbench.json").is_file() and (path / "submission").is_dir():
            out.append(row["run_id"])
    return out


def _version(path: Path) -> tuple:
    """What changes when a run's submission is rewritten: every file's name, mtime and size."""
    files = sorted(p for p in (path / "submission").rglob("*") if p.is_file())
    return tuple((str(p.relative_to(path)), p.stat().st_mtime_ns, p.stat().st_size) for p in files)


def index_choices(variable: str) -> list[str]:
    """Index names of a variable's scorecard columns that :func:`index_maps` can draw
    (``bias_txx`` -> ``txx``); indices with options (the 98th percentile) are left out."""
    from engine.evaluation.diagnostics import INDEX_METRICS
    from engine.mlbench.scoring import INDICES_FOR

    out = []
    for column in INDICES_FOR.get(variable, ()):
        index, options = INDEX_METRICS[column]
        if not options:
            out.append(index)
    return out


def _log_failure(what: str, exc: Exception) -> None:
    """Bad input (ValueError: MLBenchError, MetricError) is the user's to fix and shown to them;
    anything else also gets its traceback in the server log."""
    if isinstance(exc, ValueError):
        log.info("%s failed: %s", what, exc)
    else:
        log.exception("%s failed", what)


class MLBenchState(param.Parameterized):
    """The ML-Bench scorecard of chosen runs and the index maps of one run.

    Parameters
    ----------
    app : AppState
        The session's state (its run list says which ML-Bench runs exist).
    """

    app = param.ClassSelector(class_=AppState, constant=True)
    runs = param.ListSelector(default=[], objects=[], doc="ML-Bench run ids to score.")
    baselines = param.Boolean(default=True, doc="Score the interpolation, linear-regression and climatology baselines too.")
    all_tests = param.Boolean(default=False, doc="Also score each run on the other experiment's test sets.")
    table = param.DataFrame(default=None, allow_None=True, doc="The scorecard (one row per model x test set).")

    run = param.Selector(default=None, objects=[], allow_None=True, doc="Run of the index maps.")
    test = param.Selector(default=None, objects=[], allow_None=True,
                          doc="Test file of the index maps: 'period/mode/gcm'.")
    variable = param.Selector(default="tasmax", objects=["tasmax", "pr"])
    index = param.Selector(default="mean", objects=[], doc="Climate index of the maps.")
    season = param.Selector(default="annual", objects=list(SEASONS))
    maps = param.Parameter(default=None, doc="xarray.Dataset with truth, model and bias of the chosen index.")
    spectra = param.Parameter(default=None, doc="xarray.Dataset: radially averaged power spectra (truth, model) "
                                                "of the maps' run, test file and variable.")

    busy = param.Boolean(default=False, doc="A scorecard or maps are being computed.")
    error = param.String(default="", doc="Why the last scorecard or maps failed ('' if they did not).")
    version = param.Integer(default=0, doc="Bumped when the table changes.")
    maps_version = param.Integer(default=0, doc="Bumped when the maps change.")

    def __init__(self, **params: Any):
        super().__init__(**params)
        from engine.mlbench.protocol import VARIABLES

        self.param.variable.objects = list(VARIABLES)
        self._on_variable()
        self.app.param.watch(lambda *e: self.refresh(), "runs")
        self.refresh()

    @one_at_a_time  # the store's poll and a session's own change may both refresh
    def refresh(self) -> None:
        """Offer the store's ML-Bench runs (keeping the chosen ones that still exist)."""
        ids = mlbench_runs(self.app)
        if ids != self.param.runs.objects:
            self.param.runs.objects = ids
            # Drop only the runs that left the store, reading the choice as it is now: a choice
            # made in the browser meanwhile (another callback thread) is kept, not overwritten.
            if any(r not in ids for r in self.runs):
                self.runs = [r for r in self.runs if r in ids]
        set_choices(self, "run", ids)

    @param.depends("run", watch=True)
    def _on_run(self) -> None:
        """The test files of the run's experiment (``period/mode/gcm``)."""
        labels = []
        if self.run is not None:
            try:
                labels = self.tests_of(self.run)
            except Exception as exc:  # an unreadable mlbench.json: said, not raised
                self.error = f"{self.run}: {exc}"
        set_choices(self, "test", labels)

    @param.depends("variable", watch=True)
    def _on_variable(self) -> None:
        set_choices(self, "index", index_choices(self.variable), "mean")

    def path_of(self, run_id: str) -> Path:
        """The run folder of an id (confined to the run store)."""
        return self.app.store.get(run_id).path

    def tests_of(self, run_id: str) -> list[str]:
        """``period/mode/gcm`` of every test file of a run's experiment, in the benchmark's order."""
        from engine.mlbench.experiments import load_run
        from engine.mlbench.protocol import get_domain, get_experiment

        cfg, _ = load_run(self.path_of(run_id))
        dom, exp = get_domain(cfg.domain), get_experiment(cfg.experiment)
        return list(dict.fromkeys(f"{t.period}/{t.mode}/{t.gcm(dom)}" for t in exp.tests))

    # -- scorecard ---------------------------------------------------------------------------
    def score(self) -> None:
        """Score the chosen runs into :attr:`table` (``error`` says why not)."""
        if not self.runs:
            self.error = "Choose at least one ML-Bench run to score."
            return
        from . import cache

        self.busy, self.error = True, ""
        try:
            paths = [self.path_of(r) for r in self.runs]
            key = ("mlbench-scorecard", tuple((str(p), _version(p)) for p in paths), self.baselines, self.all_tests)

            def load():
                from engine.mlbench.scoring import scorecard

                return scorecard(paths, baselines=self.baselines, all_tests=self.all_tests)

            table = cache.get(key, load)
        except Exception as exc:  # MLBenchError names the file; anything else is shown too
            _log_failure("ML-Bench scorecard", exc)
            self.error = f"Scorecard failed: {exc}"
            return
        finally:
            self.busy = False
        with param.parameterized.batch_call_watchers(self):
            self.table = table
            self.version += 1

    def run_of_row(self, row) -> str | None:
        """The scored run behind a scorecard row (its model and experiment; the newest such run),
        None for a baseline's row."""
        from engine.mlbench.experiments import load_run

        for run_id in self.runs:
            cfg, _ = load_run(self.path_of(run_id))
            if cfg.model == row["model"] and cfg.experiment == row["experiment"]:
                return run_id
        return None

    def select_cell(self, row: int, column: str) -> None:
        """Draw the maps and spectra of a clicked scorecard cell: its row's run and test file, its
        column's variable and index (an index bias column draws that index, any other the mean)."""
        from engine.mlbench.protocol import VARIABLES

        if self.table is None or not 0 <= row < len(self.table):
            return
        record = self.table.iloc[row]
        run_id = self.run_of_row(record)
        if run_id is None:
            self.error = (f"{record['model']} is a baseline: it has no submission file to map; click a cell "
                          "of a model's row.")
            return
        variable, _, diagnostic = str(column).partition("_")
        variable = variable if variable in VARIABLES else self.variable
        index = diagnostic[len("bias_"):] if diagnostic.startswith("bias_") else "mean"
        index = index if index in index_choices(variable) else "mean"
        label = f"{record['period']}/{record['mode']}/{record['gcm']}"
        self.run = run_id  # its watcher offers the run's own test files
        if label not in self.param.test.objects:  # another experiment's test set (all_tests)
            self.param.test.objects = list(self.param.test.objects) + [label]
        with param.parameterized.batch_call_watchers(self):
            self.test, self.variable = label, variable
        self.index = index
        self.load_maps()

    def extrapolation(self, variable: str | None = None):
        """Extrapolation skill side by side: RMSE of ``variable`` (default: the maps' variable) on the
        historical and end-century perfect-predictor test sets of the domain's own GCM, one row per
        model and experiment (DataFrame ``model, experiment, historical, end_century``; None
        without a scorecard or such rows)."""
        table, variable = self.table, variable or self.variable
        column = f"{variable}_rmse"
        if table is None or column not in table:
            return None
        rows = table[(table["mode"] == "perfect") & ~table["test"].str.contains("transferability")
                     & table["period"].isin(["historical", "end_century"])]
        if rows.empty:
            return None
        wide = rows.pivot_table(index=["model", "experiment"], columns="period", values=column, aggfunc="first")
        if not {"historical", "end_century"} <= set(wide.columns):
            return None
        return wide[["historical", "end_century"]].dropna().reset_index()

    def score_columns(self) -> list[str]:
        """The score columns of :attr:`table` (``<var>_<diagnostic>``)."""
        return [] if self.table is None else [c for c in self.table.columns if c not in KEYS]

    # -- index maps ----------------------------------------------------------------------------
    def load_maps(self) -> None:
        """Compute :attr:`maps` (and :attr:`spectra`) for the chosen run, test file, variable, index and season."""
        if self.run is None or self.test is None or self.index is None:
            self.error = "Choose an ML-Bench run, a test file and an index for the maps."
            return
        from . import cache

        period, mode, gcm = self.test.split("/")
        season = None if self.season == "annual" else self.season
        self.busy, self.error = True, ""
        try:
            path = self.path_of(self.run)
            test_file = (str(path), _version(path), period, mode, gcm, self.variable, season)
            key = ("mlbench-maps",) + test_file + (self.index,)

            def load():
                from engine.mlbench.scoring import index_maps

                return index_maps(path, period, mode, gcm, self.variable, self.index, season=season).load()

            def load_spectra():
                from engine.mlbench.scoring import spectra

                return spectra(path, period, mode, gcm, self.variable, season=season)

            maps = cache.get(key, load)
            spectra = cache.get(("mlbench-spectra",) + test_file, load_spectra)  # any index
        except Exception as exc:  # MetricError: e.g. no day of the season in the test file
            _log_failure("ML-Bench index maps", exc)
            self.error = f"Index maps failed: {exc}"
            return
        finally:
            self.busy = False
        with param.parameterized.batch_call_watchers(self):
            self.maps, self.spectra = maps, spectra
            self.maps_version += 1
