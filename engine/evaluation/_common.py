"""Shared plumbing of the metrics: alignment checks, masks, weights and weighted means.

Every metric in :mod:`engine.evaluation` follows one convention:

``metric(pred, truth, mask=None, weights=None, dim=None, **options) -> xr.DataArray``

- ``pred`` and ``truth`` are DataArrays on the same grid and time axis (checked, never aligned
  silently: xarray's arithmetic would otherwise drop mismatched points without a word);
- ``mask`` is boolean or 0/1 (True / 1 = valid), broadcastable to ``truth``; NaN in either
  input also counts as invalid;
- ``weights`` (e.g. :func:`lat_weights`) are broadcastable to ``truth``;
- ``dim`` names the dimensions reduced: ``None`` = all of them (one number),
  ``("lat", "lon")`` = one value per time step (spatial), ``"time"`` = one value per grid point
  (temporal; a per-pixel map).
"""

from __future__ import annotations

from typing import Hashable, Iterable, Sequence

import numpy as np
import xarray as xr

SPATIAL_DIMS = ("lat", "lon")  # of a regular grid; other grids' are ("y", "x") (engine.data.grid.spatial_dims)


class MetricError(ValueError):
    """Bad input to a metric: mismatched grids or times, no valid data, unknown option."""


def grid_dims(da) -> tuple[str, str]:
    """The two spatial dims of ``da``: ``("lat", "lon")`` on a regular grid, ``("y", "x")`` on any
    other (the grid contract of :mod:`engine.data.grid`, restated here because metrics never
    import the data layer)."""
    for pair in (SPATIAL_DIMS, ("y", "x")):
        if set(pair) <= set(da.dims):
            return pair
    raise MetricError(f"no spatial dims in {list(da.dims)}; expected (lat, lon) or (y, x)")


def dims_list(dim: str | Iterable[Hashable] | None, da: xr.DataArray, exclude: Sequence[str] = ()) -> list:
    """The dimensions to reduce: all of ``da``'s (minus ``exclude``) when ``dim`` is None."""
    if dim is None:
        return [d for d in da.dims if d not in exclude]
    dims = [dim] if isinstance(dim, str) else list(dim)
    missing = [d for d in dims if d not in da.dims]
    if missing:
        raise MetricError(f"dim {missing!r} not in the data; its dims are {list(da.dims)}")
    return dims


def check_aligned(pred: xr.DataArray, truth: xr.DataArray, exclude: Sequence[str] = ("member",)) -> None:
    """Refuse predictions and truth that are not on the same grid and time axis.

    Raises
    ------
    MetricError
        naming the dimension and both coordinate ranges (or both calendars).
    """
    for d in set(pred.dims) & set(truth.dims):
        if d in exclude:
            continue
        if pred.sizes[d] != truth.sizes[d]:
            raise MetricError(
                f"predictions and truth differ along {d!r}: {pred.sizes[d]} vs {truth.sizes[d]} points; "
                "put them on the same grid / time axis first"
            )
        if d not in pred.coords or d not in truth.coords:
            continue
        a, b = pred[d], truth[d]
        if d == "time":
            ca, cb = _calendar(a), _calendar(b)
            if ca != cb:
                raise MetricError(f"predictions and truth use different calendars: {ca!r} vs {cb!r}")
            if not np.array_equal(a.values, b.values):
                raise MetricError(
                    f"predictions and truth have different time axes: {_span(a)} vs {_span(b)}"
                )
        elif np.issubdtype(a.dtype, np.number) and np.issubdtype(b.dtype, np.number):
            if not np.allclose(a.values, b.values, rtol=0, atol=1e-6 * max(1.0, float(np.abs(b.values).max()))):
                raise MetricError(
                    f"predictions and truth are on different grids along {d!r}: {_span(a)} vs {_span(b)}"
                )
        elif not np.array_equal(a.values, b.values):
            raise MetricError(f"predictions and truth have different {d!r} coordinates")
    for d in truth.dims:
        if d not in pred.dims and d not in exclude:
            raise MetricError(f"predictions lack dimension {d!r} of the truth; prediction dims: {list(pred.dims)}")


def _calendar(t: xr.DataArray) -> str:
    try:
        return str(t.dt.calendar)
    except (AttributeError, TypeError):
        return "none"


def _span(c: xr.DataArray) -> str:
    v = c.values
    if v.size == 0:
        return "[] (empty)"
    return f"[{v[0]} .. {v[-1]}] ({v.size} points)"


def valid_weights(
    pred: xr.DataArray,
    truth: xr.DataArray,
    mask: xr.DataArray | None = None,
    weights: xr.DataArray | None = None,
) -> xr.DataArray:
    """Weights broadcast to the data's shape: ``weights`` (or 1) where both inputs are finite
    and ``mask`` is valid, 0 elsewhere. Dims follow ``truth`` (plus any of ``pred``)."""
    valid = pred.notnull() & truth.notnull()
    if mask is not None:
        valid = valid & (mask.astype(bool) if mask.dtype != bool else mask)
    w = valid.astype("float64" if truth.dtype == np.float64 else "float32")
    if weights is not None:
        if (weights < 0).any():
            raise MetricError("weights must be >= 0")
        w = w * weights
    return w


