"""Regridding between regular latitude/longitude grids: block means, conservative averaging and
bilinear interpolation, all NaN-aware and vectorised over every other dimension.

Grids here are 1-D cell-centre coordinates ``lat`` (n,) and ``lon`` (m,), ascending.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from engine.data.errors import DataError


def cell_edges(centres: np.ndarray) -> np.ndarray:
    """Cell edges (n + 1,) from ascending centres (n,): midpoints, half a cell beyond the ends."""
    c = np.asarray(centres, dtype=np.float64)
    if c.size < 2:
        raise DataError(f"a grid needs at least 2 cells along each axis to have a resolution, got {c.size}")
    mid = 0.5 * (c[1:] + c[:-1])
    return np.concatenate([[2 * c[0] - mid[0]], mid, [2 * c[-1] - mid[-1]]])


def resolution(centres: np.ndarray) -> float:
    """Mean spacing of ascending centres."""
    c = np.asarray(centres, dtype=np.float64)
    return float((c[-1] - c[0]) / (c.size - 1)) if c.size > 1 else float("nan")


def overlap_weights(src_edges: np.ndarray, dst_edges: np.ndarray) -> np.ndarray:
    """Fraction of each destination cell covered by each source cell: (n_dst, n_src), rows sum
    to 1 where the destination cell lies inside the source grid."""
    lo = np.maximum(dst_edges[:-1, None], src_edges[None, :-1])
    hi = np.minimum(dst_edges[1:, None], src_edges[None, 1:])
    w = np.clip(hi - lo, 0.0, None)
    return w / np.diff(dst_edges)[:, None]


def conservative(da: xr.DataArray, lat: np.ndarray, lon: np.ndarray) -> xr.DataArray:
    """Area-weighted (in degree space) mean of ``da`` (..., lat, lon) onto the grid ``lat`` x ``lon``.

    NaN cells do not count; a destination cell with no valid source area is NaN.
    """
    wy = overlap_weights(cell_edges(da.lat.values), cell_edges(lat))
    wx = overlap_weights(cell_edges(da.lon.values), cell_edges(lon))
    values = da.transpose(..., "lat", "lon").values
    valid = np.isfinite(values)
    filled = np.where(valid, values, 0.0)
    num = np.einsum("ij,...jk,lk->...il", wy, filled, wx, optimize=True)
    den = np.einsum("ij,...jk,lk->...il", wy, valid.astype(values.dtype), wx, optimize=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den > 1e-6, num / np.where(den > 1e-6, den, 1.0), np.nan).astype(da.dtype)
    dims = [d for d in da.transpose(..., "lat", "lon").dims]
    coords = {k: v for k, v in da.coords.items() if "lat" not in v.dims and "lon" not in v.dims}
    coords.update(lat=("lat", np.asarray(lat)), lon=("lon", np.asarray(lon)))
    return xr.DataArray(out, dims=dims, coords=coords, attrs=da.attrs, name=da.name)


def bilinear(da: xr.DataArray, lat: np.ndarray, lon: np.ndarray) -> xr.DataArray:
    """Bilinear interpolation of ``da`` onto ``lat`` x ``lon``; target points beyond the outer
    source centres (but inside the source cells) take the edge value rather than NaN."""
    lat_c = np.clip(lat, float(da.lat.min()), float(da.lat.max()))
    lon_c = np.clip(lon, float(da.lon.min()), float(da.lon.max()))
    out = da.interp(lat=lat_c, lon=lon_c, method="linear")
    return out.assign_coords(lat=np.asarray(lat), lon=np.asarray(lon))


def regrid(da: xr.DataArray, lat: np.ndarray, lon: np.ndarray) -> xr.DataArray:
    """Onto a coarser grid: conservative mean (no aliasing); onto a finer one: bilinear."""
    coarser = resolution(lat) > 1.0001 * resolution(da.lat.values) and resolution(lon) > 1.0001 * resolution(
        da.lon.values
    )
    return conservative(da, lat, lon) if coarser else bilinear(da, lat, lon)


def block_mean(obj, scale: int):
    """Mean over ``scale`` x ``scale`` blocks of (lat, lon), ignoring NaN (an all-NaN block stays
    NaN). Coordinates become block-centre means. Sizes must be divisible by ``scale``."""
    return obj.coarsen(lat=scale, lon=scale, boundary="exact").mean()  # xarray skips NaN for floats
