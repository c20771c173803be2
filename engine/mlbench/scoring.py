"""The ML-Bench scorecard: every run and baseline on every test set of its experiment, one number
per diagnostic.

Rows: one per model x test set (``model, domain, experiment, test, period, mode, gcm``); columns
``<var>_<diagnostic>``: ``rmse``, ``ralsd``, ``wasserstein`` and the index biases ``bias_<index>``
of :mod:`engine.evaluation.diagnostics` (the spatial mean of the absolute bias of the index map),
plus ``corr_bias`` (mean absolute bias of the tasmax-pr temporal correlation). Lower is better in
every column.

Baselines, fitted on the same experiment's training data:

- ``interpolation``: the 850 hPa temperature predictor interpolated bilinearly to every target
  cell, plus that cell's mean difference to tasmax over the training period (an interpolated
  predictor is only meaningful with that offset). Precipitation has no predictor to interpolate:
  its columns are empty for this baseline.
- ``linear_regression``: the classical ESD reference: each target cell regressed (least squares)
  on the 20 leading principal components of the standardised predictors; precipitation clipped at 0.
- ``climatology``: each target cell's mean for the calendar month over the training days (the
  training period's mean where a month is absent), the reference any model of day-to-day weather must
  beat. It reads no predictors, so it is the same for every predictor adjustment; it is the only
  baseline for precipitation that a model learning nothing would match.

When a run's imperfect predictors were bias-adjusted (``predictor_adjustment``, :mod:`engine.mlbench.adjust`),
its baselines get the same adjusted predictors, named ``interpolation+mean_variance`` etc., so that a
model and its references always see the same inputs.

For a dashboard: :func:`scorecard` returns the table as a pandas DataFrame and :func:`index_maps`
the truth, model and bias maps of one index as an xarray Dataset.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from engine.evaluation.diagnostics import INDEX_METRICS, radial_psd, ralsd_of, reduce_map, wasserstein_1d
from engine.evaluation.indices import compute_index
from engine.evaluation.metrics import rmse
from engine.mlbench.experiments import load_run, load_training
from engine.mlbench.protocol import (
    PREDICTORS, VARIABLES, MLBenchError, get_domain, get_experiment, open_cf, submission_file, predictor_path,
    train_files, truth_path,
)

INDICES_FOR = {
    "tasmax": ("bias_mean", "bias_q98", "bias_txx", "bias_txn", "bias_su", "bias_lag1_autocorr", "bias_interannual_var"),
    "pr": ("bias_mean", "bias_q98", "bias_rx1day", "bias_sdii", "bias_cdd", "bias_cwd", "bias_lag1_autocorr",
           "bias_interannual_var"),
}
KEYS = ["model", "domain", "experiment", "test", "period", "mode", "gcm"]
N_PCS = 20


class _Truth:
    """A test set's truth with its index maps computed once for every model scored against it."""

    def __init__(self, path: Path, spatial_dims):
        with open_cf(path) as ds:
            self.ds = ds.load()
        self.dims = spatial_dims
        self._idx: dict = {}

    def psd(self, var: str) -> xr.DataArray:
        if (var, "psd") not in self._idx:
            self._idx[var, "psd"] = radial_psd(self.ds[var])
        return self._idx[var, "psd"]

    def sorted(self, var: str) -> np.ndarray:
        if (var, "sorted") not in self._idx:
            v = self.ds[var].values.ravel()
            self._idx[var, "sorted"] = np.sort(v[np.isfinite(v)].astype(np.float64))
        return self._idx[var, "sorted"]

    def correlation(self) -> xr.DataArray:
        """The truth's tasmax-pr temporal correlation map (:func:`correlation_bias`'s truth side,
        whole period)."""
        if "corr" not in self._idx:
            self._idx["corr"] = xr.corr(self.ds["tasmax"], self.ds["pr"], dim="time")
        return self._idx["corr"]

    def index(self, var: str, metric: str) -> xr.DataArray:
        if (var, metric) not in self._idx:
            name, options = INDEX_METRICS[metric]
            self._idx[var, metric] = compute_index(self.ds[var], name, **options)
        return self._idx[var, metric]


def _as_da(values: np.ndarray, truth: xr.DataArray) -> xr.DataArray:
    # shallow: a deep copy duplicated the truth's coordinates (cftime objects) for every prediction
    return truth.copy(deep=False, data=np.asarray(values, dtype=truth.dtype))