def wmean(x: xr.DataArray, w: xr.DataArray, dims: list) -> xr.DataArray:
    """Weighted mean of ``x`` over ``dims``; NaN where the weights sum to zero (no valid data)."""
    num = (x.where(w > 0, 0) * w).sum(dims)
    den = w.sum(dims)
    return num / den.where(den > 0)


def require_valid(w: xr.DataArray, what: str = "the data") -> None:
    """Raise when no point carries weight: an all-NaN / fully masked period is an input error,
    not a score of NaN that would slip into a table unnoticed."""
    total = float(w.sum())
    if not total > 0:
        raise MetricError(f"no valid points in {what}: every value is NaN or masked")


def lat_weights(lat: xr.DataArray | np.ndarray | Sequence[float]) -> xr.DataArray:
    """cos(latitude) weights, proportional to the area of a regular lat/lon grid cell.

    Parameters
    ----------
    lat : (lat,) degrees north

    Returns
    -------
    DataArray (lat,) with values cos(lat) (not normalised: weighted means divide by the sum).

    Example
    -------
    >>> lat_weights([0.0, 60.0]).values
    array([1. , 0.5])
    """
    lat_da = lat if isinstance(lat, xr.DataArray) else xr.DataArray(np.asarray(lat, float), dims="lat")
    if lat_da.dims != ("lat",):
        lat_da = xr.DataArray(np.asarray(lat_da.values, float), dims="lat")
    if (np.abs(lat_da.values) > 90).any():
        raise MetricError(f"latitudes must be in [-90, 90]; got range {lat_da.values.min()}..{lat_da.values.max()}")
    w = np.cos(np.deg2rad(lat_da.values.astype(float)))
    # cos(+-90) is 6e-17, not 0; clip so pole rows carry exactly no weight.
    w = np.where(np.abs(lat_da.values) >= 90, 0.0, np.clip(w, 0.0, None))
    return xr.DataArray(w, dims="lat", coords={"lat": lat_da.values}, name="lat_weights")


def area_weights(lat: xr.DataArray, lon: xr.DataArray) -> xr.DataArray:
    """Relative true area of the cells of a grid with 2-D ``lat``/``lon`` (rotated pole,
    projected, curvilinear): the cross product of the cell-centre unit vectors' steps along the
    two grid axes (cos(lat) x spacing on a regular grid, ~1/k^2 on a conformal projection).

    Returns a DataArray on ``lat``'s dims, the mean cell = 1.
    """
    la, lo = np.deg2rad(np.asarray(lat.values, float)), np.deg2rad(np.asarray(lon.values, float))
    v = np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=-1)
    steps = [np.gradient(v, axis=a) if v.shape[a] > 1 else np.zeros_like(v) for a in (0, 1)]
    area = np.linalg.norm(np.cross(steps[0], steps[1]), axis=-1)
    if not np.isfinite(area).all() or area.sum() <= 0:
        area = np.ones_like(area)  # a single row or column: no area to compare
    return xr.DataArray(area / area.mean(), dims=lat.dims, coords=lat.coords, name="area_weights")


def with_lat_weights(truth: xr.DataArray, weights: xr.DataArray | None) -> xr.DataArray:
    """``weights`` times the cells' area weights: cos(latitude) on a regular lat/lon grid, the true
    cell areas from the 2-D lat/lon on any other grid."""
    if "lat" not in truth.coords:
        raise MetricError(f"latitude weights need a 'lat' coordinate; the data has {list(truth.coords)}")
    if truth["lat"].ndim == 2 and "lon" in truth.coords:
        lw = area_weights(truth["lat"], truth["lon"])
    else:
        lw = lat_weights(truth["lat"])
    return lw if weights is None else weights * lw


def wet_threshold(units: str | None) -> float:
    """The wet-day threshold (1 mm/day) in the data's units.

    Example
    -------
    >>> wet_threshold("mm/day")
    1.0
    """
    u = (units or "mm").replace(" ", "").lower()
    table = {
        "mm": 1.0, "mm/day": 1.0, "mmday-1": 1.0, "mm/d": 1.0, "mmd-1": 1.0, "kgm-2": 1.0, "kgm-2day-1": 1.0,
        "m": 1e-3, "mday-1": 1e-3, "m/day": 1e-3,
        "kgm-2s-1": 1.0 / 86400.0, "mm/s": 1.0 / 86400.0, "mms-1": 1.0 / 86400.0,
        "mm/h": 1.0 / 24.0, "mmh-1": 1.0 / 24.0, "mm/hr": 1.0 / 24.0,
    }
    if u not in table:
        raise MetricError(f"no wet-day threshold known for units {units!r}; known: {', '.join(sorted(table))}")
    return table[u]
