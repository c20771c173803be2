"""State of the compare, uncertainty and explain views (no widgets).

Each class reads run folders through :class:`engine.runs.RunStore` (runs are addressed by id,
confined to the run root) and computes what its view shows with the engine's public API:
:mod:`engine.evaluation` (metrics, spectra, probabilistic scores) and :mod:`engine.explain`.
Predictions are read once per run and file version and kept in memory per session.

Example
-------
>>> app = AppState(); app.poll()                        # doctest: +SKIP
>>> cmp = CompareState(app=app, runs=[a, b])            # doctest: +SKIP
>>> cmp.scores_table(by="season")                       # doctest: +SKIP
>>> ens = EnsembleState(app=app, run=ensemble_run_id)   # doctest: +SKIP
>>> ens.rank_histogram().values                         # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np
import param

from .state import AppState, _valid_mask, set_choices

log = logging.getLogger(__name__)

#: Baselines that predictions.nc may hold (engine.evaluation.report.BASELINE_NAMES).
BASELINES = ("nearest", "bilinear", "bicubic")

#: Attribution methods offered before engine.explain (and torch) is imported; replaced by
#: engine.explain.METHODS once the session's choices are loaded.
_FALLBACK_METHODS = ("integrated_gradients", "saliency", "gradient_shap", "occlusion", "grad_cam")

#: Metrics of the compare view's scores tables, in this order when present.
COMPARE_METRICS = ("rmse", "mae", "bias", "pearson", "ssim", "psnr", "crps", "spread_skill_ratio")



def _runs_with_predictions(app):
    """(run id, predictions.nc path) of the listed runs that have predictions, in list order."""
    from engine.runs import RunStoreError

    for row in app.runs:
        try:
            path = app.store.get(row["run_id"]).predictions_path
        except RunStoreError:
            continue
        if path.exists():
            yield row["run_id"], path

class _Predictions:
    """predictions.nc of runs, from the server-wide cache (:mod:`app.cache`: read once per file
    version for every session and view)."""

    def __init__(self, app: AppState):
        self.app = app

    def get(self, run_id: str):
        from engine.runs import RunStoreError

        from . import cache

        try:
            run = self.app.store.get(run_id)
        except RunStoreError:
            return None
        return cache.predictions(run.predictions_path)


class _Shared:
    """Dict-like view of :mod:`app.cache` for values derived from predictions (shared by every
    session of the server)."""

    def __contains__(self, key) -> bool:
        from . import cache

        return cache.peek(key) is not None

    def __getitem__(self, key):
        from . import cache

        return cache.peek(key)

    def __setitem__(self, key, value) -> None:
        from . import cache

        cache.get(key, lambda: value)


def _labels(ds) -> list[str]:
    from engine.data.timeaxis import stamp  # any calendar (noleap, 360_day: cftime times)

    return [stamp(t)[:16] for t in ds["time"].values] if "time" in ds.dims else []


def _masked(ds, da):
    mask = _valid_mask(ds)
    if mask is None:
        return da
    if "time" in mask.dims and "time" not in da.dims:
        mask = mask.any("time")
    return da.where(mask)


def _at_time(ds, da, label: str | None):
    if "time" in da.dims:
        labels = _labels(ds)
        da = da.isel(time=labels.index(label) if label in labels else 0)
    return da


class CompareState(param.Parameterized):
    """Several runs and baselines side by side.

    Parameters
    ----------
    app : AppState
    runs : list of str
        Run ids to compare (runs with predictions; see :meth:`refresh`).
    baselines : list of str
        Baselines to show beside the runs (taken from the first run's predictions).
    """

    app = param.ClassSelector(class_=AppState)
    runs = param.ListSelector(default=[], objects=[], doc="Runs to compare.")
    baselines = param.ListSelector(default=["bicubic"], objects=list(BASELINES), doc="Baselines to show.")
    time = param.Selector(default=None, objects=[], doc="Time of the maps (a label of the first run).")
    point = param.Tuple(default=None, length=2, allow_None=True, doc="(lat, lon) of the time series (a map click).")
    breakdown = param.Selector(default="season", objects=["season", "region", "month"], doc="Rows of the scores table.")
    version = param.Integer(default=0, doc="Bumped when the compared runs (or their files) change.")

    def __init__(self, **params: Any):
        super().__init__(**params)
        self._preds = _Predictions(self.app)
        self._rmse: dict[tuple, Any] = {}
        self.app.param.watch(lambda *e: self.refresh(), ["runs"])
        self.app.param.watch(lambda *e: self.take_picked(), ["picked_runs"])
        self.refresh()

    def take_picked(self) -> None:
        """Compare the runs ticked in the runs table (those with predictions), when two or more."""
        picked = [r for r in self.app.picked_runs if r in self.param.runs.objects]
        if len(picked) >= 2 and picked != list(self.runs):
            self.runs = picked

    # -- choices ----------------------------------------------------------------------
    def refresh(self) -> None:
        """Offer the runs that have predictions (finished or not) as choices."""
        ids = [run_id for run_id, _ in _runs_with_predictions(self.app)]
        if ids != self.param.runs.objects:
            self.param.runs.objects = ids
            kept = [r for r in self.runs if r in ids]
            if kept != self.runs:
                self.runs = kept

    @param.depends("runs", watch=True, on_init=False)
    def _on_runs(self) -> None:
        labels = []
        baselines = list(BASELINES)
        if self.runs:
            ds = self._preds.get(self.runs[0])
            if ds is not None:
                labels = _labels(ds)
                baselines = [b for b in BASELINES if b in ds]
        with param.parameterized.batch_call_watchers(self):
            set_choices(self, "time", labels)
            self.param.baselines.objects = baselines
            self.baselines = [b for b in self.baselines if b in baselines]
            self.version += 1

    def predictions(self, run_id: str):
        return self._preds.get(run_id)

    @property
    def reference(self):
        """The first run's predictions: its truth and baselines are the comparison's."""
        return self._preds.get(self.runs[0]) if self.runs else None

    def run_label(self, run_id: str) -> str:
        names = {r["run_id"]: r.get("name") or "" for r in self.app.runs}
        return f"{names.get(run_id) or 'run'} ({run_id[-6:]})"

    # -- maps ---------------------------------------------------------------------------
    def sources(self) -> list[tuple[str, str, str]]:
        """What the maps show: ``(label, run_id, variable)`` for the baselines and each run."""
        ref = self.runs[0] if self.runs else None
        out = [(b, ref, b) for b in self.baselines]
        out += [(self.run_label(r), r, "model") for r in self.runs]
        return out

    def field(self, run_id: str, variable: str, time: str | None = None):
        """One ``(lat, lon)`` map (ensemble mean for ensembles), masked, at ``time``."""
        ds = self._preds.get(run_id)
        if ds is None or variable not in ds:
            return None
        da = ds[variable]
        if "member" in da.dims:
            da = da.mean("member")
        return _masked(ds, _at_time(ds, da, time or self.time))

    def truth(self, time: str | None = None):
        return self.field(self.runs[0], "truth", time) if self.runs else None

    def error(self, run_id: str, variable: str, time: str | None = None):
        """Prediction minus truth (its own run's truth) at ``time``."""
        pred, truth = self.field(run_id, variable, time), self.field(run_id, "truth", time)
        if pred is None or truth is None:
            return None
        return (pred - truth).rename("error")

    def rmse_map(self, run_id: str, variable: str):
        """Per-pixel RMSE over the run's prediction period, ``(lat, lon)``."""
        ds = self._preds.get(run_id)
        if ds is None or variable not in ds or "truth" not in ds:
            return None
        key = (run_id, variable, ds.attrs.get("history", ""), ds.sizes.get("time"))
        if key not in self._rmse:
            pred = ds[variable].mean("member") if "member" in ds[variable].dims else ds[variable]
            err2 = _masked(ds, (pred - ds["truth"]) ** 2)
            self._rmse[key] = np.sqrt(err2.mean("time")) if "time" in err2.dims else np.sqrt(err2)
        return self._rmse[key]

    # -- scores -------------------------------------------------------------------------
    def scores_table(self, by: str | None = None, metrics=COMPARE_METRICS):
        """The runs' scores (``scores.csv``) by season, month or region.

        Returns
        -------
        pandas.DataFrame
            Columns ``run, model, <period or region>, <metrics...>``; the picked region
            (``AppState.region``) is scored on the fly as region ``picked``.
        """
        import pandas as pd

        from engine.evaluation.breakdown import MONTHS, SEASONS

        by = by or self.breakdown
        frames = []
        for run_id in self.runs:
            run = self.app.store.get(run_id)
            if run.scores_path.exists():
                df = pd.read_csv(run.scores_path)
            else:
                df = pd.DataFrame(columns=["model", "metric", "period", "region", "value"])
            if by == "region":
                df = df[df["period"] == "test"]
                extra = self._picked_region_scores(run_id)
                if extra is not None:
                    df = pd.concat([df, extra], ignore_index=True)
                key = "region"
            else:
                wanted = SEASONS if by == "season" else MONTHS
                df = df[(df["region"] == "domain") & df["period"].isin(wanted)]
                key = "period"
            df = df[df["metric"].isin(metrics) & df["model"].isin(["model", *self.baselines])]
            df = df.assign(run=self.run_label(run_id))
            frames.append(df)
        if not frames or all(f.empty for f in frames):
            return pd.DataFrame(columns=["run", "model", by])
        all_ = pd.concat(frames, ignore_index=True)
        table = all_.pivot_table(index=["run", "model", key], columns="metric", values="value", sort=False)
        table = table.reindex(columns=[m for m in metrics if m in table.columns]).reset_index()
        table.columns.name = None
        return table.rename(columns={key: by})

    def _picked_region_scores(self, run_id: str):
        """RMSE, MAE and bias in the picked region (engine metrics, latitude-weighted)."""
        import pandas as pd

        from engine.evaluation import metrics as M

        region = self.app.region
        ds = self._preds.get(run_id)
        if region is None or ds is None:
            return None
        lat0, lat1, lon0, lon1 = region
        sub = ds.sel(lat=slice(lat0, lat1), lon=slice(lon0, lon1))
        if not sub.sizes.get("lat") or not sub.sizes.get("lon"):
            return None
        mask = _valid_mask(sub)
        rows = []
        for name in ["model", *self.baselines]:
            if name not in sub:
                continue
            pred = sub[name].mean("member") if "member" in sub[name].dims else sub[name]
            for metric, fn in (("rmse", M.rmse), ("mae", M.mae), ("bias", M.bias)):
                try:
                    value = float(fn(pred, sub["truth"], mask=mask))
                except Exception as exc:  # e.g. a region with no valid pixel
                    log.debug("no %s in the picked region: %s", metric, exc)
                    continue
                rows.append({"model": name, "metric": metric, "period": "test", "region": "picked", "value": value})
        return pd.DataFrame(rows)

    # -- spectra and time series ------------------------------------------------------------
    def spectra(self):
        """Time-mean radially averaged power spectra of the truth, baselines and runs.

        Returns
        -------
        pandas.DataFrame with columns ``source, wavelength, power`` (wavelength in grid cells).
        """
        import pandas as pd

        from engine.evaluation.spectral import power_spectrum

        rows = []
        items = [("truth", self.runs[0], "truth")] if self.runs else []
        items += self.sources()
        for label, run_id, variable in items:
            ds = self._preds.get(run_id)
            if ds is None or variable not in ds:
                continue
            da = ds[variable].mean("member") if "member" in ds[variable].dims else ds[variable]
            if "time" in da.dims and da.sizes["time"] > 32:  # 32 steps give a stable mean, fast
                da = da.isel(time=np.linspace(0, da.sizes["time"] - 1, 32).astype(int))
            spec = power_spectrum(da, mask=_valid_mask(ds))
            if "time" in spec.dims:
                spec = spec.mean("time")
            rows.append(pd.DataFrame({"source": label, "wavelength": spec["wavelength"].values,
                                      "power": spec.values.astype(float)}))
        if not rows:
            return pd.DataFrame(columns=["source", "wavelength", "power"])
        return pd.concat(rows, ignore_index=True)

    def series(self, point: tuple | None = None):
        """Values over time at the grid point nearest ``point`` (lat, lon) for the truth,
        baselines and runs; columns ``time, source, value``."""
        import pandas as pd

        point = point or self.point
        if point is None or not self.runs:
            return pd.DataFrame(columns=["time", "source", "value"])
        lat, lon = point
        rows = []
        items = [("truth", self.runs[0], "truth")] + self.sources()
        for label, run_id, variable in items:
            ds = self._preds.get(run_id)
            if ds is None or variable not in ds or "time" not in ds.dims:
                continue
            da = ds[variable].mean("member") if "member" in ds[variable].dims else ds[variable]
            s = _nearest_cell(da, lat, lon)
            rows.append(pd.DataFrame({"time": _plot_times(ds["time"].values), "source": label,
                                      "value": np.asarray(s.values, dtype=float)}))
        return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["time", "source", "value"])


def _nearest_cell(da, lat: float, lon: float):
    """``da`` at the grid cell nearest ``(lat, lon)`` on any grid (lat/lon, rotated, projected)."""
    from engine.data.grid import describe, fractional_index

    grid = describe(da)
    fi, fj = fractional_index(grid, np.array([lat]), np.array([lon]))
    i = int(np.clip(np.rint(fi[0]), 0, grid.shape[0] - 1)) if np.isfinite(fi[0]) else 0
    j = int(np.clip(np.rint(fj[0]), 0, grid.shape[1] - 1)) if np.isfinite(fj[0]) else 0
    return da.isel({grid.dims[0]: i, grid.dims[1]: j})


def _plot_times(times):
    """Times a bokeh axis can draw: datetime64 as they are; cftime (noleap, 360_day ...) as the
    datetime64 of the same year, month, day and time (a 360_day 30 February falls back onto the
    last real day of February, so the curve keeps one point per step)."""
    import pandas as pd

    from engine.data.timeaxis import time_index

    index = time_index(times)
    if isinstance(index, pd.DatetimeIndex):
        return index
    out = []
    for t in index:
        day = min(t.day, pd.Timestamp(year=t.year, month=t.month, day=1).days_in_month)
        out.append(pd.Timestamp(year=t.year, month=t.month, day=day, hour=t.hour, minute=t.minute, second=t.second))
    return pd.DatetimeIndex(out)


class EnsembleState(param.Parameterized):
    """Members, mean, spread, rank histogram and spread-skill of a run's ensemble predictions
    (``model`` with a ``member`` dimension in predictions.nc).

    Parameters
    ----------
    app : AppState
    run : str
        Run id (choices: runs whose predictions have members).
    """

    app = param.ClassSelector(class_=AppState)
    run = param.Selector(default=None, objects=[], allow_None=True, doc="Run with ensemble predictions.")
    member = param.Integer(default=0, bounds=(0, None), doc="Member shown in the member map.")
    time = param.Selector(default=None, objects=[], doc="Time of the maps.")
    version = param.Integer(default=0)

    def __init__(self, **params: Any):
        run = params.pop("run", None)
        super().__init__(**params)
        self._preds = _Predictions(self.app)
        self._cache = _Shared()  # derived values shared by every session (app.cache)
        self.app.param.watch(lambda *e: self.refresh(), ["runs"])
        self.refresh()
        if run is not None:  # EnsembleState(app=..., run=...): a run with members
            if run not in self.param.run.objects:
                raise ValueError(f"run={run!r} has no ensemble predictions; accepted: "
                                 f"{[o for o in self.param.run.objects if o is not None]}")
            self.run = run
        self._on_run()

    def refresh(self) -> None:
        """Offer runs whose predictions have a ``member`` dimension (checked once per file)."""
        from . import cache

        # Only the header of each file is read, once per file version for the whole server.
        ids = [run_id for run_id, path in _runs_with_predictions(self.app) if cache.has_members(path)]
        if ids != [o for o in self.param.run.objects if o is not None]:
            set_choices(self, "run", ids)

    @param.depends("run", watch=True)
    def _on_run(self) -> None:
        ds = self.dataset
        labels = _labels(ds) if ds is not None else []
        with param.parameterized.batch_call_watchers(self):
            set_choices(self, "time", labels)
            n = ds.sizes.get("member", 1) if ds is not None else 1
            self.param.member.bounds = (0, max(n - 1, 0))
            self.member = min(self.member, max(n - 1, 0))
            self.version += 1

    @property
    def dataset(self):
        return self._preds.get(self.run) if self.run else None

    def _file_key(self) -> tuple:
        """The selected run's predictions file version (path, mtime, size): derived values are
        shared per version."""
        from . import cache

        return cache.file_key("predictions", self.app.store.get(self.run).predictions_path) or (self.run,)

    @property
    def members(self) -> int:
        ds = self.dataset
        return int(ds.sizes.get("member", 0)) if ds is not None else 0

    def fields(self, time: str | None = None, member: int | None = None) -> dict:
        """``truth``, ``member`` (one member), ``mean``, ``spread`` (member standard deviation)
        and ``error`` (mean minus truth) at ``time``, each ``(lat, lon)``, masked."""
        ds = self.dataset
        if ds is None or "member" not in ds["model"].dims:
            return {}
        from engine.inference.ensembles import ensemble_mean, ensemble_spread

        time = time or self.time
        member = self.member if member is None else member
        labels = _labels(ds)
        one = ds.isel(time=labels.index(time) if time in labels else 0) if "time" in ds.dims else ds
        ens = one["model"]
        truth = _masked(ds, one["truth"])
        # Mean and spread as the engine derives them (engine.inference.ensembles), never stored.
        mean = _masked(ds, ensemble_mean(one))
        return {
            "truth": truth,
            "member": _masked(ds, ens.isel(member=min(member, ens.sizes["member"] - 1))),
            "mean": mean,
            "spread": _masked(ds, ensemble_spread(one)).rename("spread"),
            "error": (mean - truth).rename("error"),
        }

    def rank_histogram(self):
        """Relative frequency of the truth's rank among the members over the whole period
        (:func:`engine.evaluation.probabilistic.rank_histogram`); flat is calibrated."""
        ds = self.dataset
        if ds is None:
            return None
        key = ("rank", *self._file_key())
        if key not in self._cache:
            from engine.evaluation.probabilistic import rank_histogram

            self._cache[key] = rank_histogram(ds["model"], ds["truth"], mask=_valid_mask(ds))
        return self._cache[key]

    def scores(self) -> dict:
        """CRPS, spread-skill ratio and ensemble-mean RMSE over the period (engine metrics)."""
        ds = self.dataset
        if ds is None:
            return {}
        key = ("scores", *self._file_key())
        if key not in self._cache:
            from engine.evaluation import probabilistic as P

            out = {}
            for name, fn in (("crps", P.crps), ("spread_skill_ratio", P.spread_skill_ratio),
                             ("ensemble_mean_rmse", P.ensemble_mean_rmse)):
                try:
                    out[name] = float(fn(ds["model"], ds["truth"], mask=_valid_mask(ds)))
                except Exception as exc:
                    log.warning("%s failed: %s", name, exc)
            self._cache[key] = out
        return self._cache[key]

    def spread_skill(self, bins: int = 10):
        """Binned spread-skill: pixels and times grouped by ensemble spread (equal-count bins);
        per bin the RMS spread and the RMSE of the ensemble mean, scaled by sqrt((M+1)/M).
        On the 1:1 line for a calibrated ensemble.

        Returns
        -------
        pandas.DataFrame with columns ``spread, rmse, count``.
        """
        import pandas as pd

        ds = self.dataset
        if ds is None:
            return pd.DataFrame(columns=["spread", "rmse", "count"])
        key = ("spread-skill", bins, *self._file_key())
        if key not in self._cache:
            ens = ds["model"]
            m = ens.sizes["member"]
            var = np.asarray(ens.var("member", ddof=1).values, dtype=float)
            err2 = np.asarray(((ens.mean("member") - ds["truth"]) ** 2).values, dtype=float)
            valid = np.isfinite(var) & np.isfinite(err2)
            mask = _valid_mask(ds)
            if mask is not None:
                valid &= np.broadcast_to(np.asarray(mask.values, dtype=bool), valid.shape)
            var, err2 = var[valid], err2[valid]
            if var.size == 0:
                self._cache[key] = pd.DataFrame(columns=["spread", "rmse", "count"])
                return self._cache[key]
            edges = np.unique(np.quantile(var, np.linspace(0, 1, bins + 1)))
            which = np.clip(np.searchsorted(edges, var, side="right") - 1, 0, max(len(edges) - 2, 0))
            rows = []
            for b in range(max(len(edges) - 1, 1)):
                sel = which == b
                if sel.any():
                    rows.append({"spread": float(np.sqrt((m + 1) / m * var[sel].mean())),
                                 "rmse": float(np.sqrt(err2[sel].mean())), "count": int(sel.sum())})
            self._cache[key] = pd.DataFrame(rows)
        return self._cache[key]


class ExplainState(param.Parameterized):
    """Attributions of a trained run for a clicked pixel or a drawn box (Captum via
    :func:`engine.explain.explain_run`).

    The computation runs off the server's event loop (:meth:`explain_async`); ``busy`` is True
    meanwhile and ``result`` holds the last attribution Dataset.

    Parameters
    ----------
    app : AppState
    run : str
        Run id (choices: completed runs with a checkpoint).
    """

    app = param.ClassSelector(class_=AppState)
    run = param.Selector(default=None, objects=[], allow_None=True, doc="Trained run to explain.")
    method = param.Selector(default="integrated_gradients", objects=[], doc="Attribution method (engine.explain.METHODS).")
    target = param.Selector(default="pixel", objects=["pixel", "region", "domain"],
                            doc="What to explain: the clicked pixel, the picked region (a box) or the whole domain.")
    point = param.Tuple(default=None, length=2, allow_None=True, doc="(lat, lon) of the clicked pixel.")
    time = param.Selector(default=None, objects=[], doc="Time step explained.")
    n_steps = param.Integer(default=16, bounds=(2, 256), doc="Integration steps (IG) or samples (GradientSHAP).")
    busy = param.Boolean(default=False)
    result = param.Parameter(default=None, doc="xarray.Dataset from engine.explain.explain_run, or None.")
    error = param.String(default="")
    version = param.Integer(default=0, doc="Bumped when a new result arrives.")
    run_version = param.Integer(default=0, doc="Bumped when another run is chosen (the prediction map changes).")

    def __init__(self, **params: Any):
        super().__init__(**params)
        # engine.explain imports torch (seconds): read its method list once the session's
        # choices are loaded (after the page is shown), not when the page is built.
        self.param.method.objects = list(_FALLBACK_METHODS)
        self.app.param.watch(lambda e: self.load_methods(), "choices_loaded")
        if self.app.choices_loaded:
            self.load_methods()
        self._preds = _Predictions(self.app)
        self._loaded: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.app.param.watch(lambda *e: self.refresh(), ["runs"])
        self.refresh()

    @param.depends("point", "target", "method", "time", "run", "app.region", watch=True)
    def _clear_error(self) -> None:
        """A new choice makes the last error (e.g. "click a pixel first") stale."""
        if not self.busy:
            self.error = ""

    def load_methods(self) -> None:
        """The attribution methods the engine offers (:data:`engine.explain.METHODS`)."""
        from engine.explain import METHODS

        self.param.method.objects = list(METHODS)
        if self.method not in METHODS:
            self.method = METHODS[0]

    def refresh(self) -> None:
        from engine.runs import RunStoreError

        ids = []
        for row in self.app.runs:
            if row.get("state") != "completed":
                continue
            try:
                run = self.app.store.get(row["run_id"])
            except RunStoreError:
                continue
            if run.predictions_path.exists() and (run.path / "checkpoints").is_dir():
                ids.append(row["run_id"])
        if ids != [o for o in self.param.run.objects if o is not None]:
            set_choices(self, "run", ids)

    @param.depends("run", watch=True, on_init=True)
    def _on_run(self) -> None:
        ds = self.prediction_dataset
        labels = _labels(ds) if ds is not None else []
        with param.parameterized.batch_call_watchers(self):
            set_choices(self, "time", labels)
            self.result = None
            self.version += 1
            self.run_version += 1

    @property
    def prediction_dataset(self):
        return self._preds.get(self.run) if self.run else None

    def prediction(self, time: str | None = None):
        """The model's prediction map at ``time`` (what the user clicks on)."""
        ds = self.prediction_dataset
        if ds is None or "model" not in ds:
            return None
        da = ds["model"].mean("member") if "member" in ds["model"].dims else ds["model"]
        return _masked(ds, _at_time(ds, da, time or self.time))

    def region(self):
        """The region argument of :func:`engine.explain.explain_run` for the current target."""
        if self.target == "pixel":
            if self.point is None:
                raise ValueError("click a pixel on the prediction map first (or explain the region or domain)")
            return tuple(float(v) for v in self.point)
        if self.target == "region":
            if self.app.region is None:
                raise ValueError("draw a box on a map first (the data view's region picker or the box tool here)")
            return tuple(float(v) for v in self.app.region)
        return None

    def _compute(self):
        """Attributions for the current choices: ``(Dataset, "")`` or ``(None, error)``."""
        from engine.explain import explain_run

        if self.run is None:
            return None, "No trained run to explain: train one first (it needs a checkpoint and predictions)."
        try:
            region = self.region()
        except ValueError as exc:
            return None, str(exc)
        try:
            run = self.app.store.get(self.run)
            if self.run not in self._loaded:
                from engine.inference import load_run

                self._loaded[self.run] = load_run(run)
            ds = explain_run(run, self.time, region=region, method=self.method, n_steps=self.n_steps,
                             write=True, loaded=self._loaded[self.run])
        except Exception as exc:  # shown as text; the traceback goes to the server log
            log.exception("explain failed")
            return None, f"{type(exc).__name__}: {exc}"
        return ds, ""

    def _finish(self, ds, error: str) -> None:
        with param.parameterized.batch_call_watchers(self):
            self.busy = False
            self.error = error
            if ds is not None:
                self.result = ds
                self.version += 1

    def explain(self) -> None:
        """Compute the attributions now (blocking); sets ``result`` or ``error``."""
        if not self._lock.acquire(blocking=False):
            return  # one attribution at a time per session
        try:
            self.busy, self.error = True, ""
            self._finish(*self._compute())
        finally:
            self._lock.release()

    def explain_async(self, dispatch=None) -> threading.Thread | None:
        """:meth:`explain` in a worker thread, so the page (and other sessions) stay responsive.

        Parameters
        ----------
        dispatch : callable, optional
            Runs a function on the server's event loop; the view passes its session document's
            ``add_next_tick_callback`` so that the result reaches the page from the loop, not from
            the worker thread. Default: call directly (tests, notebooks).

        Returns
        -------
        threading.Thread or None
            The worker (None when an attribution is already being computed).
        """
        if not self._lock.acquire(blocking=False):
            return None
        self.busy, self.error = True, ""
        dispatch = dispatch or (lambda fn: fn())

        def work():
            try:
                ds, error = self._compute()
            finally:
                self._lock.release()
            dispatch(lambda: self._finish(ds, error))

        thread = threading.Thread(target=work, name="finescale-explain", daemon=True)
        thread.start()
        return thread

    def channel_maps(self) -> dict:
        """Attribution maps of the last result: ``{variable name: (lat, lon) DataArray}``."""
        ds = self.result
        if ds is None:
            return {}
        out = {}
        for name in ds.data_vars:
            if name.startswith(("input_", "static_")) or name == "grad_cam":
                da = ds[name]
                if "time" in da.dims:
                    da = da.isel(time=0)
                if "lat_lr" in da.dims:
                    da = da.rename(lat_lr="lat", lon_lr="lon")
                out[name] = da
        return out

    def importance(self):
        """Channel importance of the last result: DataFrame ``channel, importance`` (sums to 1)."""
        import pandas as pd

        ds = self.result
        if ds is None or "importance" not in ds:
            return pd.DataFrame(columns=["channel", "importance"])
        imp = ds["importance"]
        if "time" in imp.dims:
            imp = imp.mean("time")
        return pd.DataFrame({"channel": [str(c) for c in imp["channel"].values],
                             "importance": np.asarray(imp.values, dtype=float)})