def score_arrays(pred: dict[str, np.ndarray], truth: _Truth) -> dict[str, float]:
    """One number per variable x diagnostic for predictions ``{var: (T, H, W)}`` (a var may be absent).

    An ensemble ``(member, T, H, W)`` (a generative model's submission) is scored as the benchmark
    reads one: the RMSE of the ensemble mean, and every other diagnostic (spectra, distribution,
    indices, correlations) of its first member, a realisation (a mean of members is smoother than
    any field the model generates)."""
    out: dict[str, float] = {}
    preds = {}
    for var in VARIABLES:
        if var not in pred or var not in truth.ds:
            continue
        t = truth.ds[var]
        a = np.asarray(pred[var])
        members = a if a.ndim == t.ndim + 1 else a[None]
        if members.shape[1:] != t.shape:
            raise MLBenchError(f"{var}: prediction of shape {a.shape} against a truth of shape {t.shape} "
                               "(a test set on another grid or period?)")
        p = preds[var] = _as_da(members[0], t)
        out[f"{var}_rmse"] = float(rmse(_as_da(members.mean(0), t) if len(members) > 1 else p, t))
        # the same definitions as the registered ralsd / wasserstein, with the truth's side cached
        out[f"{var}_ralsd"] = ralsd_of(truth.psd(var), radial_psd(p))
        pv = p.values.ravel()
        out[f"{var}_wasserstein"] = wasserstein_1d(pv[np.isfinite(pv)], truth.sorted(var), b_sorted=True)
        for metric in INDICES_FOR[var]:
            name, options = INDEX_METRICS[metric]
            out[f"{var}_{metric}"] = float(reduce_map(compute_index(p, name, **options) - truth.index(var, metric)))
    if len(preds) == 2:
        # correlation_bias's definition over the whole period (xr.corr of the prediction minus the
        # truth's), the truth's side cached; tested equal to correlation_bias
        cp = xr.corr(preds["tasmax"], preds["pr"], dim="time")
        out["corr_bias"] = float(reduce_map(cp - truth.correlation()))
    return out


# -- baselines -------------------------------------------------------------------------------------

def _stack(ds) -> np.ndarray:
    return np.stack([ds[v].transpose("time", "lat", "lon").values for v in PREDICTORS], axis=1).astype(np.float64)


def fit_baselines(domain: str, experiment: str, root: str | Path) -> dict:
    """``{"interpolation": fn, "linear_regression": fn, "climatology": fn}``; each fn maps a predictor Dataset (and an
    optional ``adjust`` of its array, :mod:`engine.mlbench.adjust`) to ``{var: (T, H, W)}``, fitted on
    ``experiment``'s training data under ``root``."""
    from engine.mlbench.experiments import MLBenchConfig, interpolation_for

    dom = get_domain(domain)
    data = load_training(MLBenchConfig(domain=domain, experiment=experiment, root=str(root)))
    interp_t850 = interpolation_for(dom, data)
    H, W = interp_t850.shape

    x = data["x"].reshape(len(data["x"]), -1).astype(np.float64)
    mean, std = x.mean(0), x.std(0)
    std[std == 0] = 1.0
    z = (x - mean) / std
    _, _, vt = np.linalg.svd(z, full_matrices=False)
    pcs = vt[:N_PCS]

    def design(xx):
        zz = (xx.reshape(len(xx), -1) - mean) / std
        return np.column_stack([np.ones(len(xx)), zz @ pcs.T])

    A = design(data["x"])
    coefs = {v: np.linalg.lstsq(A, y.reshape(len(y), -1).astype(np.float64), rcond=None)[0] for v, y in data["y"].items()}

    def predictors(ds, adjust):
        x = _stack(ds)
        return x if adjust is None else adjust(x).astype(np.float64)

    def interpolation(ds, adjust=None) -> dict:
        return {"tasmax": interp_t850(predictors(ds, adjust))}

    def linear_regression(ds, adjust=None) -> dict:
        d = design(predictors(ds, adjust))
        out = {v: (d @ c).reshape(len(d), H, W) for v, c in coefs.items()}
        if "pr" in out:
            out["pr"] = np.clip(out["pr"], 0, None)
        return out

    with open_cf(train_files(Path(root), dom, get_experiment(experiment))["target"]) as t:
        months = t["time"].dt.month.values
    means = {v: {"all": y.mean(0)} for v, y in data["y"].items()}
    for v, y in data["y"].items():
        means[v].update({int(m): y[months == m].mean(0) for m in np.unique(months)})

    def climatology(ds, adjust=None) -> dict:
        wanted = ds["time"].dt.month.values
        return {v: np.stack([by_month.get(int(m), by_month["all"]) for m in wanted]) for v, by_month in means.items()}

    return {"interpolation": interpolation, "linear_regression": linear_regression, "climatology": climatology}


