"""Score a run's predictions: the tidy scores table, the per-pixel maps and the headline.

:func:`evaluate_run` reads ``predictions.nc`` (variables ``truth``, ``model`` and the
baselines ``nearest``, ``bilinear``, ``bicubic``; ``mask``; attribute ``variable``), scores
``model`` and every baseline against ``truth``, writes ``scores.csv`` (columns ``run, model,
metric, variable, period, region, value``) and ``maps.nc`` atomically, and puts the headline
scores into ``status.json``. :func:`compare_runs` puts runs side by side with their baselines.
:func:`evaluate_dataset` does the work on an in-memory or lazily opened dataset.

How it stays cheap: the data are read in blocks of time steps; each block gives per-time-step
sums over every region at once (one matrix product (T, H*W) @ (H*W, regions)) and per-pixel sums
over time. Every period breakdown (season, month, hour) then aggregates the per-step sums, and
every map comes from the per-pixel sums. The definitions are those of
:mod:`engine.evaluation.metrics` (the tests check that the table equals the metric functions):

- ``mae, rmse, mse, bias, relative_bias, ssim``: pooled over every valid (time, pixel) point;
- ``pearson, acc``: spatial correlation per time step, averaged over the steps;
- ``pearson_temporal``: temporal correlation per pixel, averaged over the region;
- ``psnr``: 10 log10(R^2 / MSE) with R = ``data_range`` (stated in ``maps.nc`` attributes);
- ``*_latw``: the same with cos(latitude) weights;
- ``mse_skill, mae_skill``: 1 - score / score(reference), the reference being ``bicubic``;
- distribution (``q01_bias``, ``q99_bias``; for precipitation ``wet_day_frequency_bias``,
  ``wet_q95_bias``, ``wet_q99_bias``), spectral (``spectral_ratio_small``) and, for
  ensembles (a ``member`` dim), ``crps``, ``spread_skill_ratio``, ``ensemble_mean_rmse``:
  whole test period only. The pooled quantiles come from per-block histograms (approximate:
  within 1/65536 of the value range); the per-pixel quantile maps are exact
  (:mod:`engine.evaluation.streaming`).

Nothing holds the whole period: :func:`evaluate_run` opens the predictions lazily with dask and
every pass reads ``block`` time steps at a time (the temporal Spearman map reads row strips).

Example
-------
>>> scores = evaluate_run(run)                                   # doctest: +SKIP
>>> scores.query("region == 'domain' and period == 'test'")      # doctest: +SKIP
>>> compare_runs([run_a, run_b])                                 # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from engine.evaluation._common import MetricError, area_weights, grid_dims, lat_weights, wet_threshold
from engine.evaluation.breakdown import BREAKDOWNS, SEASONS, period_groups, region_masks

COLUMNS = ["run", "model", "metric", "variable", "period", "region", "value"]
#: Bytes the block loop's arrays may take when ``block`` is None (measured 5 GiB peak at 1024^2
#: with 32-step blocks, 2.75 GiB with 4-step blocks (1 GiB); 2 steps at 1024^2 now).
EVAL_BYTES = 2**29
BASELINE_NAMES = ("nearest", "bilinear", "bicubic", "conservative", "bias_cell", "bias_month", "quantile_map")
HEADLINE = ("rmse", "mae", "bias", "pearson", "ssim", "psnr")
NOT_PREDICTIONS = ("truth", "mask", "climatology")
PRECIP_NAMES = ("pr", "tp", "precip", "precipitation", "rain", "rainfall", "rr", "prcp", "precip_5min")

__all__ = ["evaluate_run", "evaluate_dataset", "compare_runs", "Evaluation", "COLUMNS", "HEADLINE"]


@dataclass
class Evaluation:
    """What :func:`evaluate_dataset` returns.

    Attributes
    ----------
    scores : DataFrame with :data:`COLUMNS`
    maps : Dataset of per-pixel maps (model, lat, lon), seasonal maps (model, season, lat, lon)
        and spectra (source, wavenumber)
    headline : {"model": {"rmse": .., "mae": .., ...}, "bicubic": {...}} (domain, whole period)
    """

    scores: pd.DataFrame
    maps: xr.Dataset
    headline: dict[str, dict[str, float]]


# ---------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------
def _prediction_names(ds: xr.Dataset) -> list[str]:
    truth_dims = set(ds["truth"].dims)
    names = [
        str(v) for v in ds.data_vars
        if v not in NOT_PREDICTIONS and set(ds[v].dims) - {"member"} == truth_dims
    ]
    order = ["model", *BASELINE_NAMES]
    return sorted(names, key=lambda n: (order.index(n) if n in order else len(order), n))


def _check_dataset(ds: xr.Dataset) -> None:
    if "truth" not in ds:
        raise MetricError(f"predictions need a 'truth' variable; found {', '.join(map(str, ds.data_vars)) or 'none'}")
    truth = ds["truth"]
    need = ("time", *grid_dims(truth))
    if tuple(d for d in truth.dims) != need:
        if set(truth.dims) != set(need):
            raise MetricError(f"truth must have dims {need}; got {truth.dims}")
    if not _prediction_names(ds):
        raise MetricError(
            "no predictions to score: expected 'model' and/or baselines "
            f"({', '.join(BASELINE_NAMES)}) with the truth's dims {truth.dims}; found {list(ds.data_vars)}"
        )
    for d in ("lat", "lon"):  # 1-D on a regular grid, 2-D (y, x) on any other
        if d not in ds.coords:
            raise MetricError(f"predictions need a {d!r} coordinate")
    if ds.sizes["time"] == 0:
        raise MetricError("the predictions hold no time step in the period scored")


def _is_precip(ds: xr.Dataset, variable: str) -> bool:
    a = ds["truth"].attrs
    return (
        variable.lower() in PRECIP_NAMES
        or "precipitation" in str(a.get("standard_name", "")).lower()
        or "precipitation" in str(a.get("long_name", "")).lower()
    )


class _ClimBlocks:
    """A climatology read a time block at a time: ``block(s)`` -> (T_b, H, W) or (H, W) float64.
    A climatology by month/season/day of year/hour is expanded only for the block's steps (never
    to the whole period: a year of daily 1024^2 fields would be 3 GiB)."""

    def __init__(self, climatology: xr.DataArray, truth: xr.DataArray):
        from engine.evaluation.metrics import _climatology_like

        self.key = next((k for k in ("month", "season", "dayofyear", "hour") if k in climatology.dims), None)
        if self.key is not None:
            # checks the keys the period needs (an error names the missing ones) without expanding
            _climatology_like(climatology.isel({d: 0 for d in climatology.dims if d != self.key}, drop=True), truth)
            self.index = getattr(truth["time"].dt, self.key).values
            climatology = climatology.transpose(self.key, ...)
        self.clim = climatology.transpose(*[d for d in ("time", self.key) if d and d in climatology.dims], ...)
        self.spatial = tuple(d for d in truth.dims if d != "time")

    def block(self, s: slice) -> np.ndarray:
        c = self.clim
        if self.key is not None:
            c = c.sel({self.key: self.index[s]})
        elif "time" in c.dims:
            c = c.isel(time=s)
        return np.asarray(c.transpose(..., *self.spatial).values, dtype=np.float64)


def _truth_pass(truth: xr.DataArray, mask: xr.DataArray, block: int, monthly: bool) -> dict[str, Any]:
    """One pass over the valid truth, ``block`` steps at a time: count, mean, min, max and, when
    ``monthly``, the monthly mean per pixel (``"monthly"``: DataArray (month, ...) of the months
    present). Float64 sums; memory one block + 12 maps (a dask groupby could hold a (12, H, W)
    partial result per chunk)."""
    T = truth.sizes["time"]
    months = truth["time"].dt.month.values
    n, total, lo, hi = 0, 0.0, math.inf, -math.inf
    sums = counts = None
    for start in range(0, T, block):
        s = slice(start, min(start + block, T))
        t = np.asarray(truth.isel(time=s).values, dtype=np.float64)
        m = np.asarray(mask.isel(time=s).values if "time" in mask.dims else mask.values, dtype=bool)
        v = np.isfinite(t) & np.broadcast_to(m, t.shape)
        if v.any():
            n += int(v.sum())
            total += float(t[v].sum())
            lo, hi = min(lo, float(t[v].min())), max(hi, float(t[v].max()))
        if monthly:
            if sums is None:
                sums, counts = np.zeros((13, *t.shape[1:])), np.zeros((13, *t.shape[1:]))
            tt = np.where(v, t, 0.0)
            for mo in np.unique(months[s]):
                sel = months[s] == mo
                sums[mo] += tt[sel].sum(axis=0)
                counts[mo] += v[sel].sum(axis=0)
    out: dict[str, Any] = {"n": n, "mean": total / n if n else math.nan, "min": lo, "max": hi}
    if monthly and sums is not None:
        present = np.unique(months)
        with np.errstate(invalid="ignore", divide="ignore"):
            values = np.where(counts[present] > 0, sums[present] / np.maximum(counts[present], 1), np.nan)
        out["monthly"] = xr.DataArray(values, dims=("month", *truth.dims[1:]), coords={"month": present})
    return out


def _climatology(ds: xr.Dataset, climatology: xr.DataArray | None, monthly: xr.DataArray | None):
    """(climatology read per time block (:class:`_ClimBlocks`), source description)."""
    if climatology is None and "climatology" in ds:
        climatology, source = ds["climatology"], "predictions.nc climatology"
    elif climatology is not None:
        source = "given"
    else:
        # No training climatology at hand: fall back to the test period's own monthly mean per
        # pixel (what the ACC then measures is the day-to-day anomaly; stated in maps.nc).
        climatology = monthly
        source = "test-period monthly mean of the truth (no training climatology given)"
    return _ClimBlocks(climatology, ds["truth"]), source


# ---------------------------------------------------------------------------------------
# The block loop
# ---------------------------------------------------------------------------------------
class _Sums:
    """Per-time-step sums over regions (``step``) and per-pixel sums over time (``pix``)."""

    STEP = ("n", "se", "sae", "sse", "st", "sp", "stt", "spp", "spt", "sss", "saa", "sa2", "sb2")
    PIX = ("n", "se", "sae", "sse", "st", "sp", "stt", "spp", "spt", "sss", "saa", "sa2", "sb2")

    def __init__(self, T: int, R: int, H: int, W: int, n_seasons: int):
        self.step = {k: np.zeros((T, R)) for k in self.STEP}
        self.pix = {k: np.zeros((H, W)) for k in self.PIX}
        self.season = {k: np.zeros((n_seasons, H, W)) for k in ("n", "se", "sse")}
        self.spec_model = None
        self.spec_truth = None
        self.spec_steps = 0


def _block_sums(sums: _Sums, s: slice, p, t, v, clim, offset, regw, ssim_img, season_idx, spectra,
                truth_spectrum=True):
    """Accumulate one block (T_b, H, W) of float64 arrays; ``v`` valid bool.

    Each summed field is made in one scratch array (products written in place, ``copyto`` for
    the masked ones) rather than as a fresh block-sized array: a fresh array of a 1024^2 block
    is page-faulted in again on every allocation, which cost as much as the arithmetic."""
    Tb = t.shape[0]
    R2 = regw.reshape(regw.shape[0], -1).T  # (H*W, R)
    buf = np.empty_like(t)

    def add(k, f):
        sums.step[k][s] += f.reshape(Tb, -1) @ R2
        sums.pix[k] += f.sum(axis=0)

    invalid = ~v

    def masked(values, out):  # values where valid, else 0 (``out`` may be ``values``)
        if values is not out:
            np.copyto(out, values)
        np.copyto(out, 0.0, where=invalid)
        return out

    add("n", v.astype(np.float64))
    e = masked(np.subtract(p, t, out=buf), np.empty_like(t))
    add("se", e)
    add("sae", np.abs(e, out=buf))
    sq = np.multiply(e, e, out=buf)
    add("sse", sq)
    for i in range(sums.season["n"].shape[0]):  # four seasons at most, not a loop over time steps
        sel = season_idx == i
        if sel.any():
            sums.season["n"][i] += v[sel].sum(axis=0)
            sums.season["se"][i] += e[sel].sum(axis=0)
            sums.season["sse"][i] += sq[sel].sum(axis=0)
    add("st", masked(t, buf))
    pp = masked(np.subtract(p, offset, out=e), e)  # offsets keep the sums of products well conditioned
    tt = masked(np.subtract(t, offset, out=buf), np.empty_like(t))
    add("sp", pp)
    add("stt", np.multiply(tt, tt, out=buf))
    add("spp", np.multiply(pp, pp, out=buf))
    add("spt", np.multiply(pp, tt, out=buf))
    add("sss", masked(ssim_img, buf))
    a = masked(np.subtract(p, clim, out=pp), pp)
    b = masked(np.subtract(t, clim, out=tt), tt)
    add("saa", np.multiply(a, b, out=buf))
    add("sa2", np.multiply(a, a, out=buf))
    add("sb2", np.multiply(b, b, out=buf))
    if spectra:
        from engine.evaluation.spectral import power_sum

        sp = power_sum(p, v)
        sums.spec_model = sp if sums.spec_model is None else sums.spec_model + sp
        if truth_spectrum:  # the truth's spectrum once (the first prediction's pass), not once per prediction
            st = power_sum(t, v)
            sums.spec_truth = st if sums.spec_truth is None else sums.spec_truth + st
        sums.spec_steps += Tb


def _ratio(num, den):
    den = np.asarray(den, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.asarray(num, dtype=float) / den
    return np.where(den > 0, out, np.nan)


def _release_freed_memory() -> None:
    """Give freed heap memory back to the system (glibc ``malloc_trim``) after each prediction's
    pass: blocks of a few MiB freed and allocated again land on the heap (glibc's adaptive mmap
    threshold) and fragment it; a 1024^2 evaluation's RSS grew by ~0.1 GiB a prediction, 1.2 GiB
    of it heap. A no-op where the C library has no ``malloc_trim``."""
    import ctypes

    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _f32(x) -> np.ndarray:
    """Maps kept as float32 (what maps.nc stores): eight predictions' maps at 1024^2 are ~1 GiB in float64."""
    return np.asarray(x, dtype=np.float32)


