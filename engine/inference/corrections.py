"""Bias corrections of an interpolated field, fitted on the training period in one streaming pass.

The corrections (``bias_cell``, ``bias_month``, ``quantile_map``; see
:mod:`engine.inference.baselines`) are fitted per target cell from the training period's
interpolation and truth. A long period at a fine grid does not fit in memory, so the fit reads it
in time blocks (:class:`CorrectionFit`: ``add`` one block at a time, then ``finish``) and memory is
bounded by one block plus the accumulators:

- ``bias_cell`` / ``bias_month``: per-cell (and per-calendar-month) float64 sums of
  ``interp - truth`` and int counts. **Exact**: equal to the whole-period mean up to float64
  summation order (relative 1e-12).
- ``quantile_map``: per-cell empirical quantiles of the interpolation and the truth from a
  **bounded sample of time steps**: every training step when their float32 values (interpolation
  and truth) fit in :data:`QUANTILE_BYTES` -- then the quantiles are exactly those of the whole
  period --, else ``S`` evenly spaced steps over the whole period (every season represented;
  ``S = QUANTILE_BYTES / (8 H W)``, at least ``2 x MIN_QUANTILE_VALUES``): sample quantiles, whose
  error is the usual sampling error of ``S`` values per cell. The number of quantile levels is
  ``min(N_QUANTILES, values per cell)``, capped so that the two fitted tables take at most
  :data:`QUANTILE_BYTES` (64 levels at 1024 x 1024); the tables are float64 when they fit, else
  float32. The at-least-30-values check (:data:`MIN_QUANTILE_VALUES`) counts every training step,
  not the sample.

Example
-------
>>> fit = CorrectionFit(("bias_cell", "quantile_map"), shape=(H, W), steps=len(train_times))  # doctest: +SKIP
>>> for interp, truth, times in blocks:                                                      # doctest: +SKIP
...     fit.add(interp, truth, times)
>>> corrections = fit.finish()        # {"bias_cell": BiasCorrection, "quantile_map": ...}     # doctest: +SKIP
>>> corrections["bias_cell"].apply(interp_test, test_times)                                  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import xarray as xr

CORRECTIONS = ("bias_cell", "bias_month", "quantile_map")
MIN_QUANTILE_VALUES = 30
N_QUANTILES = 100
#: Bytes of the quantile-mapping sample (interpolation + truth, float32) and of its fitted tables.
QUANTILE_BYTES = 512 * 2**20
#: Cells whose quantiles are computed together (bounds the float64 temporaries of the fit).
_CELLS = 65536


class BaselineError(ValueError):
    """A baseline that cannot be computed as asked; the message names the value and the fix."""


def quantile_error(fewest: int, cells: int) -> str:
    return (f"baseline 'quantile_map' needs at least {MIN_QUANTILE_VALUES} training values in every valid cell; "
            f"{cells} cell(s) have fewer (the fewest: {fewest}). Lengthen data.train_period, or drop "
            f"'quantile_map' from inference.baselines")


def months_of(times) -> np.ndarray:
    """Calendar month (1..12) of each time (datetime64 or cftime)."""
    return np.asarray(xr.DataArray(np.asarray(times), dims="time").dt.month.values, dtype=int)


def sample_positions(steps: int, shape: tuple[int, int], budget: int | None = None) -> np.ndarray:
    """Positions (0 .. steps - 1 in the training period) of the steps quantile mapping keeps: all
    of them when they fit in ``budget`` (default :data:`QUANTILE_BYTES`), else evenly spaced."""
    budget = QUANTILE_BYTES if budget is None else int(budget)
    per_step = 8 * int(np.prod(shape))  # float32 interpolation + float32 truth
    size = min(int(steps), max(budget // max(per_step, 1), 2 * MIN_QUANTILE_VALUES))
    if size >= steps:
        return np.arange(int(steps))
    return np.unique(np.round(np.linspace(0, steps - 1, size)).astype(np.int64))


def check_method(method: str) -> str:
    if method not in CORRECTIONS:
        raise BaselineError(f"bias correction {method!r} is not valid; accepted: {', '.join(CORRECTIONS)}")
    return method


class CorrectionFit:
    """Accumulators of one streaming pass over the training period (see the module docstring).

    Parameters
    ----------
    methods : corrections to fit (any of :data:`CORRECTIONS`)
    shape : (H, W) of the target grid
    steps : training time steps that will be added, in time order (places the quantile sample)
    quantile_bytes : budget of the quantile sample and tables (default :data:`QUANTILE_BYTES`)
    """

    def __init__(self, methods: Sequence[str], shape: tuple[int, int], steps: int, quantile_bytes: int | None = None):
        self.methods = tuple(check_method(m) for m in methods)
        self.shape = tuple(int(n) for n in shape)
        self.steps = int(steps)
        self.budget = QUANTILE_BYTES if quantile_bytes is None else int(quantile_bytes)
        self.count = np.zeros(self.shape, dtype=np.int64)
        self.diff = np.zeros(self.shape, dtype=np.float64)
        self.seen = 0
        if "bias_month" in self.methods:  # index 1..12
            self.month_count = np.zeros((13, *self.shape), dtype=np.int32)
            self.month_diff = np.zeros((13, *self.shape), dtype=np.float64)
        if "quantile_map" in self.methods:
            self.sample_at = sample_positions(self.steps, self.shape, self.budget)
            self.sample_interp = np.full((len(self.sample_at), *self.shape), np.nan, dtype=np.float32)
            self.sample_truth = np.full((len(self.sample_at), *self.shape), np.nan, dtype=np.float32)

    def add(self, interp: np.ndarray, truth: np.ndarray, times) -> None:
        """Add one block: ``interp`` and ``truth`` (T_b, H, W) (NaN = missing), its ``times``."""
        interp, truth = np.asarray(interp), np.asarray(truth)
        if interp.shape != truth.shape or interp.shape[1:] != self.shape:
            raise BaselineError(f"a training block must be (time, {self.shape[0]}, {self.shape[1]}) for both the "
                                f"interpolation and the truth; got {interp.shape} and {truth.shape}")
        tb = interp.shape[0]
        if self.seen + tb > self.steps:
            raise BaselineError(f"the fit was set up for {self.steps} training steps; {self.seen + tb} were added")
        valid = np.isfinite(truth) & np.isfinite(interp)
        diff = np.where(valid, interp.astype(np.float64) - truth.astype(np.float64), 0.0)
        self.count += valid.sum(axis=0)
        self.diff += diff.sum(axis=0)
        if "bias_month" in self.methods:
            months = months_of(times)
            for m in np.unique(months):
                sel = months == m
                self.month_count[m] += valid[sel].sum(axis=0, dtype=np.int32)
                self.month_diff[m] += diff[sel].sum(axis=0)
        if "quantile_map" in self.methods:
            rows = np.flatnonzero((self.sample_at >= self.seen) & (self.sample_at < self.seen + tb))
            if rows.size:
                local = self.sample_at[rows] - self.seen
                self.sample_interp[rows] = np.where(valid[local], interp[local], np.nan)
                self.sample_truth[rows] = np.where(valid[local], truth[local], np.nan)
        self.seen += tb

    def finish(self) -> dict[str, "BiasCorrection"]:
        """The fitted corrections, one per method (raises :class:`BaselineError` when quantile
        mapping has fewer than :data:`MIN_QUANTILE_VALUES` training values in a valid cell)."""
        count = self.count
        # cells with no training truth are outside the mask: no correction there
        bias = np.where(count > 0, self.diff / np.maximum(count, 1), 0.0)
        out = {}
        for method in self.methods:
            corr = BiasCorrection(method)
            corr.bias = bias
            if method == "bias_month":
                n = self.month_count
                corr.monthly = np.where(n > 0, self.month_diff / np.maximum(n, 1), bias[None])
                corr.monthly[0] = bias
            elif method == "quantile_map":
                short = (count > 0) & (count < MIN_QUANTILE_VALUES)
                if short.any():
                    raise BaselineError(quantile_error(int(count[short].min()), int(short.sum())))
                self._fit_quantiles(corr)
            out[method] = corr
        return out

    def _fit_quantiles(self, corr: "BiasCorrection") -> None:
        cells = int(np.prod(self.shape))
        sample_count = np.isfinite(self.sample_truth).sum(axis=0)
        cap = max(2, self.budget // (2 * 4 * cells))  # the two tables within the budget, float32 at worst
        levels = np.linspace(0.0, 1.0, min(N_QUANTILES, max(int(sample_count.max(initial=0)), 2), cap))
        dtype = np.float64 if 2 * len(levels) * cells * 8 <= self.budget else np.float32
        corr.q_model = _quantiles(self.sample_interp, levels, dtype)
        corr.q_truth = _quantiles(self.sample_truth, levels, dtype)
        corr.levels = levels
        corr.known = np.isfinite(corr.q_model).all(axis=0) & np.isfinite(corr.q_truth).all(axis=0)
        corr.q_model[:, ~corr.known] = 0.0
        corr.q_truth[:, ~corr.known] = 0.0
        del self.sample_interp, self.sample_truth


def _quantiles(sample: np.ndarray, levels: np.ndarray, dtype) -> np.ndarray:
    """Per-cell quantiles (K, H, W) of ``sample`` (S, H, W) (NaN = no value), computed in float64
    a group of :data:`_CELLS` cells at a time; NaN where a cell has no value. Cells valid at every
    step take the fast vectorised path, the others (a time-varying mask) nanquantile."""
    S, H, W = sample.shape
    flat = sample.reshape(S, H * W)
    out = np.full((len(levels), H * W), np.nan, dtype=dtype)
    for c0 in range(0, H * W, _CELLS):
        values = flat[:, c0 : c0 + _CELLS].astype(np.float64)
        valid = np.isfinite(values)
        full = valid.all(axis=0)
        part = out[:, c0 : c0 + _CELLS]
        if full.any():
            part[:, full] = np.quantile(values[:, full], levels, axis=0)
        partial = valid.any(axis=0) & ~full
        if partial.any():
            part[:, partial] = np.nanquantile(values[:, partial], levels, axis=0)
    return out.reshape(len(levels), H, W)


class BiasCorrection:
    """A per-cell correction of an interpolated field, fitted on training data.

    Parameters
    ----------
    method : "bias_cell", "bias_month" or "quantile_map"

    ``fit(interp, truth, times)`` takes whole (T, H, W) arrays (NaN = missing truth; the same as
    one block of :class:`CorrectionFit`); ``apply(interp, times)`` returns the corrected (T, H, W)
    field.
    """

    def __init__(self, method: str):
        self.method = check_method(method)

    def fit(self, interp: np.ndarray, truth: np.ndarray, times) -> "BiasCorrection":
        interp = np.asarray(interp)
        fit = CorrectionFit((self.method,), interp.shape[1:], interp.shape[0])
        fit.add(interp, truth, times)
        self.__dict__.update(fit.finish()[self.method].__dict__)
        return self

    def apply(self, interp: np.ndarray, times) -> np.ndarray:
        interp = np.asarray(interp)
        if self.method == "bias_cell":
            out = interp.astype(np.float64) - self.bias
        elif self.method == "bias_month":
            out = interp.astype(np.float64) - self.monthly[months_of(times)]
        else:  # one step at a time: the map's temporaries are a dozen (H, W) arrays
            out = np.empty(interp.shape, dtype=np.float32)
            for i in range(interp.shape[0]):
                out[i] = self._quantile_map(interp[i].astype(np.float64))
            return out
        return out.astype(np.float32)

    def _quantile_map(self, x: np.ndarray) -> np.ndarray:
        """Piecewise-linear map of one field ``x`` (H, W) through the (K,) training quantiles of
        every cell: exact at the training quantiles; beyond the training range the end corrections
        are kept (additive), not a flat clip."""
        qm, qt = self.q_model, self.q_truth  # (K, H, W); 0 where a cell is not ``known``
        K = qm.shape[0]
        # index of the quantile interval of each value: how many quantiles lie at or below it
        idx = np.zeros(x.shape, dtype=np.int64)
        for k in range(K):
            idx += x >= qm[k]
        lo = np.clip(idx - 1, 0, K - 2)[None]

        def at(table, index):
            return np.take_along_axis(table, index, 0)[0].astype(np.float64)

        x0, x1, y0, y1 = at(qm, lo), at(qm, lo + 1), at(qt, lo), at(qt, lo + 1)
        width = x1 - x0
        frac = np.where(width > 0, (x - x0) / np.where(width > 0, width, 1.0), 0.0)
        mapped = y0 + frac * (y1 - y0)
        first_m, first_t = qm[0].astype(np.float64), qt[0].astype(np.float64)
        last_m, last_t = qm[-1].astype(np.float64), qt[-1].astype(np.float64)
        mapped = np.where(x < first_m, x + (first_t - first_m), mapped)
        mapped = np.where(x > last_m, x + (last_t - last_m), mapped)
        return np.where(self.known, mapped, x)
