"""Regridding: between any two grids (:func:`regrid_to`, sparse weights cached per grid pair) and
the block means of perfect prognosis (:func:`block_mean`), all NaN-aware.

Which library computes the weights (:mod:`engine.data.regrid_libs`), and why:

- ``conservative`` (regular lat/lon -> regular lat/lon): **xarray-regrid** (interval overlaps per
  axis with its spherical correction, its longitude wrap and pole rows). Refused for other pairs:
  no pip-installable library offers conservative remapping between arbitrary projected grids
  (xESMF needs the ESMF library, pyresample has none).
- ``nearest`` (any pair, curvilinear included): **pyresample**'s k-d tree on the sphere; targets
  farther than half the diagonal of the source's largest cell are NaN.
- ``bilinear``: **pyresample**'s bilinear resampler where the target is an ``AreaDefinition``
  (projected grids, regular lat/lon within -180..180, uniform spacing); targets it leaves empty
  within the source's outer cells take the edge value from this module's own weights. For other
  targets (rotated pole, curvilinear, across the date line, non-uniform) pyresample's bilinear
  does not apply, and this module's own weights are used: bilinear in the source's native index
  space (through its CRS; exact for lat/lon, rotated and projected sources; a curvilinear source
  is inverted locally, see :func:`engine.data.grid.fractional_index`), edge value within the
  source's outer cells, NaN outside. They are tested against pyresample on pairs both can do.
- ``average`` (own; no library offers it for arbitrary pairs): the mean of the source cells whose
  centres fall in each target cell (the block mean, for a source finer than the target; a target
  cell holding no source centre falls back to bilinear).
- ``auto`` (default): ``conservative`` (lat/lon pairs) or ``average`` where the source is finer
  than the target, ``bilinear`` where it is coarser.

Whatever computes them, the weights become one sparse ``(dst cells, src cells)`` matrix, computed
once per grid pair and method and cached in memory and on disk (:func:`weights`); :func:`regrid_to`
applies it lazily, one dask block of time steps at a time, NaN-aware (a target cell is the
weighted mean of its valid source cells). :func:`own_weights` keeps this module's own weights.

The older functions on 1-D ``lat``/``lon`` (:func:`conservative`, :func:`bilinear`, :func:`regrid`)
remain for regular grids.
"""

from __future__ import annotations

import logging

import numpy as np
import xarray as xr

from engine.data import regrid_libs as libs
from engine.data.errors import DataError

log = logging.getLogger(__name__)

METHODS = ("auto", "bilinear", "nearest", "average", "conservative")


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
    """Mean over ``scale`` x ``scale`` blocks of the spatial dims, ignoring NaN (an all-NaN block
    stays NaN). Sizes must be divisible by ``scale``. The native coordinates become block-centre
    means; on a non-lat/lon grid the 2-D lat/lon are those of the block centres
    (:func:`engine.data.grid.block_centres`) and ``crs`` is kept."""
    from engine.data import grid as g

    ydim, xdim = g.spatial_dims(obj)
    if ydim == "lat":
        return obj.coarsen(lat=scale, lon=scale, boundary="exact").mean()  # xarray skips NaN for floats
    src = g.describe(obj)
    drop = [c for c in ("lat", "lon", "crs") if c in obj.coords]
    out = obj.drop_vars(drop).coarsen({ydim: scale, xdim: scale}, boundary="exact").mean()
    dst = g.block_centres(src, scale)
    crs_attrs = dict(obj.coords["crs"].attrs) if "crs" in obj.coords else None
    return out.assign_coords(g.grid_coords(dst, crs_attrs)).assign_coords(
        {d: (d, out[d].values, dict(obj[d].attrs)) for d in (ydim, xdim)})


# -- any grid to any grid -------------------------------------------------------------------------
_WEIGHTS: dict = {}
#: Bumped whenever the weights' definition changes, so that caches on disk are not reused.
_WEIGHTS_VERSION = 3


def _spacing_km(grid) -> float:
    """Median distance between neighbouring cell centres, km."""
    from engine.data.grid import _xyz

    v = _xyz(grid.lat, grid.lon)
    steps = []
    for axis in (0, 1):
        if grid.shape[axis] > 1:
            steps.append(np.linalg.norm(np.diff(v, axis=axis), axis=-1).ravel())
    return float(np.median(np.concatenate(steps))) * 6371.0 if steps else float("nan")


def choose_method(src, dst, method: str = "auto") -> str:
    """The method ``auto`` stands for on this pair of grids (others are returned as they are)."""
    if method not in METHODS:
        raise DataError(f"regrid method {method!r} is not valid; accepted: {', '.join(METHODS)}")
    if method != "auto":
        return method
    if _spacing_km(src) * 1.0001 < _spacing_km(dst):
        return "conservative" if src.kind == dst.kind == "latlon" else "average"
    return "bilinear"