def _nanmean(x, axis=0):
    x = np.asarray(x, dtype=float)
    cnt = np.isfinite(x).sum(axis=axis)
    tot = np.where(np.isfinite(x), x, 0.0).sum(axis=axis)
    return np.where(cnt > 0, tot / np.maximum(cnt, 1), np.nan)


def _score_name(model: str, ds: xr.Dataset) -> xr.DataArray:
    da = ds[model]
    if "member" in da.dims:
        da = da.mean("member")
    return da.transpose("time", *grid_dims(da))


# ---------------------------------------------------------------------------------------
# evaluate_dataset
# ---------------------------------------------------------------------------------------
def evaluate_dataset(
    ds: xr.Dataset,
    run: str = "",
    period: str = "test",
    regions: Any = None,
    climatology: xr.DataArray | None = None,
    data_range: float | None = None,
    breakdown: Sequence[str] = BREAKDOWNS,
    reference: str = "bicubic",
    spectra: bool = True,
    distribution: bool = True,
    spearman: bool = True,
    block: int | None = None,
) -> Evaluation:
    """Score every prediction in ``ds`` against ``ds.truth``.

    Parameters
    ----------
    ds : Dataset with ``truth`` (time, lat, lon), ``model`` and/or baselines (same dims, or
        with a ``member`` dim for ensembles), optional ``mask`` ((lat, lon) or (time, lat, lon),
        1 = valid) and ``climatology``; attribute ``variable``. May be lazily opened.
    run : the run id written in the ``run`` column
    period : label of the whole period (``"test"``)
    regions : see :func:`engine.evaluation.breakdown.region_masks`; ``"domain"`` is always there
    climatology : for the ACC; default ``ds.climatology`` or else the test period's own monthly
        mean per pixel (stated in ``maps.attrs["climatology_source"]``)
    data_range : R for SSIM and PSNR; default max - min of the valid truth (stated in maps attrs)
    breakdown : any of "season", "month", "hour" (hours only for sub-daily data)
    reference : baseline for the skill scores (``mse_skill``, ``mae_skill``)
    spectra, distribution, spearman : switch off the costlier parts
    block : time steps read and processed at a time (bounds memory: about 30 arrays of
        block x H x W float64); None: up to 32, fewer on large grids (:data:`EVAL_BYTES`)

    Returns
    -------
    :class:`Evaluation` (scores, maps, headline)

    Raises
    ------
    MetricError
        no truth or no predictions, grids or time axes that differ, an all-NaN period, a
        region missing the domain.
    """
    from engine.evaluation.metrics import acc_from_sums, check_aligned, pearson_from_sums, psnr_from_mse, ssim_map

    _check_dataset(ds)
    sdims = grid_dims(ds["truth"])
    ds = ds.transpose("time", *sdims, ...)
    variable = str(ds.attrs.get("variable", ds["truth"].attrs.get("standard_name", "truth")))
    names = _prediction_names(ds)
    truth = ds["truth"]
    for name in names:
        check_aligned(ds[name], truth)

    lat = np.asarray(ds["lat"].values, dtype=float)
    lon = np.asarray(ds["lon"].values, dtype=float)
    T, H, W = truth.shape
    if block is None:  # about 30 float64 arrays of block x H x W live at once
        block = max(1, min(32, EVAL_BYTES // (H * W * 8 * 32)))
    rmask = region_masks(regions, lat, lon)
    region_names = [str(r) for r in rmask.region.values]
    nr = len(region_names)
    # area weights: cos(lat) on a regular grid, true cell areas from the 2-D lat/lon on any other
    area = (area_weights(ds["lat"], ds["lon"]).values if lat.ndim == 2 else lat_weights(lat).values[:, None])
    regw = np.concatenate([rmask.values.astype(float), rmask.values * area[None]])  # (2 nr, H, W)

    if "mask" in ds:
        mask = ds["mask"].astype(bool)
        mask = mask.transpose(*[d for d in ("time", *sdims) if d in mask.dims])
    else:
        mask = xr.DataArray(np.ones((H, W), dtype=bool), dims=sdims)
    # one pass over the (possibly dask-backed) truth for all its whole-period statistics
    stats = _truth_pass(truth, mask, block, monthly=climatology is None and "climatology" not in ds)
    n_truth = int(stats["n"])
    if n_truth == 0:
        t0, t1 = (str(ds["time"].values[i])[:19] for i in (0, -1))
        raise MetricError(f"the truth is all NaN or masked in the period {period!r} ({t0} .. {t1})")
    data_min, data_span = float(stats["min"]), float(stats["max"]) - float(stats["min"])
    if data_range is None:
        if data_span <= 0:
            raise MetricError(f"the truth is constant ({data_min}); give data_range= explicitly")
        data_range = data_span
    offset = float(stats["mean"])
    clim, clim_source = _climatology(ds, climatology, stats.get("monthly"))
    groups = period_groups(ds["time"], period, breakdown)
    seasons_present = [s for s in SEASONS if s in groups] or list(SEASONS)
    season_of_step = np.full(T, -1)
    tseason = ds["time"].dt.season.values
    for i, s in enumerate(seasons_present):
        season_of_step[tseason == s] = i

    rows: list[tuple] = []
    maps: dict[str, list] = {}
    season_maps: dict[str, list] = {"rmse_season": [], "bias_season": []}
    spectra_out: dict[str, np.ndarray] = {}
    step_scores: dict[str, dict[str, np.ndarray]] = {}
    headline: dict[str, dict[str, float]] = {}
    pred_range: dict[str, tuple[float, float]] = {}

    def add(model, metric, per, region, value):
        rows.append((run, model, metric, variable, per, region, float(value)))

    for name in names:
        pred = _score_name(name, ds)
        sums = _Sums(T, 2 * nr, H, W, len(seasons_present))
        nvalid, prange = 0, [math.inf, -math.inf]
        for start in range(0, T, block):
            s = slice(start, min(start + block, T))
            t = np.asarray(truth.isel(time=s).values, dtype=np.float64)
            p = np.asarray(pred.isel(time=s).values, dtype=np.float64)
            m = np.asarray(mask.isel(time=s).values if "time" in mask.dims else mask.values, dtype=bool)
            v = np.isfinite(t) & np.isfinite(p) & np.broadcast_to(m, t.shape)
            nvalid += int(v.sum())
            if v.any():
                prange = [min(prange[0], float(p[v].min())), max(prange[1], float(p[v].max()))]
            c = clim.block(s)
            dims = ("time", *sdims)
            # float32 SSIM: 3x faster convolutions, good to ~1e-4 (see ssim_map)
            img = ssim_map(xr.DataArray(p.astype(np.float32), dims=dims), xr.DataArray(t.astype(np.float32), dims=dims),
                           xr.DataArray(v, dims=dims),
                           data_range=data_range, data_min=data_min).values
            _block_sums(sums, s, p, t, v, c, offset, regw, img, season_of_step[s], spectra,
                        truth_spectrum="truth" not in spectra_out)
        if nvalid == 0:
            raise MetricError(f"{name!r} has no valid value where the truth is valid in the period {period!r}")
        pred_range[name] = tuple(prange)

        st = sums.step
        # "sp", "spp", "stt", "spt" hold sums of (x - offset); "st" the raw truth sum.
        step_pearson = pearson_from_sums(st["n"], st["sp"], st["st"] - st["n"] * offset, st["spp"], st["stt"], st["spt"])
        step_acc = acc_from_sums(st["saa"], st["sa2"], st["sb2"])
        step_scores[name] = {"pearson": step_pearson, "acc": step_acc}

        # -- table: every period x region x weighting ------------------------------------
        pix = sums.pix
        temporal_r = pearson_from_sums(pix["n"], pix["sp"], pix["st"] - pix["n"] * offset, pix["spp"], pix["stt"],
                                     pix["spt"])
        for label, sel in groups.items():
            for j, region in enumerate(region_names):
                for suffix, col in (("", j), ("_latw", nr + j)):
                    n = st["n"][sel, col].sum()
                    if not n > 0:
                        continue
                    mse_v = st["sse"][sel, col].sum() / n
                    vals = {
                        "mae": st["sae"][sel, col].sum() / n,
                        "rmse": math.sqrt(mse_v),
                        "mse": mse_v,
                        "bias": st["se"][sel, col].sum() / n,
                        "pearson": _nanmean(step_pearson[sel, col]),
                        "acc": _nanmean(step_acc[sel, col]),
                    }
                    if suffix == "":
                        tsum = st["st"][sel, col].sum()
                        vals["relative_bias"] = st["se"][sel, col].sum() / tsum if tsum != 0 else math.nan
                        vals["ssim"] = st["sss"][sel, col].sum() / n
                        vals["psnr"] = float(psnr_from_mse(mse_v, data_range))
                        if label == period:
                            rm = rmask.values[j]
                            vals["pearson_temporal"] = _nanmean(temporal_r[rm & np.isfinite(temporal_r)]) \
                                if np.isfinite(temporal_r[rm]).any() else math.nan
                    else:
                        vals = {k: vals[k] for k in ("mae", "rmse", "bias", "pearson", "acc")}
                    for metric, value in vals.items():
                        add(name, metric + suffix, label, region, value)

        # -- maps -----------------------------------------------------------------------
        pn = pix["n"]
        with np.errstate(invalid="ignore", divide="ignore"):
            m_mse = _ratio(pix["sse"], pn)
            maps.setdefault("mae", []).append(_f32(_ratio(pix["sae"], pn)))
            maps.setdefault("rmse", []).append(_f32(np.sqrt(m_mse)))
            maps.setdefault("bias", []).append(_f32(_ratio(pix["se"], pn)))
            maps.setdefault("relative_bias", []).append(_f32(_ratio(pix["se"], np.where(pix["st"] != 0, pix["st"], np.nan))))
            maps.setdefault("pearson", []).append(_f32(temporal_r))
            maps.setdefault("acc", []).append(_f32(acc_from_sums(pix["saa"], pix["sa2"], pix["sb2"])))
            maps.setdefault("ssim", []).append(_f32(_ratio(pix["sss"], pn)))
            sn = sums.season["n"]
            season_maps["rmse_season"].append(_f32(np.sqrt(_ratio(sums.season["sse"], sn))))
            season_maps["bias_season"].append(_f32(_ratio(sums.season["se"], sn)))
        if spectra:
            spectra_out[name] = sums.spec_model / sums.spec_steps
            if sums.spec_truth is not None:
                spectra_out.setdefault("truth", sums.spec_truth / sums.spec_steps)

        headline[name] = {}
        _release_freed_memory()

    # -- whole-period extras: distribution, spearman, spectra, ensembles ------------------
    valid_all = truth.notnull() & mask
    if distribution or spearman:
        # streamed in time blocks (engine.evaluation.streaming): pooled quantiles from per-block
        # histograms (within one bin of 1/65536 of the range), per-pixel tail quantiles exact
        from engine.evaluation.streaming import TruthRanks, streamed_extras

        wet = wet_threshold(ds["truth"].attrs.get("units")) if _is_precip(ds, variable) else None
        # the truth's spatial ranks sorted once for every prediction (a temporary file)
        truth_ranks = TruthRanks((T, H, W)) if spearman and len(names) > 1 else None
        try:
            for name in names:
                lo, hi = min(data_min, pred_range[name][0]), max(data_min + data_span, pred_range[name][1])
                extra_rows, extra_maps = streamed_extras(truth, _score_name(name, ds), mask, rmask.values,
                                                         region_names, sdims, block, (lo, hi), distribution, spearman,
                                                         wet, truth_ranks=truth_ranks)
                for metric, region, value in extra_rows:
                    add(name, metric, period, region, value)
                for key, value in extra_maps.items():
                    maps.setdefault(key, []).append(_f32(value))
                _release_freed_memory()
        finally:
            if truth_ranks is not None:
                truth_ranks.close()

    if spectra:
        for name in names:
            ratio = _ratio(spectra_out[name], spectra_out["truth"])
            L = max(H, W)
            wl = L / np.arange(1, ratio.size + 1)
            small = ratio[wl < 4.0]
            add(name, "spectral_ratio_small", period, "domain", _nanmean(small) if small.size else math.nan)

    ens = [n for n in names if "member" in ds[n].dims]
    for name in ens:
        from engine.evaluation.probabilistic import crps, ensemble_mean_rmse, spread_skill_ratio

        for metric, fn in (("crps", crps), ("spread_skill_ratio", spread_skill_ratio),
                           ("ensemble_mean_rmse", ensemble_mean_rmse)):
            add(name, metric, period, "domain", float(fn(ds[name], truth, mask=valid_all)))

    scores = pd.DataFrame(rows, columns=COLUMNS)
    scores = _add_skill(scores, reference)

    # -- headline ---------------------------------------------------------------------------
    top = scores[(scores.period == period) & (scores.region == "domain")]
    for name in names:
        sel = top[top.model == name].set_index("metric")["value"]
        headline[name] = {k: _json_float(sel.get(k, math.nan)) for k in HEADLINE}

    maps_ds = _maps_dataset(ds, names, maps, season_maps, seasons_present, spectra_out, rmask, lat, lon)
    maps_ds.attrs.update(
        Conventions="CF-1.8",
        finescale_run=run,
        variable=variable,
        period=period,
        data_range=float(data_range),
        data_min=data_min,
        data_range_note="R used by PSNR and SSIM (max - min of the valid truth unless given); SSIM is taken on "
        "fields scaled to (x - data_min) / data_range",
        climatology_source=clim_source,
        skill_reference=reference,
    )
    return Evaluation(scores=scores, maps=maps_ds, headline=headline)


def _json_float(v) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def _add_skill(scores: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Rows ``mse_skill`` and ``mae_skill`` (1 - score / reference score) for every model but
    the reference, per period and region."""
    if scores.empty or reference not in set(scores.model):
        return scores
    keys = ["period", "region"]
    ref = scores[(scores.model == reference) & scores.metric.isin(["mse", "mae"])]
    ref = ref.pivot_table(index=keys, columns="metric", values="value")
    out = []
    for model, sub in scores[scores.metric.isin(["mse", "mae"])].groupby("model"):
        if model == reference:
            continue
        piv = sub.pivot_table(index=keys, columns="metric", values="value")
        for metric in ("mse", "mae"):
            if metric not in piv or metric not in ref:
                continue
            r = ref[metric].reindex(piv.index)
            skill = 1.0 - piv[metric] / r.where(r > 0)
            for (per, region), val in skill.items():
                out.append((sub.run.iloc[0], model, f"{metric}_skill", sub.variable.iloc[0], per, region, float(val)))
    if out:
        scores = pd.concat([scores, pd.DataFrame(out, columns=COLUMNS)], ignore_index=True)
    return scores


def _maps_dataset(ds, names, maps, season_maps, seasons, spectra_out, rmask, lat, lon) -> xr.Dataset:
    units = ds["truth"].attrs.get("units", "")
    sdims = grid_dims(ds["truth"])
    # the predictions' own spatial coordinates (1-D lat/lon, or y/x with 2-D lat/lon and crs)
    coords = {"model": names, **{c: v.variable for c, v in ds.coords.items() if c == "crs" or
                                 (v.dims and set(v.dims) <= set(sdims))}}
    desc = {
        "mae": ("mean absolute error", units), "rmse": ("root mean squared error", units),
        "bias": ("mean error (prediction minus truth)", units), "relative_bias": ("bias / mean truth", "1"),
        "pearson": ("temporal Pearson correlation", "1"), "spearman": ("temporal Spearman correlation", "1"),
        "acc": ("temporal anomaly correlation", "1"), "ssim": ("time-mean SSIM", "1"),
        "q01_bias": ("1st-percentile bias over time", units), "q99_bias": ("99th-percentile bias over time", units),
    }
    out = xr.Dataset(coords=coords)
    for k, arrs in maps.items():
        out[k] = (("model", *sdims), np.stack(arrs).astype(np.float32))
        out[k].attrs.update(long_name=desc.get(k, (k, ""))[0], units=desc.get(k, ("", ""))[1])
    for k, arrs in season_maps.items():
        if arrs:
            out[k] = (("model", "season", *sdims), np.stack(arrs).astype(np.float32))
            out[k].attrs.update(long_name=k.replace("_season", "") + " by season", units=units)
    if seasons:
        out = out.assign_coords(season=list(seasons))
    if spectra_out:
        sources = ["truth", *names]
        nb = spectra_out["truth"].size
        L = max(ds.sizes[sdims[0]], ds.sizes[sdims[1]])
        k = np.arange(1, nb + 1)
        out = out.assign_coords(source=sources, wavenumber=k, wavelength=("wavenumber", L / k))
        out["power_spectrum"] = (("source", "wavenumber"), np.stack([spectra_out[s] for s in sources]))
        out["power_spectrum"].attrs.update(long_name="time-mean radially averaged power spectrum",
                                           units=f"({units})2" if units else "")
        out["spectral_ratio"] = (("model", "wavenumber"), np.stack([_ratio(spectra_out[n], spectra_out["truth"])
                                                                    for n in names]))
        out["spectral_ratio"].attrs.update(long_name="power spectrum ratio prediction / truth", units="1")
        out["wavelength"].attrs.update(long_name="wavelength", units="grid cells")
    out["region_mask"] = (("region", *sdims), rmask.values.astype("int8"))
    out = out.assign_coords(region=rmask["region"].values)
    out["region_mask"].attrs.update(long_name="regions of the scores table (1 = inside)")
    for c in ("lat", "lon"):
        out[c].attrs.update(ds[c].attrs)
    return out


# ---------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------
def _resolve(run):
    from engine.runs import Run, RunStore

    if isinstance(run, Run):
        return run
    return RunStore().resolve(run)


def _open_predictions(run, block: int | None = None) -> xr.Dataset:
    """The run's predictions, opened lazily with dask (time chunks of ``block`` steps; None: the
    file's own, one step each as written): nothing is loaded until a block is read. ``predictions.zarr`` (``inference.format: zarr``) when there is
    no ``predictions.nc``."""
    path = Path(run.predictions_path)
    zarr_path = path.with_suffix(".zarr")
    if not path.exists() and zarr_path.is_dir():
        return xr.open_zarr(zarr_path, chunks={"time": block} if block else {})
    if not path.exists():
        raise MetricError(f"run {run.run_id!r} has no predictions.nc at {path}; write predictions first")
    from engine.data.catalog import OPEN_LOCK  # HDF5 is not thread-safe while opening

    with OPEN_LOCK:
        return xr.open_dataset(path, chunks={"time": block} if block else {})


def _test_period(run, ds: xr.Dataset) -> xr.Dataset:
    try:
        start, end = run.config.data.test_period
    except Exception:  # no readable config: score what the file holds
        return ds
    sub = ds.sel(time=slice(start, end))
    if sub.sizes["time"] == 0:
        t = ds["time"].values
        raise MetricError(
            f"predictions.nc of run {run.run_id!r} holds no time step in the test period {start} .. {end} "
            f"(it spans {str(t[0])[:10]} .. {str(t[-1])[:10]})" if t.size else "predictions.nc holds no time step"
        )
    return sub


def evaluate_run(run, regions: Any = None, climatology: xr.DataArray | None = None,
                 data_range: float | None = None, **options: Any) -> pd.DataFrame:
    """Score a run's ``predictions.nc`` on the test period and write the results.

    Writes ``scores.csv`` (:data:`COLUMNS`) and ``maps.nc`` in the run folder atomically and
    ``status.json["scores"] = {"model": {"rmse", "mae", "bias", "pearson", "ssim", "psnr"},
    "bicubic": {...}, ...}`` (domain, whole test period; None for non-finite values).

    Parameters
    ----------
    run : :class:`engine.runs.Run`, a run folder or a run id in the default store
    regions, climatology, data_range, **options : see :func:`evaluate_dataset`

    Returns
    -------
    DataFrame with columns ``run, model, metric, variable, period, region, value``.

    Example
    -------
    >>> df = evaluate_run(run)                                                 # doctest: +SKIP
    >>> df.query("metric == 'rmse' and period == 'test' and region == 'domain'")  # doctest: +SKIP
    """
    from engine.runs import atomic_path

    run = _resolve(run)
    with _open_predictions(run, options.get("block")) as ds:
        ds = _test_period(run, ds)
        # Skill scores and the headline ratio are against the best baseline on the validation
        # period (chosen at prediction time, engine.inference.baselines), not the weakest.
        best = ds.attrs.get("best_baseline")
        if best in ds.data_vars:
            options.setdefault("reference", best)
        result = evaluate_dataset(ds, run=run.run_id, period="test", regions=regions, climatology=climatology,
                                  data_range=data_range, **options)
        result.headline.update(headline_reference(ds, result.headline))
    with atomic_path(run.scores_path) as tmp:
        result.scores.to_csv(tmp, index=False)
    with atomic_path(run.maps_path) as tmp:
        result.maps.to_netcdf(tmp)
    run.update_status(scores=result.headline)
    return result.scores


def headline_reference(ds: xr.Dataset, headline: dict) -> dict:
    """``{"reference": {"name", "chosen_on", "val_rmse", "rmse", "ratio"}}``: the best baseline on the
    validation period (``ds.attrs["best_baseline"]``) and the model's test RMSE ratio to it; ``{}``
    for predictions without that attribute (written before baselines were chosen)."""
    from engine.inference.baselines import parse_val_rmse

    best = ds.attrs.get("best_baseline")
    if not best or best not in headline:
        return {}
    rmse = headline[best].get("rmse")
    model = (headline.get("model") or {}).get("rmse")
    ratio = _json_float(model / rmse) if model is not None and rmse else None
    val = parse_val_rmse(ds.attrs.get("baseline_val_rmse", ""))
    return {"reference": {"name": str(best), "chosen_on": str(ds.attrs.get("best_baseline_period", "val")),
                          "val_rmse": _json_float(val.get(best, math.nan)), "rmse": rmse, "ratio": ratio}}


def read_scores(run) -> pd.DataFrame:
    """The run's ``scores.csv`` (evaluating the run first when it has none)."""
    run = _resolve(run)
    if not Path(run.scores_path).exists():
        return evaluate_run(run)
    return pd.read_csv(run.scores_path)


def compare_runs(runs: Iterable, metrics: Sequence[str] = HEADLINE, period: str = "test",
                 region: str = "domain", baselines: bool = True) -> pd.DataFrame:
    """Runs side by side with their baselines: one row per (run, model), one column per metric.

    Parameters
    ----------
    runs : Runs, run folders or run ids (runs without ``scores.csv`` are evaluated first)
    metrics : metric names (columns); unknown names raise an error listing the registered ones
    period, region : which slice of the scores tables

    Returns
    -------
    DataFrame with columns ``run, model, <metrics...>``; ``model`` is ``model`` or a baseline.

    Example
    -------
    >>> compare_runs(["run-a", "run-b"], metrics=("rmse", "ssim"))   # doctest: +SKIP
           run    model  rmse  ssim
    0    run-a    model  0.61  0.93
    1    run-a  bicubic  0.88  0.87
    ...
    """
    from engine.registry import METRICS

    import engine.evaluation.metrics  # noqa: F401  (registers the metrics)

    metrics = [METRICS.check(m) if not m.endswith("_temporal") else m for m in metrics]
    runs = list(runs)
    if not runs:
        raise MetricError("compare_runs needs at least one run")
    frames = []
    for r in runs:
        df = read_scores(r)
        df = df[(df.period == period) & (df.region == region) & df.metric.isin(metrics)]
        if not baselines:
            df = df[~df.model.isin(BASELINE_NAMES)]
        if df.empty:
            raise MetricError(f"run {_resolve(r).run_id!r} has no scores for period {period!r}, region {region!r}")
        frames.append(df)
    all_scores = pd.concat(frames, ignore_index=True)
    table = all_scores.pivot_table(index=["run", "model"], columns="metric", values="value", sort=False)
    table = table.reindex(columns=[m for m in metrics if m in table.columns]).reset_index()
    table.columns.name = None
    return table