# -- the scorecard ---------------------------------------------------------------------------------

def _tests_for(exp, all_tests: bool):
    if not all_tests:
        return exp.tests
    seen, out = set(), list(exp.tests)
    for t in out:
        seen.add((t.period, t.mode, t.transfer))
    from engine.mlbench.protocol import EXPERIMENTS

    for other in EXPERIMENTS.values():
        for t in other.tests:
            if (t.period, t.mode, t.transfer) not in seen:
                seen.add((t.period, t.mode, t.transfer))
                out.append(t)
    return out


def scorecard(runs, baselines: bool = True, log=None, all_tests: bool = False, workers: int = 1) -> pd.DataFrame:
    """Score ML-Bench run folders (and the baselines of their experiments) on every test set.

    ``all_tests`` also scores each run on the other experiment's test sets (named as there), e.g.
    an emulator on the end-century files the ESD experiment is tested on, so that both experiments
    meet on the same files.

    The work is grouped by truth file (its indices computed once for every model scored against
    it) and the groups are scored in ``workers`` processes through dask's process scheduler (1,
    the default: in this process; a script calling it with more needs the ``if __name__ ==
    "__main__":`` guard of Python's spawned processes).

    Returns
    -------
    DataFrame, one row per model x test set: ``model, domain, experiment, test, period, mode, gcm``
    and one column per ``<var>_<diagnostic>``.
    """
    runs = [Path(r) for r in runs]
    if not runs:
        raise MLBenchError("mlbench score needs at least one run folder")
    groups: dict = {}  # truth file -> [(row number, model, meta, what to score)]
    done_baselines, n = set(), 0
    for run in runs:
        cfg, info = load_run(run)
        dom, exp = get_domain(cfg.domain), get_experiment(cfg.experiment)
        root = Path(info["archive"])
        adjustment = cfg.predictor_adjustment
        fit = baselines and (dom.name, exp.name, str(root), adjustment) not in done_baselines
        climatology = fit and (dom.name, exp.name, str(root)) not in done_baselines
        done_baselines.update({(dom.name, exp.name, str(root), adjustment), (dom.name, exp.name, str(root))})
        for test in _tests_for(exp, all_tests):
            gcm = test.gcm(dom)
            meta = {"domain": dom.name, "experiment": exp.name, "test": test.name, "period": test.period,
                    "mode": test.mode, "gcm": gcm}
            items = groups.setdefault((str(truth_path(root, test.period, gcm)), dom.name), [])
            items.append((n, cfg.model, meta, ("run", str(submission_file(run / "submission", dom, exp, test.period,
                                                                            test.mode, gcm)))))
            n += 1
            if fit:
                src = str(predictor_path(root, test.period, test.mode, gcm))
                # the climatology reads no predictors: one row per test set, whatever the adjustment
                names = ("interpolation", "linear_regression") + (("climatology",) if climatology else ())
                for name in names:
                    label = name if adjustment == "none" or name == "climatology" else f"{name}+{adjustment}"
                    items.append((n, label, meta, ("baseline", (dom.name, exp.name, str(root), name, src,
                                                                adjustment, test.mode, gcm))))
                    n += 1
    workers = min(len(groups), max(1, int(workers)))
    if workers > 1 and len(groups) > 1:
        import dask

        tasks = [dask.delayed(_score_group)(path, domain, items) for (path, domain), items in groups.items()]
        results = dask.compute(*tasks, scheduler="processes", num_workers=workers)
    else:
        results = [_score_group(path, domain, items) for (path, domain), items in groups.items()]
    rows = sorted((row for group in results for row in group), key=lambda r: r[0])
    if log:
        log(f"scored {len(rows)} rows on {len(groups)} truth files in {workers} process(es)")
    table = pd.DataFrame([r[1] for r in rows])
    cols = KEYS + sorted(c for c in table.columns if c not in KEYS)
    return table[cols]


