"""The attributed area of an attribution map: where a map should zoom to show it.

An attribution for one pixel or a small box is confined to the network's receptive field, a
few dozen cells of a domain of hundreds: drawn over the whole domain it is a speck. The
explain view zooms its attribution maps to :func:`attributed_extent`: the cells holding a
noticeable share of the attribution (at least ``share`` of the largest absolute value), with
the explained pixel or box, padded, never smaller than ``min_cells`` cells a side; the user
can switch back to the full domain.

Extents are given in the coordinates the map is drawn in (:func:`app.maps.map_element`):
longitude/latitude on a regular lat/lon grid, native ``x``/``y`` on a rotated or projected
grid, longitude/latitude of the cells on a curvilinear grid.

Example
-------
>>> attributed_extent(attributions["input_t2m"], point=(45.2, 8.1))   # doctest: +SKIP
(7.4, 8.9, 44.6, 45.9)
"""

from __future__ import annotations

import numpy as np


def _map_coords(grid) -> tuple[np.ndarray, np.ndarray]:
    """2-D ``(X, Y)`` of every cell in the map's coordinates, rows x columns like the grid."""
    from .projection import native_xy

    if grid.kind == "latlon":
        return np.meshgrid(np.asarray(grid.x, dtype=float), np.asarray(grid.y, dtype=float))
    if grid.kind == "curvilinear":
        return np.asarray(grid.lon, dtype=float), np.asarray(grid.lat, dtype=float)
    x, y = native_xy(grid)
    return np.meshgrid(np.asarray(x, dtype=float), np.asarray(y, dtype=float))


def _target_cells(grid, point=None, region=None) -> np.ndarray:
    """Boolean ``(ny, nx)``: the explained pixel (nearest cell) or the cells inside the box."""
    lat = np.asarray(grid.lat, dtype=float)
    lon = np.asarray(grid.lon, dtype=float)
    if lat.ndim == 1:
        lon, lat = np.meshgrid(lon, lat)
    cells = np.zeros(lat.shape, dtype=bool)
    if region is not None:
        la0, la1, lo0, lo1 = (float(v) for v in region)
        cells |= (lat >= la0) & (lat <= la1) & (lon >= lo0) & (lon <= lo1)
    if point is not None:
        plat, plon = (float(v) for v in point)
        d2 = (lat - plat) ** 2 + ((lon - plon) * np.cos(np.deg2rad(plat))) ** 2
        cells.flat[int(np.nanargmin(d2))] = True
    return cells


def _span(lo: int, hi: int, size: int, pad: float, min_cells: int) -> tuple[int, int]:
    """Index range ``[lo, hi]`` padded by ``pad`` of its length, at least ``min_cells`` long,
    kept inside ``[0, size - 1]``."""
    n = hi - lo + 1
    extra = int(np.ceil(pad * n))
    lo, hi = lo - extra, hi + extra
    short = min(min_cells, size) - (hi - lo + 1)
    if short > 0:
        lo -= short // 2
        hi += short - short // 2
    if lo < 0:
        hi, lo = hi - lo, 0
    if hi > size - 1:
        lo, hi = max(0, lo - (hi - size + 1)), size - 1
    return lo, hi


def attributed_extent(da, point=None, region=None, share: float = 0.05, pad: float = 0.15,
                      min_cells: int = 8) -> tuple[float, float, float, float] | None:
    """``(x0, x1, y0, y1)`` around the attributed area of a 2-D map, or None (the whole map).

    Parameters
    ----------
    da : xarray.DataArray
        An attribution map on a standardised grid (``(lat, lon)`` or ``(y, x)``).
    point : (lat, lon), optional
        The explained pixel; its cell is always inside the extent.
    region : (lat_min, lat_max, lon_min, lon_max), optional
        The explained box; its cells are always inside the extent.
    share : float
        Cells whose absolute attribution is at least ``share`` times the largest count as
        attributed.
    pad : float
        Padding on each side, as a fraction of the attributed area's size in cells.
    min_cells : int
        Smallest size of the extent in cells along each axis (a one-cell attribution still
        shows its surroundings).

    Returns
    -------
    tuple of float or None
        The extent in the map's coordinates, half a cell beyond the outer cells' centres; None
        when nothing is attributed and no target lies on the map, or when the extent is the
        whole map anyway.
    """
    from .projection import grid_of

    if not 0 < share <= 1:
        raise ValueError(f"share={share!r} is not valid; accepted: a fraction in (0, 1]")
    if pad < 0 or min_cells < 1:
        raise ValueError(f"pad={pad!r}, min_cells={min_cells!r} are not valid; accepted: pad >= 0, min_cells >= 1")
    grid = grid_of(da)
    values = np.abs(np.asarray(da.transpose(*grid.dims).values, dtype=float))
    top = np.nanmax(values) if np.isfinite(values).any() else 0.0
    cells = values >= share * top if top > 0 else np.zeros(values.shape, dtype=bool)
    cells |= _target_cells(grid, point, region)
    if not cells.any():
        return None
    ny, nx = cells.shape
    rows, cols = np.nonzero(cells)
    r0, r1 = _span(int(rows.min()), int(rows.max()), ny, pad, min_cells)
    c0, c1 = _span(int(cols.min()), int(cols.max()), nx, pad, min_cells)
    if (r0, r1, c0, c1) == (0, ny - 1, 0, nx - 1):
        return None
    X, Y = _map_coords(grid)
    block = (slice(r0, r1 + 1), slice(c0, c1 + 1))
    dx = float(np.nanmedian(np.abs(np.diff(X, axis=1)))) / 2 if nx > 1 else 0.5
    dy = float(np.nanmedian(np.abs(np.diff(Y, axis=0)))) / 2 if ny > 1 else 0.5
    xs, ys = X[block], Y[block]
    return (float(np.nanmin(xs)) - dx, float(np.nanmax(xs)) + dx, float(np.nanmin(ys)) - dy, float(np.nanmax(ys)) + dy)


def explained_target(result) -> tuple[tuple | None, tuple | None]:
    """``(point, region)`` explained by an attribution result (``engine.explain``): its
    ``region`` mask's centre cell and lat/lon box; ``(None, None)`` for the whole domain."""
    if result is None or "region" not in result:
        return None, None
    from .maps import cell_latlon

    mask = result["region"]
    if "time" in mask.dims:
        mask = mask.isel(time=0)
    cells = np.asarray(mask.values).astype(bool)
    if not cells.any() or cells.all():
        return None, None
    lat, lon = cell_latlon(mask)
    la, lo = lat[cells], lon[cells]
    centre = (float(np.mean(la)), float(np.mean(lo)))
    return centre, (float(la.min()), float(la.max()), float(lo.min()), float(lo.max()))
