"""Deterministic and image metrics on xarray, mask- and weight-aware, and the metric registry.

Every metric has the signature (see :mod:`engine.evaluation._common`)::

    metric(pred, truth, mask=None, weights=None, dim=None, **options) -> xr.DataArray

``dim=None`` reduces everything (one number); ``dim=("lat", "lon")`` gives one value per time
step (spatial); ``dim="time"`` gives a per-pixel map (temporal). ``mask`` (True/1 = valid) and
NaNs are excluded; ``weights`` (e.g. ``lat_weights(truth.lat)``) weight the means. The
``*_latw`` variants apply cos(latitude) weights themselves.

Libraries do what they do well: xskillscore the (weighted, NaN-skipping) Pearson and Spearman
correlations, torchmetrics the SSIM / MS-SSIM images. Written here by hand, because no library
does them with masks and weights: MAE, RMSE, bias, relative bias, anomaly correlation, PSNR from
the masked MSE (checked against torchmetrics in the tests).

Every metric is registered in :data:`engine.registry.METRICS` with ``kind``
(deterministic / probabilistic / distribution / spectral), ``higher_is_better``, ``units``
(``"same"`` = the variable's units, ``"1"`` = dimensionless, ``"dB"``) and ``description``.

Example
-------
>>> import numpy as np, xarray as xr
>>> truth = xr.DataArray(np.array([[1.0, 2.0], [3.0, 4.0]]), dims=("lat", "lon"))
>>> pred = truth + 1.0
>>> float(rmse(pred, truth)), float(bias(pred, truth))
(1.0, 1.0)
>>> METRICS.get("mae")(pred, truth).item()
1.0
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import xarray as xr

from engine.evaluation._common import (
    SPATIAL_DIMS,
    grid_dims,
    MetricError,
    check_aligned,
    dims_list,
    lat_weights,
    require_valid,
    valid_weights,
    wmean,
    with_lat_weights,
)
from engine.registry import METRICS

__all__ = [
    "METRICS", "MetricError", "lat_weights", "mae", "mse", "rmse", "bias", "relative_bias", "pearson",
    "spearman", "acc", "ssim", "ssim_map", "ms_ssim", "psnr", "skill_score", "data_range_of",
    "metric_info", "list_metrics",
]


def _setup(pred, truth, mask, weights, dim, exclude=()):
    check_aligned(pred, truth)
    w = valid_weights(pred, truth, mask, weights)
    require_valid(w, "the data")
    dims = dims_list(dim, truth, exclude)
    return w, dims


def _register(name: str, kind: str, higher_is_better: bool, units: str, description: str, **extra):
    return METRICS.register(
        name, kind=kind, higher_is_better=higher_is_better, units=units, description=description, **extra
    )


def _latw(fn: Callable) -> Callable:
    """The cos(latitude)-weighted twin of ``fn``."""

    def wrapped(pred, truth, mask=None, weights=None, dim=None, **kw):
        return fn(pred, truth, mask=mask, weights=with_lat_weights(truth, weights), dim=dim, **kw)

    wrapped.__name__ = f"{fn.__name__}_latw"
    wrapped.__doc__ = f"cos(latitude)-weighted :func:`{fn.__name__}` (same arguments)."
    return wrapped


# ---------------------------------------------------------------------------------------
# Error metrics
# ---------------------------------------------------------------------------------------
@_register("mae", "deterministic", False, "same", "mean absolute error")
def mae(pred, truth, mask=None, weights=None, dim=None):
    """Mean absolute error, sum(w |p - t|) / sum(w).

    Parameters
    ----------
    pred, truth : DataArray, same dims/coords, e.g. (time, lat, lon)
    mask : DataArray of bool or 0/1, broadcastable; True/1 = valid
    weights : DataArray broadcastable, >= 0
    dim : dims to reduce; None = all

    Example
    -------
    >>> t = xr.DataArray([0.0, 0.0]); float(mae(t + [1.0, -3.0], t))
    2.0
    """
    w, dims = _setup(pred, truth, mask, weights, dim)
    return wmean(abs(pred - truth), w, dims).rename("mae")


@_register("mse", "deterministic", False, "squared", "mean squared error")
def mse(pred, truth, mask=None, weights=None, dim=None):
    """Mean squared error, sum(w (p - t)^2) / sum(w). Shapes as :func:`mae`."""
    w, dims = _setup(pred, truth, mask, weights, dim)
    return wmean((pred - truth) ** 2, w, dims).rename("mse")


@_register("rmse", "deterministic", False, "same", "root mean squared error")
def rmse(pred, truth, mask=None, weights=None, dim=None):
    """Root mean squared error, sqrt(sum(w (p - t)^2) / sum(w)). With ``dim="time"`` the
    per-pixel RMSE map. Shapes as :func:`mae`.

    Example
    -------
    >>> t = xr.DataArray([0.0, 0.0]); float(rmse(t + [3.0, 4.0], t)) == (12.5) ** 0.5
    True
    """
    return np.sqrt(mse(pred, truth, mask, weights, dim)).rename("rmse")


@_register("bias", "deterministic", None, "same", "mean error (prediction minus truth); 0 is best")
def bias(pred, truth, mask=None, weights=None, dim=None):
    """Mean error sum(w (p - t)) / sum(w); positive = prediction too high. Shapes as :func:`mae`."""
    w, dims = _setup(pred, truth, mask, weights, dim)
    return wmean(pred - truth, w, dims).rename("bias")


@_register("relative_bias", "deterministic", None, "1", "bias / mean truth (fraction); 0 is best")
def relative_bias(pred, truth, mask=None, weights=None, dim=None):
    """Relative bias sum(w (p - t)) / sum(w t), a fraction (0.1 = 10 % too high). NaN where the
    truth sums to zero. Meaningful for positive variables (precipitation, wind speed, kelvin)."""
    w, dims = _setup(pred, truth, mask, weights, dim)
    num = wmean(pred - truth, w, dims)
    den = wmean(truth, w, dims)
    return (num / den.where(den != 0)).rename("relative_bias")


# ---------------------------------------------------------------------------------------
# Correlations
# ---------------------------------------------------------------------------------------
def _corr(fn, pred, truth, mask, weights, dim, name):
    w, dims = _setup(pred, truth, mask, weights, dim)
    valid = w > 0
    p = pred.where(valid)
    t = truth.where(valid)
    kwargs = {}
    if weights is not None:
        kwargs["weights"] = w.broadcast_like(t)
    out = fn(p, t, dim=dims, skipna=True, **kwargs)
    return out.rename(name)


@_register("pearson", "deterministic", True, "1", "Pearson correlation (weighted, xskillscore)")
def pearson(pred, truth, mask=None, weights=None, dim=None):
    """Pearson correlation over ``dim`` (xskillscore ``pearson_r``, NaN-skipping, weighted).

    ``dim=("lat", "lon")`` = spatial correlation per time step; ``dim="time"`` = temporal
    correlation per grid point; None = pooled over all points. Constant inputs give NaN.

    Example
    -------
    >>> t = xr.DataArray([1.0, 2.0, 3.0], dims="x"); float(pearson(2 * t + 1, t))
    1.0
    """
    import xskillscore as xs

    return _corr(xs.pearson_r, pred, truth, mask, weights, dim, "pearson")


def pearson_from_sums(n, sx, sy, sxx, syy, sxy):
    """Pearson correlation from running sums (count, sums, sums of squares and of products; the
    streaming evaluation's form of :func:`pearson`, arrays of any shape). NaN where fewer than two
    values or a constant series (variance below 1e-12 of the sum of squares: rounding); shift the
    values by a common offset before summing to keep the sums well conditioned."""
    cov = n * sxy - sx * sy
    vx = n * sxx - sx * sx
    vy = n * syy - sy * sy
    with np.errstate(invalid="ignore", divide="ignore"):
        r = cov / np.sqrt(vx * vy)
    ok = (n >= 2) & (vx > 1e-12 * np.maximum(n * sxx, 1e-300)) & (vy > 1e-12 * np.maximum(n * syy, 1e-300))
    return np.where(ok, np.clip(r, -1.0, 1.0), np.nan)


@_register("spearman", "deterministic", True, "1", "Spearman rank correlation (xskillscore)")
def spearman(pred, truth, mask=None, weights=None, dim=None):
    """Spearman rank correlation over ``dim`` (xskillscore ``spearman_r``); dims as :func:`pearson`."""
    import xskillscore as xs

    return _corr(xs.spearman_r, pred, truth, mask, weights, dim, "spearman")


def _climatology_like(climatology: xr.DataArray, truth: xr.DataArray) -> xr.DataArray:
    """Expand a climatology to ``truth``'s time axis: it may be static (lat, lon) or indexed by
    ``month`` (1..12), ``season`` (DJF..), ``dayofyear`` or ``hour``."""
    for key in ("month", "season", "dayofyear", "hour"):
        if key in climatology.dims:
            if "time" not in truth.dims:
                raise MetricError(f"a climatology by {key!r} needs a 'time' dimension in the truth")
            index = getattr(truth["time"].dt, key)
            missing = set(np.unique(index.values)) - set(climatology[key].values.tolist())
            if missing:
                raise MetricError(f"climatology lacks {key} values {sorted(missing)}")
            return climatology.sel({key: index}).drop_vars(key, errors="ignore")
    return climatology


@_register("acc", "deterministic", True, "1", "anomaly correlation (uncentred) against a climatology")
def acc(pred, truth, mask=None, weights=None, dim=None, climatology=None):
    """Anomaly correlation coefficient against ``climatology`` (e.g. the training climatology).

    ACC = sum(w a_p a_t) / sqrt(sum(w a_p^2) sum(w a_t^2)) with a = x - climatology (the
    uncentred form used by WMO and WeatherBench). ``dim=("lat", "lon")`` gives one ACC per time
    step (average it over time for a headline); ``dim="time"`` a per-pixel map.

    Parameters
    ----------
    climatology : DataArray (lat, lon), or with a leading ``month`` / ``season`` /
        ``dayofyear`` / ``hour`` dimension, selected per time step.
    """
    if climatology is None:
        raise MetricError("acc needs climatology= (e.g. the training-period mean per month and pixel)")
    w, dims = _setup(pred, truth, mask, weights, dim)
    clim = _climatology_like(climatology, truth)
    ap = pred - clim
    at = truth - clim
    out = xr.apply_ufunc(acc_from_sums, wmean(ap * at, w, dims), wmean(ap**2, w, dims), wmean(at**2, w, dims),
                         dask="allowed")
    return out.rename("acc")


def acc_from_sums(s_ab, s_aa, s_bb):
    """ACC from sums (or means) of the anomaly products ``a_p a_t``, ``a_p^2``, ``a_t^2``: the one
    formula of :func:`acc` and of the streaming evaluation; NaN where either anomaly is all zero."""
    s_ab, s_aa, s_bb = (np.asarray(x, dtype=float) for x in (s_ab, s_aa, s_bb))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = s_ab / np.sqrt(s_aa * s_bb)
    return np.where((s_aa > 0) & (s_bb > 0), r, np.nan)


# ---------------------------------------------------------------------------------------
# Image metrics (torchmetrics)
# ---------------------------------------------------------------------------------------
def data_range_of(truth: xr.DataArray, mask=None) -> float:
    """The data range used by SSIM and PSNR when none is given: max - min of the valid truth.

    Example
    -------
    >>> data_range_of(xr.DataArray([1.0, 5.0, np.nan]))
    4.0
    """
    t = truth if mask is None else truth.where(mask.astype(bool))
    lo, hi = float(t.min()), float(t.max())
    if not np.isfinite(lo):
        raise MetricError("no valid points in the truth: every value is NaN or masked")
    if hi <= lo:
        raise MetricError(f"the truth is constant ({lo}); give data_range= explicitly")
    return hi - lo


def _data_min(truth, valid, data_min):
    if data_min is not None:
        return float(data_min)
    return float(truth.where(valid).min())


def _image_stack(pred, truth, valid, lo=0.0, scale=1.0):
    """Stack every (lat, lon) image into (N, 1, H, W) arrays; invalid pixels get the same value
    in both (the image's valid truth mean) so they add no error to the windows around them."""
    sdims = grid_dims(truth)
    other = [d for d in truth.dims if d not in sdims]
    order = other + list(sdims)
    p = pred.transpose(*order, ...)
    t = truth.transpose(*order)
    v = valid.broadcast_like(t).transpose(*order)
    pv, tv, vv = (np.asarray(a.values) for a in (p, t, v))
    # float32 (fast convolutions) unless the truth is float64: torchmetrics' SSIM in float32 is
    # good to about 1e-4 on fields scaled to [0, 1].
    dtype = np.float64 if tv.dtype == np.float64 else np.float32
    H, W = tv.shape[-2:]
    pv = ((pv.reshape(-1, H, W) - lo) / scale).astype(dtype, copy=False)
    tv = ((tv.reshape(-1, H, W) - lo) / scale).astype(dtype, copy=False)
    vv = vv.reshape(-1, H, W).astype(bool, copy=False)
    cnt = vv.sum(axis=(1, 2))
    fill = np.where(vv, tv, 0).sum(axis=(1, 2)) / np.maximum(cnt, 1)
    fill = fill.astype(dtype)[:, None, None]
    pv = np.where(vv, pv, fill)
    tv = np.where(vv, tv, fill)
    return pv, tv, order, [truth.sizes[d] for d in other], other


def _strip_rows(W: int, itemsize: int) -> int:
    """Rows of a strip of about 256 KiB: the passes over it stay in the CPU cache."""
    return max(8, 2**18 // max(1, W * itemsize))


def _blur_strip(src: np.ndarray, taps: np.ndarray, acc: np.ndarray, tmp: np.ndarray, out: np.ndarray) -> None:
    """``out`` (r, W) = ``src`` (r + K - 1, W + K - 1, already padded) correlated with ``taps``
    along rows, then columns (``acc`` / ``tmp``: scratch arrays of at least src's rows x W)."""
    K = taps.size
    r, W = out.shape
    a, t = acc[: r + K - 1], tmp[: r + K - 1]
    np.multiply(src[:, 0:W], taps[0], out=a)  # along each row
    for i in range(1, K):
        a += np.multiply(src[:, i : i + W], taps[i], out=t)
    t = t[:r]
    np.multiply(a[0:r], taps[0], out=out)  # then down the columns
    for i in range(1, K):
        out += np.multiply(a[i : i + r], taps[i], out=t)


def _padded(x: np.ndarray, pad: int) -> np.ndarray:
    return np.pad(x, ((pad, pad), (pad, pad)), mode="reflect")


def gaussian_blur(img: np.ndarray, taps: np.ndarray, rows: int | None = None) -> np.ndarray:
    """Separable correlation of every image of ``img`` (..., H, W) with the odd 1-D kernel
    ``taps`` along rows, then columns, reflect padding without edge repeat (torch's
    ``F.pad(mode="reflect")``, scipy's ``mirror``), in ``img``'s float type (as a float32
    ``conv2d``): equal to ``ndimage.correlate1d(.., axis=-1)`` then ``axis=-2``.

    Shift-and-add over strips of ``rows`` rows (default: about 256 KiB a strip), so the 2 x
    len(taps) passes over each strip run in the CPU cache instead of streaming the whole image
    from memory once per tap.
    """
    taps = np.asarray(taps, dtype=img.dtype)
    pad = taps.size // 2
    shape = img.shape
    H, W = shape[-2:]
    x = img.reshape(-1, H, W)
    if pad >= min(H, W):
        raise MetricError(f"a {taps.size}-tap blur needs images of at least {pad + 1} pixels a side; got {H}x{W}")
    rows = rows or _strip_rows(W, x.itemsize)
    out = np.empty_like(x)
    acc = np.empty((min(rows, H) + 2 * pad, W), dtype=x.dtype)
    tmp = np.empty_like(acc)
    for n in range(x.shape[0]):
        xp = _padded(x[n], pad)
        for r0 in range(0, H, rows):
            r = min(rows, H - r0)
            _blur_strip(xp[r0 : r0 + r + 2 * pad], taps, acc, tmp, out[n, r0 : r0 + r])
    return out.reshape(shape)


def _ssim_image_strips(x: np.ndarray, y: np.ndarray, taps: np.ndarray, c1: float, c2: float,
                       rows: int | None = None) -> np.ndarray:
    """The SSIM image of images ``x``, ``y`` (N, H, W) (see :func:`_separable_ssim_image`),
    computed a strip of rows at a time: the five blurred maps and every temporary of the formula
    are strip-sized and stay in cache (whole-image temporaries made the formula cost more than
    the blurs)."""
    dt = x.dtype
    taps = np.asarray(taps, dtype=dt)
    pad = taps.size // 2
    N, H, W = x.shape
    rows = rows or _strip_rows(W, x.itemsize)
    R = min(rows, H)
    out = np.empty_like(x)
    acc, tmp = np.empty((R + 2 * pad, W), dt), np.empty((R + 2 * pad, W), dt)
    prod = np.empty((R + 2 * pad, W + 2 * pad), dt)
    mu_a, mu_b, e_aa, e_bb, e_ab, u, v = (np.empty((R, W), dt) for _ in range(7))
    c1, c2 = dt.type(c1), dt.type(c2)
    for n in range(N):
        xp, yp = _padded(x[n], pad), _padded(y[n], pad)
        for r0 in range(0, H, rows):
            r = min(rows, H - r0)
            sx, sy = xp[r0 : r0 + r + 2 * pad], yp[r0 : r0 + r + 2 * pad]
            pr = prod[: r + 2 * pad]
            ma, mb, aa, bb, ab, uu, vv = (m[:r] for m in (mu_a, mu_b, e_aa, e_bb, e_ab, u, v))
            _blur_strip(sx, taps, acc, tmp, ma)
            _blur_strip(sy, taps, acc, tmp, mb)
            _blur_strip(np.multiply(sx, sx, out=pr), taps, acc, tmp, aa)
            _blur_strip(np.multiply(sy, sy, out=pr), taps, acc, tmp, bb)
            _blur_strip(np.multiply(sx, sy, out=pr), taps, acc, tmp, ab)
            # sigma_a^2 = max(E[a^2] - mu_a^2, 0), likewise b; sigma_ab = E[ab] - mu_a mu_b
            aa -= np.multiply(ma, ma, out=uu)
            np.maximum(aa, 0.0, out=aa)
            bb -= np.multiply(mb, mb, out=vv)
            np.maximum(bb, 0.0, out=bb)
            uu += vv  # mu_a^2 + mu_b^2
            ab -= np.multiply(ma, mb, out=vv)  # vv = mu_a mu_b
            num = out[n, r0 : r0 + r]
            np.multiply(vv, 2, out=num)
            num += c1
            ab *= 2
            ab += c2
            num *= ab  # (2 mu_ab + c1)(2 s_ab + c2)
            uu += c1
            aa += bb
            aa += c2
            uu *= aa  # (mu_aa + mu_bb + c1)(s_aa + s_bb + c2)
            num /= uu
    return out


def _separable_ssim_image(a, b, sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03):
    """torchmetrics' SSIM image (Gaussian window of 2 * int(3.5 sigma + 0.5) + 1 taps,
    reflect padding, data range 1), with the 2-D Gaussian applied as two 1-D correlations (rows,
    then columns; torch's ``F.pad(mode="reflect")``, without edge repeat, is scipy's ``mirror``).

    Why not torchmetrics itself: its 11x11 convolution made a year of daily 256x256 fields take
    minutes. Two 11-tap passes cost 22 multiply-adds a pixel whatever the image size (dense
    blur matrices, the earlier form, cost H + W: 10 GFLOP a 1024^2 image). The passes are
    shift-and-add by row strips that stay in cache (:func:`_ssim_image_strips`): ~9x faster on one
    CPU core than torch's ``conv2d`` with a 1 x 11 kernel, which has no fast path for
    one-channel images (a 1024^2 image: 9 ms against 80 ms).
    Same arithmetic otherwise; the tests check equality with torchmetrics' full SSIM image.

    a, b : tensors (N, 1, H, W) -> (N, 1, H, W)
    """
    import torch

    size = int(3.5 * sigma + 0.5) * 2 + 1
    pad = (size - 1) // 2
    dist = np.arange((1 - size) / 2, (1 + size) / 2, 1.0, dtype=np.float64)
    g = np.exp(-((dist / sigma) ** 2) / 2)
    g = g / g.sum()
    H, W = a.shape[-2:]
    if min(H, W) < pad + 1:
        raise MetricError(f"SSIM needs images of at least {pad + 1} pixels a side; got {min(H, W)}")
    x, y = a.numpy(), b.numpy()
    N = x.shape[0]
    img = _ssim_image_strips(x.reshape(N, H, W), y.reshape(N, H, W), g.astype(x.dtype), k1**2, k2**2)
    return torch.from_numpy(img.reshape(a.shape))


def _scaled_images(pred, truth, mask, data_range, data_min):
    """The valid-pixel mask, the data range (given or from the truth), the truth's minimum, and
    both fields stacked as images scaled to [0, 1] by them (SSIM and MS-SSIM share this)."""
    valid = valid_weights(pred, truth, mask) > 0
    require_valid(valid, "the data")
    if data_range is None:
        data_range = data_range_of(truth, valid)
    lo = _data_min(truth, valid, data_min)
    return valid, data_range, lo, _image_stack(pred, truth, valid, lo, float(data_range))


def ssim_map(pred, truth, mask=None, data_range=None, data_min=None, chunk=64, kernel_size=11, sigma=1.5,
             backend="separable"):
    """The SSIM image (torchmetrics, Gaussian window 11 / sigma 1.5, reflect padding) of every
    (lat, lon) field: same dims as ``truth``. NaN at invalid pixels.

    Both fields are first scaled to the truth's range, x' = (x - data_min) / data_range, and
    SSIM is taken with a data range of 1 (images in [0, 1]): the score then does not depend on
    the unit's offset (kelvin or degrees Celsius give the same SSIM) and float32 is precise.

    Parameters
    ----------
    pred, truth : DataArray (..., lat, lon)
    data_range : float; default :func:`data_range_of` (valid truth max - min)
    data_min : float; default the valid truth minimum
    chunk : images per torch call (bounds memory)
    backend : "separable" (the same SSIM as torchmetrics with a separable Gaussian, ~10x faster)
        or "torchmetrics" (its ``structural_similarity_index_measure``)
    """
    import torch

    check_aligned(pred, truth)
    valid, data_range, lo, (pv, tv, order, other_sizes, other) = _scaled_images(pred, truth, mask, data_range,
                                                                                data_min)
    H, W = pv.shape[-2:]
    if min(H, W) < kernel_size:
        raise MetricError(f"SSIM needs images of at least {kernel_size}x{kernel_size}; got {H}x{W}")
    out = np.empty_like(pv)
    with torch.no_grad():
        for s in range(0, pv.shape[0], chunk):
            a = torch.from_numpy(np.ascontiguousarray(pv[s : s + chunk]))[:, None]
            b = torch.from_numpy(np.ascontiguousarray(tv[s : s + chunk]))[:, None]
            if backend == "separable":
                img = _separable_ssim_image(a, b, sigma=sigma)
            elif backend == "torchmetrics":
                from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim

                _, img = tm_ssim(a, b, data_range=1.0, reduction="none", return_full_image=True,
                                 kernel_size=kernel_size, sigma=sigma)
            else:
                raise MetricError(f"backend={backend!r} is not valid; accepted: separable, torchmetrics")
            out[s : s + chunk] = img[:, 0].numpy()
    out = out.reshape(*other_sizes, H, W)
    coords = {k: v for k, v in truth.coords.items() if set(v.dims) <= set(order)}
    da = xr.DataArray(out, dims=order, coords=coords, name="ssim").transpose(*truth.dims)
    da.attrs.update(data_range=float(data_range), data_min=lo)
    return da.where(valid.broadcast_like(da))


@_register("ssim", "deterministic", True, "1", "structural similarity (torchmetrics), data range stated")
def ssim(pred, truth, mask=None, weights=None, dim=None, data_range=None, data_min=None):
    """Structural similarity: the torchmetrics SSIM image (see :func:`ssim_map` for the
    scaling to [0, 1] by ``data_min`` and ``data_range``) averaged (weighted) over ``dim`` and
    over valid pixels only. ``dim=("lat", "lon")``: per time step; ``dim="time"``: the per-pixel
    SSIM map; None: one number. ``attrs["data_range"]`` states the range used."""
    img = ssim_map(pred, truth, mask=mask, data_range=data_range, data_min=data_min)
    w = valid_weights(img, truth, None, weights)
    dims = dims_list(dim, truth)
    out = wmean(img, w, dims).rename("ssim")
    out.attrs.update(img.attrs)
    return out


_MS_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


@_register("ms_ssim", "deterministic", True, "1", "multi-scale SSIM (torchmetrics); masked pixels filled")
def ms_ssim(pred, truth, mask=None, weights=None, dim=None, data_range=None, data_min=None, kernel_size=None):
    """Multi-scale SSIM (torchmetrics), one value per (lat, lon) image (scaled to [0, 1] as
    in :func:`ssim_map`), then averaged over the other reduced dims. ``dim`` must include both lat and lon (an image metric has no
    per-pixel map). The number of scales shrinks (betas renormalised) to fit small domains.
    Masked pixels are filled with the image's mean truth in both inputs, so a largely masked
    domain scores closer to 1 than its valid part alone would: prefer :func:`ssim` there.
    """
    import torch
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure as tm_ms

    if weights is not None:
        raise MetricError("ms_ssim takes no weights (it is a whole-image score); use ssim for weighted maps")
    check_aligned(pred, truth)
    dims = dims_list(dim, truth)
    sdims = grid_dims(truth)
    if not set(sdims) <= set(dims):
        raise MetricError(f"ms_ssim reduces over whole images: dim must include {sdims[0]!r} and {sdims[1]!r}, got {dims}")
    valid, data_range, lo, (pv, tv, order, other_sizes, other) = _scaled_images(pred, truth, mask, data_range,
                                                                                data_min)
    H, W = pv.shape[-2:]
    k = kernel_size or min(11, (min(H, W) // 2) * 2 - 1)
    # torchmetrics needs min(H, W) > (k - 1) * 2 ** (scales - 1).
    scales = len(_MS_BETAS)
    while scales > 1 and min(H, W) <= (k - 1) * 2 ** (scales - 1):
        scales -= 1
    betas = np.array(_MS_BETAS[:scales])
    betas = tuple((betas / betas.sum()).tolist())
    with torch.no_grad():
        vals = []
        for s in range(0, pv.shape[0], 64):
            a = torch.from_numpy(np.ascontiguousarray(pv[s : s + 64]))[:, None]
            b = torch.from_numpy(np.ascontiguousarray(tv[s : s + 64]))[:, None]
            vals.append(tm_ms(a, b, data_range=1.0, reduction="none", kernel_size=k, betas=betas).numpy())
    per_image = np.concatenate(vals).reshape(other_sizes)
    coords = {c: v for c, v in truth.coords.items() if set(v.dims) <= set(other)}
    da = xr.DataArray(per_image, dims=other, coords=coords)
    # Images with no valid pixel do not count.
    has_valid = valid.broadcast_like(truth).any(list(sdims))
    rest = [d for d in dims if d not in sdims]
    out = da.where(has_valid).mean(rest) if rest else da.where(has_valid)
    out = out.rename("ms_ssim")
    out.attrs.update(data_range=float(data_range), data_min=lo, scales=scales, kernel_size=k)
    return out


@_register("psnr", "deterministic", True, "dB", "peak signal-to-noise ratio 10 log10(R^2 / MSE), R stated")
def psnr(pred, truth, mask=None, weights=None, dim=None, data_range=None):
    """Peak signal-to-noise ratio 10 log10(R^2 / MSE) in dB, with the masked, weighted MSE over
    ``dim``; R = ``data_range`` (default valid truth max - min; stated in ``attrs``). Equals
    torchmetrics ``peak_signal_noise_ratio`` on unmasked data (tested).

    Example
    -------
    >>> t = xr.DataArray([0.0, 10.0]); float(psnr(t + 1.0, t))  # R = 10, MSE = 1
    20.0
    """
    check_aligned(pred, truth)
    if data_range is None:
        data_range = data_range_of(truth, mask)
    m = mse(pred, truth, mask, weights, dim)
    out = xr.apply_ufunc(psnr_from_mse, m, float(data_range), dask="allowed").rename("psnr")
    out.attrs["data_range"] = float(data_range)
    return out


def psnr_from_mse(mse_value, data_range):
    """10 log10(R^2 / MSE) -- the one formula of :func:`psnr` and of the streaming evaluation;
    NaN where the MSE is 0 (a perfect prediction has no finite PSNR) or not a number."""
    m = np.asarray(mse_value, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(m > 0, 10.0 * np.log10(float(data_range) ** 2 / np.where(m > 0, m, 1.0)), np.nan)


# ---------------------------------------------------------------------------------------
# Skill scores and lat-weighted variants
# ---------------------------------------------------------------------------------------
def skill_score(score, reference, perfect: float = 0.0):
    """Generic skill score (score - reference) / (perfect - reference): 1 = perfect, 0 = as good
    as the reference (e.g. bicubic), < 0 = worse. For MSE (perfect 0): 1 - MSE / MSE_ref.

    Example
    -------
    >>> skill_score(1.0, 4.0)   # MSE 1 vs reference MSE 4
    0.75
    """
    denom = perfect - reference
    if isinstance(denom, (xr.DataArray, np.ndarray)):
        return (score - reference) / xr.where(denom != 0, denom, np.nan)
    if denom == 0:
        return math.nan
    return (score - reference) / denom


def _skill(metric_fn, perfect):
    def fn(pred, truth, mask=None, weights=None, dim=None, reference=None):
        if reference is None:
            raise MetricError("a skill score needs reference= (e.g. the bicubic baseline's predictions)")
        return skill_score(metric_fn(pred, truth, mask, weights, dim), metric_fn(reference, truth, mask, weights, dim), perfect)

    return fn


mse_skill = _register("mse_skill", "deterministic", True, "1", "1 - MSE / MSE(reference), e.g. vs bicubic")(
    _skill(mse, 0.0)
)
mae_skill = _register("mae_skill", "deterministic", True, "1", "1 - MAE / MAE(reference), e.g. vs bicubic")(
    _skill(mae, 0.0)
)

mae_latw = _register("mae_latw", "deterministic", False, "same", "cos(lat)-weighted MAE")(_latw(mae))
rmse_latw = _register("rmse_latw", "deterministic", False, "same", "cos(lat)-weighted RMSE")(_latw(rmse))
bias_latw = _register("bias_latw", "deterministic", None, "same", "cos(lat)-weighted bias")(_latw(bias))
pearson_latw = _register("pearson_latw", "deterministic", True, "1", "cos(lat)-weighted Pearson")(_latw(pearson))
acc_latw = _register("acc_latw", "deterministic", True, "1", "cos(lat)-weighted anomaly correlation")(_latw(acc))


# ---------------------------------------------------------------------------------------
# Registry helpers
# ---------------------------------------------------------------------------------------
def metric_info(name: str) -> dict:
    """The registry info of ``name`` (kind, higher_is_better, units, description); an unknown
    name raises an error listing the registered metrics."""
    return METRICS.info(name)


def list_metrics(kind: str | None = None) -> list[str]:
    """Registered metric names, optionally of one ``kind``."""
    kinds = ("deterministic", "probabilistic", "distribution", "spectral")
    if kind is not None and kind not in kinds:
        raise MetricError(f"kind {kind!r} is not valid; accepted: {', '.join(kinds)}")
    return [n for n in METRICS.names() if kind is None or METRICS.info(n).get("kind") == kind]


# The other families register on import of this module (registry.load_plugins imports only it).
from engine.evaluation import diagnostics as _diagnostics  # noqa: E402,F401
from engine.evaluation import distribution as _distribution  # noqa: E402,F401
from engine.evaluation import probabilistic as _probabilistic  # noqa: E402,F401
from engine.evaluation import spectral as _spectral  # noqa: E402,F401