_FITTED: dict = {}  # (domain, experiment, root) -> fit_baselines' functions, once per process


def _score_group(truth_file: str, domain: str, items: list) -> list[tuple[int, dict]]:
    """Score every item of one truth file: a run's submission file or a baseline on a predictor file."""
    dom = get_domain(domain)
    truth = _Truth(Path(truth_file), dom.spatial_dims)
    rows = []
    for number, model, meta, (kind, what) in items:
        if kind == "run":
            path = Path(what)
            with open_cf(path) as p:
                lead = ("member", "time") if "member" in p.dims else ("time",)
                pred = {v: p[v].transpose(*lead, *dom.spatial_dims).values for v in VARIABLES if v in p}
                if len(p.time) != len(truth.ds.time) or not all(
                        a == b for a, b in zip(p.indexes["time"], truth.ds.indexes["time"])):
                    raise MLBenchError(f"{path.name}: its time axis differs from the truth's ({Path(truth_file).name})")
        else:
            d, e, root, name, src, adjustment, mode, gcm = what
            if (d, e, root) not in _FITTED:
                _FITTED[d, e, root] = fit_baselines(d, e, root)
            from engine.mlbench.adjust import adjustment_for

            with open_cf(Path(src)) as ds:
                pred = _FITTED[d, e, root][name](ds, adjust=adjustment_for(adjustment, root, mode, gcm))
        rows.append((number, {"model": model, **meta, **score_arrays(pred, truth)}))
    return rows


def write_scorecard(runs, out: str | Path, baselines: bool = True, log=None, all_tests: bool = False,
                    workers: int = 1) -> pd.DataFrame:
    table = scorecard(runs, baselines=baselines, log=log, all_tests=all_tests, workers=workers)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False, float_format="%.6g")
    return table


def _truth_and_prediction(run: str | Path, period: str, mode: str, gcm: str, variable: str):
    """The truth of one test file of a run and the run's prediction of it (a DataArray on the
    truth's coordinates; an ensemble keeps its ``member`` dim first)."""
    cfg, info = load_run(run)
    dom, exp = get_domain(cfg.domain), get_experiment(cfg.experiment)
    root = Path(info["archive"])
    with open_cf(truth_path(root, period, gcm)) as t, \
            open_cf(submission_file(Path(run) / "submission", dom, exp, period, mode, gcm)) as p:
        truth = t[variable].load()
        values = p[variable].transpose(*(("member",) if "member" in p[variable].dims else ()), *truth.dims).values
    if values.ndim == truth.ndim:
        return truth, truth.copy(data=values)
    return truth, xr.DataArray(values, dims=("member",) + truth.dims, coords=truth.coords, attrs=truth.attrs)


def index_maps(run: str | Path, period: str, mode: str, gcm: str, variable: str, index: str,
               season: str | None = None) -> xr.Dataset:
    """Truth, model and bias maps of one index for one test file of a run (for map views); an
    ensemble's index is of its member mean.

    Returns a Dataset with ``truth``, ``model``, ``bias`` on the target grid (its 2-D lat/lon kept).
    """
    truth, pred = _truth_and_prediction(run, period, mode, gcm, variable)
    if "member" in pred.dims:
        pred = pred.mean("member")
    ti = compute_index(truth, index, season=season)
    pi = compute_index(pred, index, season=season)
    return xr.Dataset({"truth": ti, "model": pi, "bias": pi - ti},
                      attrs={"variable": variable, "index": index, "season": season or "annual",
                             "run": Path(run).name, "test": f"{period}/{mode}/{gcm}"})


def spectra(run: str | Path, period: str, mode: str, gcm: str, variable: str,
            season: str | None = None) -> xr.Dataset:
    """The radially averaged power spectra (:func:`engine.evaluation.diagnostics.radial_psd`, the
    benchmark's RALSD inputs) of the truth and of a run's prediction on one test file (an ensemble:
    averaged over its members' fields, as RALSD reads it).

    Returns a Dataset with ``truth`` and ``model`` along ``wavenumber``.
    """
    truth, pred = _truth_and_prediction(run, period, mode, gcm, variable)
    return xr.Dataset({"truth": radial_psd(truth, season=season), "model": radial_psd(pred, season=season)},
                      attrs={"variable": variable, "season": season or "annual", "run": Path(run).name,
                             "test": f"{period}/{mode}/{gcm}"})
