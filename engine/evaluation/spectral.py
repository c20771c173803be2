"""Radially averaged power spectra: do the predictions carry the small-scale variance of the
truth? Interpolation baselines and MSE-trained networks lose power at short wavelengths.

No installed library computes a masked, batched radially averaged spectrum on an xarray grid
(pysteps' ``rapsd`` does one 2-D field at a time and is not a dependency), so it is written here,
vectorised over every leading dimension (no Python loop over time steps).

Wavenumbers are in cycles per grid length L = max(H, W): bin k holds the Fourier coefficients
with round(L * sqrt(fx^2 + fy^2)) = k, fx, fy in cycles per grid cell; bins 1 .. L // 2 are kept
(0 is the mean, beyond L/2 the corners above Nyquist). The wavelength of bin k is L / k grid
cells (times the grid spacing given by ``dx``). Power is |FFT|^2 / (H W)^2, so summing every
coefficient gives the field's variance (Parseval).

Example
-------
>>> import numpy as np, xarray as xr
>>> x = np.cos(2 * np.pi * 4 * np.arange(16) / 16)[None, :] * np.ones((16, 1))
>>> s = power_spectrum(xr.DataArray(x, dims=("lat", "lon")), average="sum")
>>> float(s.sel(wavenumber=4))   # the variance of a unit cosine
0.5
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from engine.evaluation._common import MetricError, check_aligned, dims_list, grid_dims, valid_weights
from engine.registry import METRICS


def _bins(H: int, W: int):
    L = max(H, W)
    fy = np.fft.fftfreq(H)[:, None]
    fx = np.fft.fftfreq(W)[None, :]
    k = np.rint(L * np.sqrt(fx**2 + fy**2)).astype(int).ravel()
    nbins = L // 2
    return k, nbins, L


def power_spectrum(da: xr.DataArray, mask=None, dims=None, average: str = "mean", dx: float | None = None):
    """Radially averaged power spectrum of every 2-D field of ``da``.

    Parameters
    ----------
    da : DataArray (..., lat, lon) or (..., y, x); ``dims`` default: its spatial dims
    mask : valid points (True/1); invalid points (and NaN) are set to the field's valid mean
        before the FFT, i.e. they add no variance (a heavily masked field loses power)
    average : "mean" (mean power per annulus, the usual radially averaged spectrum) or "sum"
        (power summed per annulus; the bins then add up to the variance)
    dx : grid spacing (e.g. km) for the ``wavelength`` coordinate; default 1 (grid cells)

    Returns
    -------
    DataArray (..., wavenumber) with coordinate ``wavelength`` (L / k, in units of ``dx``).
    """
    if average not in ("mean", "sum"):
        raise MetricError(f"average={average!r} is not valid; accepted: mean, sum")
    dims = list(grid_dims(da) if dims is None else dims)
    for d in dims:
        if d not in da.dims:
            raise MetricError(f"spectrum dim {d!r} not in the data; its dims are {list(da.dims)}")
    other = [d for d in da.dims if d not in dims]
    x = da.transpose(*other, *dims)
    valid = x.notnull()
    if mask is not None:
        valid = valid & mask.astype(bool)
    valid = valid.broadcast_like(x).transpose(*other, *dims)
    v = np.asarray(x.values, dtype=np.float64)
    m = np.asarray(valid.values)
    H, W = v.shape[-2:]
    v = v.reshape(-1, H, W)
    m = m.reshape(-1, H, W)
    cnt = m.sum(axis=(1, 2))
    mean = np.where(m, v, 0).sum(axis=(1, 2)) / np.maximum(cnt, 1)
    anomaly = np.where(m, v - mean[:, None, None], 0.0)
    power = np.abs(np.fft.fft2(anomaly)) ** 2 / float(H * W) ** 2
    k, nbins, L = _bins(H, W)
    keep = (k >= 1) & (k <= nbins)
    N = power.shape[0]
    flat = power.reshape(N, -1)[:, keep]
    kk = k[keep] - 1
    # One bincount bins every field at once: field n's bin b goes to n * nbins + b.
    index = (np.arange(N)[:, None] * nbins + kk[None, :]).ravel()
    spec = np.bincount(index, weights=flat.ravel(), minlength=N * nbins).reshape(N, nbins)
    if average == "mean":
        spec = spec / np.bincount(kk, minlength=nbins)
    spec[cnt == 0] = np.nan
    wavenumber = np.arange(1, nbins + 1)
    shape = [x.sizes[d] for d in other] + [nbins]
    coords = {c: val for c, val in da.coords.items() if set(val.dims) <= set(other)}
    coords["wavenumber"] = wavenumber
    coords["wavelength"] = ("wavenumber", L / wavenumber * (1.0 if dx is None else float(dx)))
    out = xr.DataArray(spec.reshape(shape), dims=other + ["wavenumber"], coords=coords, name="power")
    out.attrs.update(
        long_name="radially averaged power spectrum" if average == "mean" else "radially summed power spectrum",
        wavenumber_units=f"cycles per {L} grid cells",
    )
    return out


def power_sum(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``power_spectrum(.., average="mean")`` of every field of ``values`` (N, H, W), summed over
    the N fields (a field without valid points adds nothing, as ``.sum(skipna=True)``): what a
    time-mean spectrum accumulates block by block. ``valid`` (N, H, W) or (H, W) bool.

    The same numbers as the DataArray form, faster: the real FFT (half the coefficients; each
    column but the first and the Nyquist one stands for its conjugate twin, which lies in the
    same wavenumber bin) and one binning of the fields' summed power instead of one per field.
    """
    v = np.asarray(values, dtype=np.float64)
    N, H, W = v.shape
    m = np.broadcast_to(np.asarray(valid, dtype=bool), v.shape)
    cnt = m.sum(axis=(1, 2))
    mean = np.where(m, v, 0).sum(axis=(1, 2)) / np.maximum(cnt, 1)
    anomaly = np.where(m, v - mean[:, None, None], 0.0)
    f = np.fft.rfft2(anomaly)
    del anomaly
    power = np.einsum("nij,nij->ij", f.real, f.real) + np.einsum("nij,nij->ij", f.imag, f.imag)
    power /= float(H * W) ** 2
    twin = np.full(W // 2 + 1, 2.0)
    twin[0] = 1.0
    if W % 2 == 0:
        twin[-1] = 1.0
    k_full, nbins, L = _bins(H, W)
    k = np.rint(L * np.sqrt(np.fft.rfftfreq(W)[None, :] ** 2 + np.fft.fftfreq(H)[:, None] ** 2)).astype(int).ravel()
    keep = (k >= 1) & (k <= nbins)
    spec = np.bincount(k[keep] - 1, weights=(power * twin).ravel()[keep], minlength=nbins)
    keep_full = (k_full >= 1) & (k_full <= nbins)
    return spec / np.bincount(k_full[keep_full] - 1, minlength=nbins)


def spectral_ratio(pred, truth, mask=None, weights=None, dim=None, dx=None):
    """Ratio of the time-mean power spectra, pred / truth, at each wavenumber: 1 = right
    amount of variance at that scale, < 1 = too smooth. ``dim`` (other than lat/lon, which the
    spectrum always uses) selects the dims averaged before the ratio; None = all.

    Returns
    -------
    DataArray (wavenumber,) with ``wavelength`` coordinate.
    """
    if weights is not None:
        raise MetricError("spectral_ratio takes no weights")
    check_aligned(pred, truth)
    valid = valid_weights(pred, truth, mask) > 0
    sp = power_spectrum(pred, valid, dx=dx)
    st = power_spectrum(truth, valid, dx=dx)
    rest = [d for d in dims_list(dim, truth) if d not in grid_dims(truth)]
    sp, st = sp.mean(rest), st.mean(rest)
    return (sp / st.where(st > 0)).rename("spectral_ratio")


@METRICS.register("spectral_ratio", kind="spectral", higher_is_better=None, units="1",
                  description="power spectrum ratio prediction / truth per wavenumber; 1 is best")
def _spectral_ratio(pred, truth, mask=None, weights=None, dim=None):
    return spectral_ratio(pred, truth, mask, weights, dim)


@METRICS.register("spectral_ratio_small", kind="spectral", higher_is_better=None, units="1",
                  description="mean power ratio prediction / truth at wavelengths below 4 grid cells; 1 is best")
def spectral_ratio_small(pred, truth, mask=None, weights=None, dim=None):
    """Mean of :func:`spectral_ratio` over wavelengths shorter than 4 grid cells: one number for
    "how much small-scale detail is there" (interpolation gives << 1)."""
    r = spectral_ratio(pred, truth, mask, weights, dim)
    return r.where(r["wavelength"] < 4.0).mean("wavenumber").rename("spectral_ratio_small")
