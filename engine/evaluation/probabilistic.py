"""Probabilistic metrics for ensembles (a ``member`` dimension in the predictions).

CRPS and rank histograms come from ``scores``; the spread-skill ratio and ensemble-mean RMSE
are two lines each. Same signature as every metric; ``pred`` has the extra ``member_dim``.

Example
-------
>>> import numpy as np, xarray as xr
>>> ens = xr.DataArray([[0.0, 2.0]], dims=("x", "member"))
>>> obs = xr.DataArray([1.0], dims="x")
>>> float(crps(ens, obs))   # E|X - y| - E|X - X'| / 2 = 1 - 1/2
0.5
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from engine.evaluation._common import MetricError, check_aligned, dims_list, require_valid, valid_weights, wmean
from engine.registry import METRICS


def _ens_setup(pred, truth, mask, weights, dim, member_dim):
    if member_dim not in pred.dims:
        raise MetricError(f"ensemble predictions need a {member_dim!r} dimension; got dims {list(pred.dims)}")
    if pred.sizes[member_dim] < 2:
        raise MetricError(f"an ensemble needs at least 2 members; got {pred.sizes[member_dim]}")
    check_aligned(pred, truth, exclude=(member_dim,))
    # A point counts when the truth and every member are valid there.
    w = valid_weights(pred.isel({member_dim: 0}, drop=True), truth, mask, weights)
    w = w.where(pred.notnull().all(member_dim), 0)
    require_valid(w, "the data")
    return w, dims_list(dim, truth, exclude=(member_dim,))


@METRICS.register("crps", kind="probabilistic", higher_is_better=False, units="same",
                  description="continuous ranked probability score of the ensemble (scores, ecdf)")
def crps(pred, truth, mask=None, weights=None, dim=None, member_dim="member", method="ecdf"):
    """CRPS of an ensemble, E|X - y| - 1/2 E|X - X'| ("ecdf"; "fair" uses M(M-1) in the
    second term), from ``scores.probability.crps_for_ensemble``, then a masked weighted mean.

    Parameters
    ----------
    pred : DataArray (member, time, lat, lon)
    truth : DataArray (time, lat, lon)
    """
    from scores.probability import crps_for_ensemble

    if method not in ("ecdf", "fair"):
        raise MetricError(f"method={method!r} is not valid; accepted: ecdf, fair")
    w, dims = _ens_setup(pred, truth, mask, weights, dim, member_dim)
    point = crps_for_ensemble(pred, truth.where(w > 0), member_dim, method=method, preserve_dims="all")
    return wmean(point, w, dims).rename("crps")


@METRICS.register("ensemble_mean_rmse", kind="probabilistic", higher_is_better=False, units="same",
                  description="RMSE of the ensemble mean")
def ensemble_mean_rmse(pred, truth, mask=None, weights=None, dim=None, member_dim="member"):
    """RMSE of the ensemble mean, sqrt(mean(w (mean_m X - y)^2))."""
    w, dims = _ens_setup(pred, truth, mask, weights, dim, member_dim)
    return np.sqrt(wmean((pred.mean(member_dim) - truth) ** 2, w, dims)).rename("ensemble_mean_rmse")


@METRICS.register("spread_skill_ratio", kind="probabilistic", higher_is_better=None, units="1",
                  description="ensemble spread / ensemble-mean RMSE (with the (M+1)/M factor); 1 is best")
def spread_skill_ratio(pred, truth, mask=None, weights=None, dim=None, member_dim="member"):
    """Spread-skill ratio sqrt((M+1)/M) * sqrt(mean(var_m X)) / RMSE(mean_m X), with the
    unbiased (ddof=1) member variance: 1 for a calibrated ensemble (Fortin et al. 2014), < 1
    under-dispersive, > 1 over-dispersive.
    """
    w, dims = _ens_setup(pred, truth, mask, weights, dim, member_dim)
    m = pred.sizes[member_dim]
    spread = np.sqrt(wmean(pred.var(member_dim, ddof=1), w, dims))
    skill = np.sqrt(wmean((pred.mean(member_dim) - truth) ** 2, w, dims))
    return (np.sqrt((m + 1) / m) * spread / skill.where(skill > 0)).rename("spread_skill_ratio")


@METRICS.register("rank_histogram", kind="probabilistic", higher_is_better=None, units="1",
                  description="relative frequency of the truth's rank among the members (scores); flat is best")
def rank_histogram(pred, truth, mask=None, weights=None, dim=None, member_dim="member"):
    """Rank histogram (``scores.probability.rank_histogram``): the relative frequency of the
    truth's rank 1 .. M+1 among the sorted members, ties shared equally.

    Returns
    -------
    DataArray (rank, ...) summing to 1 over ``rank``.
    """
    from scores.probability import rank_histogram as sc_rank

    w, dims = _ens_setup(pred, truth, mask, weights, dim, member_dim)
    # scores warns on NaN; give invalid points finite placeholders and zero weight instead.
    valid = w > 0
    p = pred.where(valid, 0.0)
    t = truth.where(valid, 0.0)
    out = sc_rank(p, t, member_dim, reduce_dims=dims, weights=w)
    return out.rename("rank_histogram")