def _bilinear_rows(src, fi, fj):
    """(rows, cols, vals) of bilinear weights at fractional source indices (NaN outside)."""
    from engine.data.grid import inside

    ny, nx = src.shape
    ok = inside(fi, fj, src)
    fi_c = np.clip(fi, 0, ny - 1)
    i0 = np.clip(np.floor(fi_c), 0, max(ny - 2, 0)).astype(np.int64)
    wi = np.where(ny > 1, fi_c - i0, 0.0)
    if src.periodic:
        fj_c = np.mod(fj, nx)
        j0 = np.floor(fj_c).astype(np.int64) % nx
        j1 = (j0 + 1) % nx
        wj = fj_c - np.floor(fj_c)
    else:
        fj_c = np.clip(fj, 0, nx - 1)
        j0 = np.clip(np.floor(fj_c), 0, max(nx - 2, 0)).astype(np.int64)
        j1 = np.minimum(j0 + 1, nx - 1)
        wj = np.where(nx > 1, fj_c - j0, 0.0)
    i1 = np.minimum(i0 + 1, ny - 1)
    rows = np.arange(fi.size)
    parts = [(i0, j0, (1 - wi) * (1 - wj)), (i0, j1, (1 - wi) * wj), (i1, j0, wi * (1 - wj)), (i1, j1, wi * wj)]
    r = np.concatenate([rows[ok]] * 4)
    c = np.concatenate([(a * nx + b)[ok] for a, b, _ in parts])
    v = np.concatenate([w[ok] for _, _, w in parts])
    return r, c, v


def _conservative_matrix(src, dst):
    from scipy import sparse

    from engine.data.grid import _lon_near

    # latitude overlaps in sin(latitude): exact spherical areas (a band's area is proportional to
    # the difference of the sines of its edges); longitude overlaps are exact in degrees
    def sin_edges(lat):
        return np.sin(np.deg2rad(np.clip(cell_edges(lat), -90.0, 90.0)))

    wy = overlap_weights(sin_edges(src.y), sin_edges(dst.y))
    dx_edges = cell_edges(_lon_near(dst.x, src.x))
    if src.periodic:  # the source repeated either side, overlaps folded back onto its columns
        n = src.x.size
        ext = np.concatenate([src.x - 360.0, src.x, src.x + 360.0])
        wx = overlap_weights(cell_edges(ext), dx_edges).reshape(dst.x.size, 3, n).sum(axis=1)
    else:
        wx = overlap_weights(cell_edges(src.x), dx_edges)
    return sparse.kron(sparse.csr_matrix(wy), sparse.csr_matrix(wx), format="csr")


def own_weights(src, dst, method: str = "bilinear", rows: np.ndarray | None = None):
    """This module's own ``bilinear``/``nearest``/``conservative`` weights (``(dst, src)`` sparse), for
    the pairs the libraries do not handle and to check the libraries' weights against.

    ``bilinear``: in the source's native index space (:func:`engine.data.grid.fractional_index`),
    targets within the outer cells take the edge value; ``nearest``: the source cell containing
    the target centre; ``conservative``: exact spherical overlaps (regular lat/lon pairs).
    ``rows``: only these target cells (others get empty rows).
    """
    from scipy import sparse

    from engine.data.grid import fractional_index, inside

    n_dst, n_src = dst.lat.size, src.lat.size
    if method == "conservative":
        return _conservative_matrix(src, dst)
    rows = np.arange(n_dst) if rows is None else np.asarray(rows, dtype=np.int64)
    fi, fj = fractional_index(src, dst.lat.ravel()[rows], dst.lon.ravel()[rows])
    if method == "bilinear":
        r, c, v = _bilinear_rows(src, fi, fj)
    else:
        ok = inside(fi, fj, src)
        ny, nx = src.shape
        i = np.clip(np.rint(fi), 0, ny - 1).astype(np.int64)
        j = (np.rint(fj).astype(np.int64) % nx) if src.periodic else np.clip(np.rint(fj), 0, nx - 1).astype(np.int64)
        r, c, v = np.arange(rows.size)[ok], (i * nx + j)[ok], np.ones(int(ok.sum()))
    return sparse.csr_matrix((v, (rows[r], c)), shape=(n_dst, n_src))


