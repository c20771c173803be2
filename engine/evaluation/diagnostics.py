"""CORDEX ML-Bench diagnostics: prediction vs truth through indices, spectra and distributions.

Each diagnostic compares a prediction with the truth and reduces to one number for a scorecard:

- ``bias_<index>`` (one per index of :mod:`engine.evaluation.indices`): the index map of the
  prediction minus that of the truth; one number = the spatial mean of its absolute value (the
  benchmark's reduction). ``dim="time"`` returns the (signed) bias map.
- ``ralsd``: radially averaged log spectral distance, the benchmark's definition (Harris et al.
  2022 as coded in ``evaluation/diagnostics.py``): the power |FFT|^2 of each day's field (NaN set
  to 0, no mean removed), averaged over annuli of integer distance from the centre of the shifted
  spectrum, averaged over days; then the mean over annuli of (10 log10(P_truth / P_pred))^2, in
  dB^2 (no square root, as in the benchmark). 0 is best.
- ``wasserstein``: the 1-D Wasserstein (earth mover's) distance between the pooled values of
  prediction and truth (scipy), or per cell over time (``dim="time"``; equal sample sizes, so
  it is the mean absolute difference of the sorted series).
- :func:`correlation_bias`: bias of the temporal correlation between two variables (tasmax-pr).
- RMSE is :func:`engine.evaluation.metrics.rmse`.

Registered in :data:`engine.registry.METRICS` with the usual signature
``(pred, truth, mask=None, weights=None, dim=None) -> DataArray``, so any run (not only
ML-Bench ones) can be scored with them. Grids are whatever the data carry: the spatial dims are
the last two dims of the data ((lat, lon) or (y, x)).

Example
-------
>>> import numpy as np, xarray as xr
>>> t = xr.date_range("2001-01-01", periods=365, freq="D", use_cftime=True)
>>> truth = xr.DataArray(np.full((365, 2, 2), 290.0), dims=("time", "y", "x"), coords={"time": t},
...                      attrs={"units": "K"})
>>> float(index_bias(truth + 1.5, truth, "txx").mean())
1.5
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from engine.evaluation._common import MetricError, check_aligned, require_valid, valid_weights
from engine.evaluation.indices import INDICES, compute_index, select_season
from engine.registry import METRICS


def spatial_dims_of(da: xr.DataArray) -> tuple[str, str]:
    """The two grid dims: the last two dims that are neither time nor member."""
    dims = [d for d in da.dims if d not in ("time", "member")]
    if len(dims) < 2:
        raise MetricError(f"expected a 2-D grid (e.g. (time, y, x)); got dims {list(da.dims)}")
    return dims[-2], dims[-1]


def _masked(pred, truth, mask):
    check_aligned(pred, truth)
    valid = valid_weights(pred, truth, mask) > 0
    require_valid(valid, "the data")
    units = truth.attrs.get("units")
    p = pred.where(valid)
    t = truth.where(valid)
    p.attrs, t.attrs = dict(pred.attrs), dict(truth.attrs)
    if units and not p.attrs.get("units"):
        p.attrs["units"] = units  # compared against the truth: same units
    return p, t


def index_bias(pred, truth, index: str, season: str | None = None, relative: bool = False, mask=None,
               **options) -> xr.DataArray:
    """Index of ``pred`` minus index of ``truth`` (divided by the truth's when ``relative``).

    Parameters
    ----------
    pred, truth : DataArray (time, y, x), same grid and time axis
    index : a name of :data:`engine.evaluation.indices.INDICES`
    season : None (all days), DJF/MAM/JJA/SON or winter/spring/summer/autumn
    mask : valid cells (True/1); NaN also counts as invalid
    options : passed to the index (``q``, ``threshold``, ``units``)

    Returns
    -------
    DataArray (y, x), the bias map.
    """
    p, t = _masked(pred, truth, mask)
    ip = compute_index(p, index, season=season, **options)
    it = compute_index(t, index, season=season, **options)
    out = ip - it
    if relative:
        out = out / it.where(it != 0)
    return out.rename(f"bias_{index}").assign_attrs(units="1" if relative else it.attrs.get("units", ""))


def index_ratio(pred, truth, index: str, season: str | None = None, mask=None, **options) -> xr.DataArray:
    """Index of ``pred`` divided by the index of ``truth`` (NaN where the truth's is 0)."""
    p, t = _masked(pred, truth, mask)
    it = compute_index(t, index, season=season, **options)
    return (compute_index(p, index, season=season, **options) / it.where(it != 0)).rename(f"ratio_{index}")


def radial_psd(da: xr.DataArray, season: str | None = None) -> xr.DataArray:
    """The benchmark's radially averaged power spectrum, averaged over every non-grid dim.

    Each 2-D field (NaN -> 0) is Fourier transformed, shifted so the zero frequency sits at the
    centre, squared; each annulus ``r = int(hypot(i - ci, j - cj))`` around the centre
    ``((H-1)/2, (W-1)/2)`` is averaged (a bincount over all fields at once, no Python loop).

    Returns
    -------
    DataArray (wavenumber,): r = 0 (the mean) up to the corners.
    """
    if "time" in da.dims:
        da = select_season(da, season)
    ydim, xdim = spatial_dims_of(da)
    other = [d for d in da.dims if d not in (ydim, xdim)]
    import scipy.fft

    v = np.nan_to_num(np.asarray(da.transpose(*other, ydim, xdim).values), nan=0.0)
    H, W = v.shape[-2:]
    v = v.reshape(-1, H, W)
    # scipy's FFT keeps float32 input in single precision (numpy's always doubles) and uses every core
    power = np.abs(np.fft.fftshift(scipy.fft.fft2(v, axes=(-2, -1), workers=-1), axes=(-2, -1))) ** 2
    power = power.astype(np.float64)
    iy, ix = np.indices((H, W))
    r = np.hypot(ix - (W - 1) / 2.0, iy - (H - 1) / 2.0).astype(np.int32).ravel()
    nbins = r.max() + 1
    counts = np.bincount(r, minlength=nbins)
    total = np.bincount(r, weights=power.mean(axis=0).ravel(), minlength=nbins)
    # The mean over days of each day's radial average equals the radial average of the mean power.
    out = total / np.maximum(counts, 1)
    return xr.DataArray(out, dims="wavenumber", coords={"wavenumber": np.arange(nbins)}, name="psd")


def ralsd_of(psd_truth: xr.DataArray, psd_pred: xr.DataArray) -> float:
    """Mean over wavenumbers of (10 log10(P_truth / P_pred))^2 (both floored at 1e-30), dB^2."""
    ratio = np.asarray(psd_truth) / np.maximum(np.asarray(psd_pred), 1e-30)
    return float(np.mean((10.0 * np.log10(np.maximum(ratio, 1e-30))) ** 2))


def ralsd(pred, truth, mask=None, weights=None, dim=None, season: str | None = None) -> xr.DataArray:
    """Radially averaged log spectral distance between prediction and truth (0 is best).

    Masked cells (and NaN in either) are set to 0 in both before the transform, as the
    benchmark does with NaN. ``dim`` must be None: a spectrum needs the whole grid and the
    average over days.
    """
    if weights is not None:
        raise MetricError("ralsd takes no weights")
    if dim is not None:
        raise MetricError(f"ralsd reduces to one number only; dim={dim!r} is not valid, accepted: None")
    p, t = _masked(pred, truth, mask)
    return xr.DataArray(ralsd_of(radial_psd(t, season), radial_psd(p, season)), name="ralsd",
                        attrs={"units": "dB2"})


def wasserstein_1d(a: np.ndarray, b: np.ndarray, b_sorted: bool = False) -> float:
    """W1 between the empirical distributions of samples ``a`` and ``b``. With equal sizes it is
    the mean absolute difference of the sorted samples (two sorts; scipy's general algorithm took
    ~40 s on 12 million values here); otherwise scipy.stats.wasserstein_distance."""
    if a.size != b.size:
        from scipy.stats import wasserstein_distance

        return float(wasserstein_distance(a, b))
    sa = np.sort(a.astype(np.float64))
    sb = b.astype(np.float64) if b_sorted else np.sort(b.astype(np.float64))
    return float(np.mean(np.abs(sa - sb)))


def wasserstein(pred, truth, mask=None, weights=None, dim=None, season: str | None = None) -> xr.DataArray:
    """1-D Wasserstein distance between the value distributions of prediction and truth.

    ``dim=None``: pooled over every valid point (scipy.stats.wasserstein_distance);
    ``dim="time"``: one distance per grid cell between its two daily series.
    """
    if weights is not None:
        raise MetricError("wasserstein takes no weights")
    p, t = _masked(pred, truth, mask)
    if "time" in p.dims:
        p, t = select_season(p, season), select_season(t, season)
    if dim is None:
        a, b = p.values.ravel(), t.values.ravel()
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        return xr.DataArray(wasserstein_1d(a, b), name="wasserstein", attrs={"units": truth.attrs.get("units", "")})
    if dim != "time" and list(np.atleast_1d(dim)) != ["time"]:
        raise MetricError(f"wasserstein: dim={dim!r} is not valid; accepted: None (pooled) or 'time' (per cell)")
    # Equal sample sizes: W1 = mean |sorted(a) - sorted(b)|; masked days are dropped pairwise.
    sa = np.sort(p.transpose("time", ...).values, axis=0)
    sb = np.sort(t.transpose("time", ...).values, axis=0)
    out = np.nanmean(np.abs(sa - sb), axis=0) if np.isfinite(sa).any() else np.full(sa.shape[1:], np.nan)
    rest = [d for d in p.transpose("time", ...).dims if d != "time"]
    coords = {k: v for k, v in truth.coords.items() if set(v.dims) <= set(rest)}
    return xr.DataArray(out, dims=rest, coords=coords, name="wasserstein")


def correlation_bias(pred: xr.Dataset, truth: xr.Dataset, var_x: str = "tasmax", var_y: str = "pr",
                     season: str | None = None) -> xr.Dataset:
    """Bias of the temporal correlation between two variables at each cell.

    Returns
    -------
    Dataset with ``correlation_truth``, ``correlation_pred`` and ``correlation_bias`` (pred - truth).
    """
    for name, ds in (("prediction", pred), ("truth", truth)):
        missing = [v for v in (var_x, var_y) if v not in ds]
        if missing:
            raise MetricError(f"the {name} lacks {missing}; it has {list(ds.data_vars)}")
    ct = xr.corr(select_season(truth[var_x], season), select_season(truth[var_y], season), dim="time")
    cp = xr.corr(select_season(pred[var_x], season), select_season(pred[var_y], season), dim="time")
    return xr.Dataset({"correlation_truth": ct, "correlation_pred": cp, "correlation_bias": cp - ct})


def reduce_map(bias_map: xr.DataArray, weights=None) -> xr.DataArray:
    """The benchmark's one number for a bias map: the (weighted) spatial mean of its absolute value."""
    a = abs(bias_map)
    if weights is None:
        return a.mean()
    w = weights.broadcast_like(a).where(a.notnull(), 0)
    return (a.fillna(0) * w).sum() / w.sum()


def _index_metric(index: str, options: dict):
    def metric(pred, truth, mask=None, weights=None, dim=None, season=None):
        b = index_bias(pred, truth, index, season=season, mask=mask, **options)
        if dim is None:
            return reduce_map(b, weights).rename(f"bias_{index}")
        if dim == "time" or list(np.atleast_1d(dim)) == ["time"]:
            return b
        raise MetricError(f"bias_{index}: dim={dim!r} is not valid; accepted: None (one number) or 'time' (a map)")

    metric.__name__ = f"bias_{index}"
    metric.__doc__ = (f"Bias of the index {index!r} ({INDICES[index][2]}); one number = spatial mean of "
                      "its absolute value, dim='time' = the signed bias map.")
    return metric


# What the scorecard lists for each index: ``q`` for the quantile index.
INDEX_METRICS = {
    "bias_mean": ("mean", {}),
    "bias_q98": ("quantile", {"q": 0.98}),
    "bias_txx": ("txx", {}), "bias_txn": ("txn", {}), "bias_su": ("su", {}),
    "bias_rx1day": ("rx1day", {}), "bias_sdii": ("sdii", {}), "bias_cdd": ("cdd", {}), "bias_cwd": ("cwd", {}),
    "bias_lag1_autocorr": ("lag1_autocorr", {}), "bias_interannual_var": ("interannual_var", {}),
}

for _name, (_index, _options) in INDEX_METRICS.items():
    METRICS.register(
        _name, kind="distribution", higher_is_better=False, units={"lag1_autocorr": "1", "su": "days", "cdd": "days", "cwd": "days"}.get(_index, "same"),
        description=f"mean absolute bias of the {INDICES[_index][2]} (CORDEX ML-Bench index)",
        variables=INDICES[_index][1], index=_index,
    )(_index_metric(_index, _options))

METRICS.register("ralsd", kind="spectral", higher_is_better=False, units="dB2", variables=None,
                 description="radially averaged log spectral distance (CORDEX ML-Bench); 0 is best")(ralsd)
METRICS.register("wasserstein", kind="distribution", higher_is_better=False, units="same", variables=None,
                 description="Wasserstein distance of the value distributions (CORDEX ML-Bench); 0 is best")(wasserstein)
