"""Smooth seasonal cycles: annual harmonics of the day of year, fitted to monthly statistics.

Used by the ``seasonal_pixel`` normalisation (:mod:`engine.data.normalise`). A climatology that is a
step function of the calendar month leaves the drift within each month in the data (at a cell whose
seasonal cycle has an amplitude of 10 K, about +/- 1.3 K between the start and the end of spring
months); a sum of annual harmonics does not.

The fit works on the monthly means the streaming pass already accumulates, so it needs no extra read
of the data. A monthly mean is the *average* of the smooth cycle over the month's time steps, not its
value at mid-month, so each harmonic's design entry for month k is its average over the training
steps in month k (exact for any sampling, calendar and leap year). With :data:`HARMONICS` = 2 the 12
monthly values determine 5 coefficients by least squares, each month weighted by its steps.

The phase of a time step is its fraction of its own year, ``(day_of_year - 1 + hour / 24) / days_in_year``,
with the year length of its calendar (365 or 366, 360, ...).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from engine.data.errors import DataError
from engine.data.timeaxis import time_index

#: Annual harmonics fitted (1: the annual cycle; 2: also its asymmetry, e.g. a short summer peak).
HARMONICS = 2


def n_coefficients(harmonics: int = HARMONICS) -> int:
    return 1 + 2 * harmonics


def _basis_of_phase(phase: np.ndarray, harmonics: int) -> np.ndarray:
    """(N, 1 + 2 * harmonics): 1, cos(2 pi k phase), sin(2 pi k phase) for k = 1..harmonics."""
    phase = np.asarray(phase, dtype=np.float64)
    cols = [np.ones_like(phase)]
    for k in range(1, harmonics + 1):
        cols += [np.cos(2 * np.pi * k * phase), np.sin(2 * np.pi * k * phase)]
    return np.stack(cols, axis=-1)


def year_phase(times) -> np.ndarray:
    """Fraction of its year (0 <= phase < 1) of each time step, in the times' own calendar."""
    index = time_index(times)
    if len(index) == 0:
        return np.zeros(0)
    doy = np.asarray(index.dayofyear if isinstance(index, xr.CFTimeIndex) else index.day_of_year, dtype=np.float64)
    hours = (np.asarray(index.hour, dtype=np.float64) + np.asarray(index.minute, dtype=np.float64) / 60.0
             + np.asarray(index.second, dtype=np.float64) / 3600.0)
    if isinstance(index, xr.CFTimeIndex):
        import cftime

        calendar = str(index.calendar)
        years = np.asarray(index.year)
        lengths = {int(y): (cftime.datetime(int(y) + 1, 1, 1, calendar=calendar)
                            - cftime.datetime(int(y), 1, 1, calendar=calendar)).days for y in np.unique(years)}
        days = np.asarray([lengths[int(y)] for y in years], dtype=np.float64)
    else:
        days = np.where(np.asarray(index.is_leap_year), 366.0, 365.0)
    return (doy - 1.0 + hours / 24.0) / days


def basis(times, harmonics: int = HARMONICS) -> np.ndarray:
    """The harmonic basis at ``times``: shape (T, 1 + 2 * harmonics)."""
    return _basis_of_phase(year_phase(times), harmonics)


def month_design(times, harmonics: int = HARMONICS) -> np.ndarray:
    """(12, 1 + 2 * harmonics): each basis function averaged over the steps of ``times`` in each
    calendar month (the steps the monthly means were taken over); a month without steps gets zeros."""
    index = time_index(times)
    months = np.asarray(index.month, dtype=np.int64)
    full = basis(index, harmonics)
    design = np.zeros((12, full.shape[1]))
    for k in range(12):
        sel = months == k + 1
        if sel.any():
            design[k] = full[sel].mean(axis=0)
    return design


def fit(monthly: np.ndarray, times, harmonics: int = HARMONICS) -> np.ndarray:
    """Harmonic coefficients whose averages over each month's steps best match ``monthly``.

    Parameters
    ----------
    monthly : (12, ...) monthly values (means or standard deviations) of the steps ``times``; finite
        where that month has steps
    times : the time steps the monthly values were computed from (any calendar); each month is
        weighted by its number of steps, and a month without steps takes no part in the fit

    Returns
    -------
    (1 + 2 * harmonics, ...) coefficients, float64; evaluate with ``np.tensordot(basis(times), coef, 1)``.
    """
    monthly = np.asarray(monthly, dtype=np.float64)
    if monthly.shape[:1] != (12,):
        raise DataError(f"seasonal fit needs 12 monthly values; got an array of shape {monthly.shape}")
    w = np.bincount(np.asarray(time_index(times).month, dtype=np.int64) - 1, minlength=13)[:12].astype(np.float64)
    n_coef = n_coefficients(harmonics)
    if int((w > 0).sum()) < n_coef:
        raise DataError(f"{harmonics} annual harmonics need at least {n_coef} calendar months with data; "
                        f"got {int((w > 0).sum())}")
    flat = monthly.reshape(12, -1)
    if not np.isfinite(flat[w > 0]).all():
        raise DataError("seasonal fit got NaN or infinite monthly values; fill cells without data first")
    root = np.sqrt(w / w.max())[:, None]
    design = month_design(times, harmonics) * root
    coef, *_ = np.linalg.lstsq(design, np.where(root > 0, flat, 0.0) * root, rcond=None)
    return coef.reshape((n_coef,) + monthly.shape[1:])
