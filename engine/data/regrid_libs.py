"""Regridding weights from well-kept libraries, as sparse ``(dst cells, src cells)`` matrices.

:mod:`engine.data.regrid` caches these per grid pair and applies them lazily per block; this
module only asks the libraries for the weights:

- :func:`conservative_weights` (regular lat/lon -> regular lat/lon): **xarray-regrid**'s
  conservative scheme (interval overlaps per axis, its spherical correction in latitude, its
  longitude shift/wrap for global sources and its pole rows, see ``xarray_regrid.utils.format_lat``
  / ``format_lon``). The library factorises the weights per axis; here they are combined into one
  sparse matrix so that they are computed once per grid pair (the library itself recomputes them
  on every call) and applied NaN-aware like every other method. Tested equal to
  ``DataArray.regrid.conservative``.
- :func:`nearest_weights` (any grid -> any grid): **pyresample**'s k-d tree on the sphere
  (``kd_tree.get_neighbour_info`` between two ``SwathDefinition``\\ s of the cells' 2-D lat/lon),
  within half the diagonal of the source's largest cell (targets farther out are NaN).
- :func:`bilinear_weights` (any source -> a target that is an ``AreaDefinition``: a projected
  grid, or a regular lat/lon grid within -180..180, with uniform spacing): **pyresample**'s
  ``NumpyBilinearResampler`` (the four surrounding source centres in the target's projection).
  Targets that pyresample leaves empty but that lie within the source's outer cells are returned
  as ``missing`` rows, for the caller to fill from its own edge-value weights.

Where a pair is outside what a library does (conservative between non-lat/lon grids, bilinear
onto a rotated, curvilinear or non-uniform target or one across the date line), the functions return
None and :mod:`engine.data.regrid` keeps its own weights (tested against these on pairs both do).
"""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr

_EARTH_M = 6371e3


def _wrap(lon: np.ndarray) -> np.ndarray:
    """Longitudes in -180..180 (pyresample's convention)."""
    return (np.asarray(lon, dtype=np.float64) + 180.0) % 360.0 - 180.0


def max_step_m(grid) -> float:
    """Largest distance between neighbouring cell centres along either axis, metres."""
    from engine.data.grid import _xyz

    v = _xyz(grid.lat, grid.lon)
    steps = [np.linalg.norm(np.diff(v, axis=a), axis=-1).max() for a in (0, 1) if grid.shape[a] > 1]
    return float(max(steps)) * _EARTH_M if steps else 1e5


def _swath(grid):
    from pyresample.geometry import SwathDefinition

    return SwathDefinition(lons=_wrap(grid.lon), lats=np.asarray(grid.lat, dtype=np.float64))


# -- conservative: xarray-regrid --------------------------------------------------------------------
def conservative_weights(src, dst):
    """xarray-regrid's conservative weights between two regular lat/lon grids (None otherwise)."""
    from scipy import sparse
    from xarray_regrid import utils as xru
    from xarray_regrid.methods.conservative import apply_spherical_correction, get_weights

    if not (src.kind == dst.kind == "latlon"):
        return None
    ny, nx = src.shape
    target = xr.Dataset(coords={"lat": ("lat", np.asarray(dst.y, float)), "lon": ("lon", np.asarray(dst.x, float))})
    # The library's own preparation of the source axes, applied to probes holding each row's and
    # column's index: longitudes shifted next to the target's (wrapped where the source is global),
    # a row at each pole (the mean of the outermost band) where the source reaches it.
    lat_p = xru.format_lat(xr.DataArray(np.arange(ny, dtype=float), dims="lat", coords={"lat": np.asarray(src.y, float)}),
                           target, {"lat": "lat"})
    lon_p = xru.format_lon(xr.DataArray(np.arange(nx, dtype=float), dims="lon", coords={"lon": np.asarray(src.x, float)}),
                           target, {"lon": "lon"})
    plat, plon = lat_p["lat"].values, lon_p["lon"].values
    wlat = get_weights(plat, target["lat"].values)
    wlat = apply_spherical_correction(xru.create_dot_dataarray(wlat, "lat", target["lat"].values, plat), "lat").values
    wlon = get_weights(plon, target["lon"].values)
    wlat, wlon = sparse.csr_matrix(wlat.T), sparse.csr_matrix(wlon.T)  # (dst, padded src) per axis
    rows = lat_p.values.astype(np.int64)
    pole = np.isin(plat, (-90.0, 90.0)) & ~np.isin(plat, np.asarray(src.y, float))
    m_lat = sparse.csr_matrix((np.ones(int((~pole).sum())), (np.flatnonzero(~pole), rows[~pole])), shape=(plat.size, ny))
    m_lon = sparse.csr_matrix((np.ones(plon.size), (np.arange(plon.size), lon_p.values.astype(np.int64))),
                              shape=(plon.size, nx))
    w = sparse.kron(wlat @ m_lat, wlon @ m_lon, format="csr")
    lon_sum = np.asarray(wlon.sum(axis=1))  # a pole row is the mean of its band over every column
    for p in np.flatnonzero(pole):
        band = sparse.csr_matrix((np.ones(1), ([0], [rows[p]])), shape=(1, ny))
        w = w + sparse.kron(wlat[:, p] @ band, sparse.csr_matrix(lon_sum * np.full((1, nx), 1.0 / nx)), format="csr")
    # the library keeps only targets whose centres lie within the (prepared) source's centres
    covered = np.outer((dst.y >= plat.min()) & (dst.y <= plat.max()), (dst.x >= plon.min()) & (dst.x <= plon.max()))
    return sparse.diags(covered.ravel().astype(np.float64)) @ w