def weights(src, dst, method: str = "auto"):
    """Sparse ``(dst cells, src cells)`` regridding weights, computed once per grid pair and method.

    Cached in memory and on disk (``<cache>/regrid/<src>-<dst>-<method>.npz``, keyed by the
    grids' cell positions).
    """
    from scipy import sparse

    from engine.data.grid import fractional_index, inside
    from engine.data.paths import atomic_path, cache_dir

    method = choose_method(src, dst, method)
    key = f"{src.key}-{dst.key}-{method}-v{_WEIGHTS_VERSION}"
    if key in _WEIGHTS:
        return _WEIGHTS[key]
    path = cache_dir("regrid") / f"{key}.npz"
    if path.exists():
        try:
            w = sparse.load_npz(path).tocsr()
        except (OSError, ValueError):
            w = None
        if w is not None and w.shape == (dst.lat.size, src.lat.size):
            _WEIGHTS[key] = w
            return w
    n_dst, n_src = dst.lat.size, src.lat.size
    if method == "conservative":
        if not (src.kind == dst.kind == "latlon"):
            raise DataError(f"regrid method 'conservative' needs regular lat/lon source and target grids, got "
                            f"{src.kind} -> {dst.kind}; accepted for this pair: auto, average, bilinear, nearest")
        w = libs.conservative_weights(src, dst)
    elif method == "nearest":
        w = libs.nearest_weights(src, dst)
    elif method == "bilinear":
        lib = libs.bilinear_weights(src, dst)
        if lib is None:  # a target pyresample cannot describe as an area: own weights (tested against it)
            w = own_weights(src, dst, "bilinear")
        else:
            w, missing = lib
            if missing.any():  # targets within the source's outer cells: the edge value, as own weights give
                own = own_weights(src, dst, "bilinear", rows=np.flatnonzero(missing))
                w = w + own
    else:  # average: each source centre counts for the target cell it falls in
        fi, fj = fractional_index(dst, src.lat.ravel(), src.lon.ravel())
        ok = inside(fi, fj, dst)
        ny, nx = dst.shape
        i = np.clip(np.rint(fi), 0, ny - 1).astype(np.int64)
        j = (np.rint(fj).astype(np.int64) % nx) if dst.periodic else np.clip(np.rint(fj), 0, nx - 1).astype(np.int64)
        w = sparse.csr_matrix((np.ones(int(ok.sum())), ((i * nx + j)[ok], np.arange(n_src)[ok])), shape=(n_dst, n_src))
        counts = np.asarray(w.sum(axis=1)).ravel()
        empty = counts == 0
        if empty.any():  # target cells smaller than the source's: bilinear there
            fi2, fj2 = fractional_index(src, dst.lat.ravel()[empty], dst.lon.ravel()[empty])
            r, c, v = _bilinear_rows(src, fi2, fj2)
            w = w + sparse.csr_matrix((v, (np.flatnonzero(empty)[r], c)), shape=(n_dst, n_src))
            counts = np.asarray(w.sum(axis=1)).ravel()
        w = sparse.diags(np.where(counts > 0, 1.0 / np.where(counts > 0, counts, 1.0), 0.0)) @ w
    w = sparse.csr_matrix(w, dtype=np.float64)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            sparse.save_npz(fh, w)
    _WEIGHTS[key] = w
    return w


def _apply(values: np.ndarray, w, shape: tuple[int, int]) -> np.ndarray:
    lead = values.shape[:-2]
    flat = values.reshape(-1, values.shape[-2] * values.shape[-1]).astype(np.float64)
    valid = np.isfinite(flat)
    num = (w @ np.where(valid, flat, 0.0).T).T
    den = (w @ valid.T.astype(np.float64)).T
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den > 1e-6, num / np.where(den > 1e-6, den, 1.0), np.nan)
    return out.reshape(*lead, *shape).astype(values.dtype if values.dtype.kind == "f" else np.float32)


def regrid_to(obj, dst, method: str = "auto", crs_attrs: dict | None = None):
    """``obj`` (a standardised DataArray or Dataset on any grid) on the grid ``dst``
    (a :class:`engine.data.grid.Grid`), NaN-aware; lazy (dask) where ``obj`` is.

    Every variable holding both spatial dims is regridded; other dims (time, level) are kept.
    """
    from engine.data import grid as g

    src = g.describe(obj)
    w = weights(src, dst, method)
    sdims = src.dims

    def one(da: xr.DataArray) -> xr.DataArray:
        if da.chunks is not None:  # a block of time steps holds whole fields (chunked storage may split them)
            da = da.chunk({d: -1 for d in sdims})
        out = xr.apply_ufunc(
            _apply, da, kwargs={"w": w, "shape": dst.shape},
            input_core_dims=[list(sdims)], output_core_dims=[["__gy", "__gx"]],
            dask="parallelized", output_dtypes=[da.dtype if da.dtype.kind == "f" else np.float32],
            dask_gufunc_kwargs={"output_sizes": {"__gy": dst.shape[0], "__gx": dst.shape[1]}},
            keep_attrs=True,
        )
        return out.rename({"__gy": dst.dims[0], "__gx": dst.dims[1]})

    drop = [c for c in obj.coords if set(obj[c].dims) & set(sdims) or c == "crs"]
    if isinstance(obj, xr.DataArray):
        out = one(obj.drop_vars(drop))
    else:
        base = obj.drop_vars(drop)
        out = xr.Dataset({n: one(v) if set(sdims) <= set(v.dims) else v for n, v in base.data_vars.items()},
                         attrs=obj.attrs)
    out = out.assign_coords(g.grid_coords(dst, crs_attrs))
    if isinstance(out, xr.Dataset):
        for v in out.data_vars.values():
            v.attrs.pop("grid_mapping", None)
            if "crs" in out.coords:
                v.attrs["grid_mapping"] = "crs"
    else:
        out.attrs.pop("grid_mapping", None)
        if "crs" in out.coords:
            out.attrs["grid_mapping"] = "crs"
    return out
