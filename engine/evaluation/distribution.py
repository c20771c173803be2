"""Distribution and extremes: quantile biases, wet-day frequency and wet-day quantiles.

Same signature as every metric (see :mod:`engine.evaluation._common`). Quantiles are
xarray's weighted quantiles (linear interpolation, numpy's default "type 7" for equal
weights) over the valid points of ``dim`` (None = pooled over everything).

Example
-------
>>> import numpy as np, xarray as xr
>>> t = xr.DataArray(np.arange(101.0)); p = t + 2.0
>>> float(quantile_bias(p, t, q=0.99))
2.0
"""

from __future__ import annotations

import xarray as xr

from engine.evaluation._common import MetricError, check_aligned, dims_list, require_valid, valid_weights, wmean
from engine.registry import METRICS


def _q(x: xr.DataArray, w: xr.DataArray, q: float, dims: list) -> xr.DataArray:
    if not 0.0 <= q <= 1.0:
        raise MetricError(f"quantile q={q!r} is not valid; expected 0 <= q <= 1")
    # Invalid points get weight 0 and a finite placeholder: weighted quantiles ignore them.
    return x.where(w > 0, 0).weighted(w).quantile(q, dim=dims).drop_vars("quantile")


def quantile_bias(pred, truth, mask=None, weights=None, dim=None, q=0.99):
    """Quantile bias Q_q(pred) - Q_q(truth) over the valid points of ``dim``.

    Parameters
    ----------
    pred, truth : DataArray (time, lat, lon)
    q : quantile in [0, 1] (0.01 and 0.99 are registered as ``q01_bias`` / ``q99_bias``)
    dim : None = pooled; "time" = per-pixel map
    """
    check_aligned(pred, truth)
    w = valid_weights(pred, truth, mask, weights)
    require_valid(w, "the data")
    dims = dims_list(dim, truth)
    return (_q(pred, w, q, dims) - _q(truth, w, q, dims)).rename(f"q{round(q * 100):02d}_bias")


@METRICS.register("q01_bias", kind="distribution", higher_is_better=None, units="same",
                  description="1st-percentile bias (prediction minus truth)")
def q01_bias(pred, truth, mask=None, weights=None, dim=None):
    """1st-percentile bias; see :func:`quantile_bias`."""
    return quantile_bias(pred, truth, mask, weights, dim, q=0.01)


@METRICS.register("q99_bias", kind="distribution", higher_is_better=None, units="same",
                  description="99th-percentile bias (prediction minus truth)")
def q99_bias(pred, truth, mask=None, weights=None, dim=None):
    """99th-percentile bias; see :func:`quantile_bias`."""
    return quantile_bias(pred, truth, mask, weights, dim, q=0.99)


def wet_day_frequency(x, mask=None, weights=None, dim=None, threshold=1.0):
    """Fraction of valid points with ``x >= threshold`` (1 mm/day by default)."""
    w = valid_weights(x, x, mask, weights)
    require_valid(w, "the data")
    return wmean((x >= threshold).astype(w.dtype), w, dims_list(dim, x))


@METRICS.register("wet_day_frequency_bias", kind="distribution", higher_is_better=None, units="1",
                  description="wet-day frequency (>= 1 mm/day) of prediction minus truth, precipitation")
def wet_day_frequency_bias(pred, truth, mask=None, weights=None, dim=None, threshold=1.0):
    """Wet-day frequency of ``pred`` minus that of ``truth``, both over the points valid in
    both. ``threshold`` in the data's units (see :func:`engine.evaluation._common.wet_threshold`).

    Example
    -------
    >>> t = xr.DataArray([0.0, 2.0, 3.0, 0.5]); p = xr.DataArray([1.5, 2.0, 0.0, 0.0])
    >>> float(wet_day_frequency_bias(p, t))   # 2/4 - 2/4
    0.0
    """
    check_aligned(pred, truth)
    w = valid_weights(pred, truth, mask, weights)
    return (wet_day_frequency(pred, None, w, dim, threshold) - wet_day_frequency(truth, None, w, dim, threshold)).rename(
        "wet_day_frequency_bias"
    )


def wet_quantile_bias(pred, truth, mask=None, weights=None, dim=None, q=0.95, threshold=1.0):
    """Bias of the ``q`` quantile of wet-day amounts: each field's quantile over its own wet
    points (``>= threshold``), prediction minus truth. NaN where either has no wet point."""
    check_aligned(pred, truth)
    w = valid_weights(pred, truth, mask, weights)
    require_valid(w, "the data")
    dims = dims_list(dim, truth)

    def wetq(x):
        ww = w.where(x >= threshold, 0)
        has = ww.sum(dims) > 0
        return _q(x, ww, q, dims).where(has)

    return (wetq(pred) - wetq(truth)).rename(f"wet_q{round(q * 100):02d}_bias")


@METRICS.register("wet_q95_bias", kind="distribution", higher_is_better=None, units="same",
                  description="95th percentile of wet-day amounts, prediction minus truth")
def wet_q95_bias(pred, truth, mask=None, weights=None, dim=None, threshold=1.0):
    """95th percentile of wet-day amounts bias; see :func:`wet_quantile_bias`."""
    return wet_quantile_bias(pred, truth, mask, weights, dim, q=0.95, threshold=threshold)


@METRICS.register("wet_q99_bias", kind="distribution", higher_is_better=None, units="same",
                  description="99th percentile of wet-day amounts, prediction minus truth")
def wet_q99_bias(pred, truth, mask=None, weights=None, dim=None, threshold=1.0):
    """99th percentile of wet-day amounts bias; see :func:`wet_quantile_bias`."""
    return wet_quantile_bias(pred, truth, mask, weights, dim, q=0.99, threshold=threshold)