# -- nearest: pyresample's k-d tree ---------------------------------------------------------------
def nearest_weights(src, dst):
    """The nearest source centre (great-circle) of every target centre, within half the diagonal
    of the source's largest cell; a ``(dst, src)`` 0/1 matrix."""
    from pyresample.kd_tree import get_neighbour_info
    from scipy import sparse

    radius = 0.5 * np.sqrt(2.0) * max_step_m(src) * 1.01
    valid_in, valid_out, index, _ = get_neighbour_info(_swath(src), _swath(dst), radius, neighbours=1,
                                                       reduce_data=False)
    inputs, outputs = np.flatnonzero(valid_in), np.flatnonzero(valid_out)
    index = np.asarray(index).ravel()
    ok = index < inputs.size
    return sparse.csr_matrix((np.ones(int(ok.sum())), (outputs[ok], inputs[index[ok]])),
                             shape=(dst.lat.size, src.lat.size))


# -- bilinear: pyresample onto an AreaDefinition ----------------------------------------------------
def _uniform(axis: np.ndarray) -> bool:
    d = np.diff(np.asarray(axis, float))
    return d.size > 0 and bool(np.allclose(d, d[0], rtol=1e-6, atol=0.0)) and d[0] > 0


def area_definition(grid):
    """``grid`` as a pyresample ``AreaDefinition`` (rows north/top first), or None where it is not
    one: curvilinear, rotated, non-uniform spacing, or lat/lon beyond -180..180 (across the date line)."""
    from pyproj import CRS
    from pyresample.geometry import AreaDefinition

    # rotated poles are left out: pyresample's bilinear projects the source with
    # Proj(target.proj_str), which for an ob_tran CRS found no quadrilateral for any target (measured)
    if grid.kind in ("curvilinear", "rotated") or grid.crs is None or not (_uniform(grid.y) and _uniform(grid.x)):
        return None
    if grid.kind == "latlon" and (grid.periodic or grid.x.min() < -180.0 or grid.x.max() > 180.0):
        return None
    crs = CRS.from_epsg(4326) if grid.kind == "latlon" else grid.crs
    m = grid.metres_per_unit if grid.kind == "projected" else 1.0
    dy, dx = (grid.y[1] - grid.y[0]) * m, (grid.x[1] - grid.x[0]) * m
    extent = (grid.x[0] * m - dx / 2, grid.y[0] * m - dy / 2, grid.x[-1] * m + dx / 2, grid.y[-1] * m + dy / 2)
    return AreaDefinition("target", "finescale target grid", "target", crs, grid.shape[1], grid.shape[0], extent)


def bilinear_weights(src, dst):
    """pyresample's bilinear weights onto ``dst`` where it is an ``AreaDefinition`` (else None).

    Returns
    -------
    (w, missing) : ``w`` the ``(dst, src)`` matrix; ``missing`` the target cells pyresample gave no
        value (outside the source's outer centres, or no enclosing quadrilateral).
    """
    from pyresample.bilinear import NumpyBilinearResampler
    from scipy import sparse

    area = area_definition(dst)
    if area is None:
        return None
    n_src, n_dst = src.lat.size, dst.lat.size
    res = NumpyBilinearResampler(_swath(src), area, 3.0 * max_step_m(src), neighbours=min(32, n_src),
                                 reduce_data=False)
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        # pyproj's note on PROJ strings and 0/0 for quadrilaterals with parallel sides are the
        # library's own business: those targets come back as NaN and are counted as missing
        warnings.simplefilter("ignore")
        res.get_bil_info()
    s, t = np.asarray(res.bilinear_s, float).ravel(), np.asarray(res.bilinear_t, float).ravel()
    sy, sx = np.asarray(res.slices_y), np.asarray(res.slices_x)
    masked = np.asarray(res.mask_slices)
    if s.size != n_dst:  # LUTs over valid outputs only
        return None
    # pyresample's corners p1..p4 take (1-s)(1-t), s(1-t), (1-s)t, st (bilinear._base._resample)
    cw = np.stack([(1 - s) * (1 - t), s * (1 - t), (1 - s) * t, s * t], axis=1)
    ok = np.isfinite(cw).all(axis=1) & ~masked.any(axis=1)
    ny, nx = dst.shape
    # area rows run from the top (largest y) down; the standardised grid has y ascending
    rows_area = np.arange(n_dst)
    rows = (ny - 1 - rows_area // nx) * nx + rows_area % nx
    r = np.repeat(rows[ok], 4)
    c = (sy[ok].astype(np.int64) * src.shape[1] + sx[ok].astype(np.int64)).ravel()
    w = sparse.csr_matrix((cw[ok].ravel(), (r, c)), shape=(n_dst, n_src))
    w.eliminate_zeros()
    missing = np.zeros(n_dst, bool)
    missing[rows[~ok]] = True
    return w, missing
