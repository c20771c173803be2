"""Grids: where every cell of a dataset is, for every kind of grid.

This is the one module that knows grids differ. After :func:`standardise_grid` (called by
:func:`engine.data.catalog.standardise`) a dataset has

- regular latitude/longitude grids: dims ``(..., lat, lon)``, 1-D ``lat`` ascending, ``lon``
  increasing and continuous over the domain (a box across the date line stored 0..360 stays
  170..190; one across Greenwich stays -10..10); a global grid is periodic in longitude;
- every other grid (rotated pole, Lambert conformal, polar stereographic, Mercator, other
  projections, curvilinear): dims ``(..., y, x)`` with 1-D ascending ``y``/``x`` in the file's
  native units (rotated degrees, metres or km; cell indices for a curvilinear grid), 2-D ``lat(y, x)``
  and ``lon(y, x)`` for every cell, and the CRS kept as a scalar coordinate ``crs`` holding the CF
  grid-mapping attributes and ``crs_wkt``.

Files are recognised by :mod:`engine.data.gridcf` from their CF metadata (cf-xarray, and
``pyproj.CRS.from_cf`` or a PROJ string for the CRS); where a file names a grid mapping that it
does not contain (the CORDEX ML-Bench templates), the file's 2-D lat/lon locate the cells and a
log message says so once. This module describes a standardised grid and does its geometry:
locating points (:func:`fractional_index`), footprints (:func:`footprint`, :func:`check_inside`),
coarser grids (:func:`block_centres`) and padding to a multiple of the scale
(:func:`pad_to_multiple`, :func:`unpad`).

Downstream code asks :func:`spatial_dims`, :func:`latlon` and :func:`describe`; nobody else
branches on the kind of grid.

Example
-------
>>> from engine.data import synthetic
>>> ds = standardise_grid(synthetic.rotated_pole(ny=8, nx=10, ntime=2))
>>> spatial_dims(ds), describe(ds).kind
(('y', 'x'), 'rotated')
>>> lat, lon = latlon(ds.tas)
>>> lat.shape
(8, 10)
"""

from __future__ import annotations

import functools
import hashlib
import logging
from dataclasses import dataclass

import numpy as np
import xarray as xr

from engine.data.errors import DataError

log = logging.getLogger(__name__)

KINDS = ("latlon", "rotated", "projected", "curvilinear")
_METRES = {"m": 1.0, "metre": 1.0, "metres": 1.0, "meter": 1.0, "meters": 1.0,
           "km": 1000.0, "kilometre": 1000.0, "kilometres": 1000.0, "kilometer": 1000.0, "kilometers": 1000.0}
_said: set[str] = set()  # messages logged once per process


def _say_once(msg: str) -> None:
    if msg not in _said:
        _said.add(msg)
        log.info(msg)


# -- the description ------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Grid:
    """Where every cell of a 2-D grid is.

    Attributes
    ----------
    kind : one of :data:`KINDS`.
    dims : the two spatial dims, ``("lat", "lon")`` or ``("y", "x")``.
    shape : ``(ny, nx)``.
    crs : ``pyproj.CRS`` of the native ``y``/``x`` (WGS 84 lat/lon for ``latlon``), None for a
        curvilinear grid known only through its 2-D lat/lon.
    y, x : 1-D native coordinates (ascending).
    lat, lon : 2-D ``(ny, nx)`` degrees; ``lon`` continuous over the domain.
    metres_per_unit : how many metres one native unit is (1000 for km); 1 for degrees.
    periodic : the grid wraps around the globe in longitude.
    """

    kind: str
    dims: tuple[str, str]
    shape: tuple[int, int]
    crs: object
    y: np.ndarray
    x: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    metres_per_unit: float = 1.0
    periodic: bool = False

    @functools.cached_property
    def key(self) -> str:
        """A hash of the cell positions (and CRS): equal grids share regridding weights."""
        h = hashlib.sha1(f"{self.kind}{self.dims}{self.shape}{self.periodic}".encode())
        if self.crs is not None:  # bilinear weights are computed in the native coordinates
            h.update(self.crs.to_wkt().encode())
        h.update(np.round(self.lat, 6).astype(np.float64).tobytes())
        h.update(np.round(np.mod(self.lon, 360.0), 6).astype(np.float64).tobytes())
        return h.hexdigest()[:20]

    def to_native(self, lat, lon) -> tuple[np.ndarray, np.ndarray]:
        """Native (y, x) of points given in degrees (for ``kind != "curvilinear"``)."""
        if self.kind == "latlon":
            return np.asarray(lat, dtype=np.float64), _lon_near(np.asarray(lon, dtype=np.float64), self.x)
        x, y = _transformer(self.crs, to_native=True).transform(np.asarray(lon, float), np.asarray(lat, float))
        return np.asarray(y) / self.metres_per_unit, np.asarray(x) / self.metres_per_unit

    def to_latlon(self, y, x) -> tuple[np.ndarray, np.ndarray]:
        """(lat, lon) in degrees of native points (for ``kind != "curvilinear"``)."""
        if self.kind == "latlon":
            return np.asarray(y, dtype=np.float64), np.asarray(x, dtype=np.float64)
        m = self.metres_per_unit
        lon, lat = _transformer(self.crs, to_native=False).transform(np.asarray(x, float) * m, np.asarray(y, float) * m)
        return np.asarray(lat), np.asarray(lon)

    def __repr__(self) -> str:
        crs = None if self.crs is None else (self.crs.name or "custom")
        return (f"Grid(kind={self.kind!r}, dims={self.dims}, shape={self.shape}, crs={crs!r}, "
                f"lat {self.lat.min():.3f}..{self.lat.max():.3f}, lon {self.lon.min():.3f}..{self.lon.max():.3f}"
                f"{', periodic' if self.periodic else ''})")


@functools.lru_cache(maxsize=32)
def _transformer_cached(wkt: str, to_native: bool):
    from pyproj import CRS, Transformer

    crs, geo = CRS.from_wkt(wkt), CRS.from_epsg(4326)
    return Transformer.from_crs(geo, crs, always_xy=True) if to_native else Transformer.from_crs(crs, geo, always_xy=True)


def _transformer(crs, to_native: bool):
    return _transformer_cached(crs.to_wkt(), to_native)


def _lon_near(lon: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Longitudes shifted by multiples of 360 to lie within 180 degrees of the axis' centre."""
    centre = 0.5 * (float(np.min(axis)) + float(np.max(axis)))
    return (centre - 180.0) + np.mod(lon - (centre - 180.0), 360.0)


# -- asking a standardised object ------------------------------------------------------------------
def spatial_dims(obj) -> tuple[str, str]:
    """``("lat", "lon")`` for a regular lat/lon grid, ``("y", "x")`` for every other grid.

    ``obj`` is a standardised Dataset/DataArray (or anything with ``dims``)."""
    dims = tuple(obj.dims)
    for pair in (("lat", "lon"), ("y", "x")):
        if pair[0] in dims and pair[1] in dims:
            return pair
    raise DataError(f"no spatial dims in {dims}; expected (lat, lon) or (y, x) (open data through "
                    "engine.data.catalog.open_dataset or standardise it first)")


def crs_of(obj):
    """The ``pyproj.CRS`` of a standardised object's native coordinates, or None."""
    from pyproj import CRS

    if "crs" not in obj.coords:
        return CRS.from_epsg(4326) if spatial_dims(obj) == ("lat", "lon") else None
    attrs = dict(obj.coords["crs"].attrs)
    return CRS.from_wkt(attrs["crs_wkt"]) if "crs_wkt" in attrs else CRS.from_cf(attrs)


def latlon(obj) -> tuple[np.ndarray, np.ndarray]:
    """Latitude and longitude (degrees) of every cell, two ``(ny, nx)`` float64 arrays."""
    dims = spatial_dims(obj)
    if dims == ("lat", "lon") and obj["lat"].ndim == 1:
        lat2, lon2 = np.meshgrid(obj["lat"].values, obj["lon"].values, indexing="ij")
        return lat2.astype(np.float64), lon2.astype(np.float64)
    lat, lon = obj.coords["lat"], obj.coords["lon"]
    return (np.asarray(lat.transpose(*dims).values, dtype=np.float64),
            np.asarray(lon.transpose(*dims).values, dtype=np.float64))


def describe(obj) -> Grid:
    """The :class:`Grid` of a standardised Dataset or DataArray."""
    dims = spatial_dims(obj)
    y, x = (np.asarray(obj[d].values, dtype=np.float64) for d in dims)
    lat, lon = latlon(obj)
    crs = crs_of(obj)
    if dims == ("lat", "lon"):
        return Grid("latlon", dims, lat.shape, crs, y, x, lat, lon, 1.0, _is_periodic(x))
    if crs is None:
        kind, metres = "curvilinear", 1.0
    elif crs.to_cf().get("grid_mapping_name") == "rotated_latitude_longitude":
        kind, metres = "rotated", 1.0
    else:
        kind, metres = "projected", _METRES.get(str(obj["x"].attrs.get("units", "m")), 1.0)
    return Grid(kind, dims, lat.shape, crs, y, x, lat, lon, metres, False)


def _is_periodic(lon: np.ndarray) -> bool:
    if lon.size < 3:
        return False
    step = float(np.median(np.diff(lon)))
    return abs(lon.size * step - 360.0) < 0.5 * step


def _continuous_lon(lon2d: np.ndarray) -> np.ndarray:
    """2-D longitudes without 360-degree jumps, centred in -180..180."""
    out = np.unwrap(np.asarray(lon2d, dtype=np.float64), period=360.0, axis=-1)
    col = np.unwrap(out[:, 0], period=360.0)
    out = out + (col - out[:, 0])[:, None]
    centre = float(np.nanmean(out))
    return out - 360.0 * np.round(centre / 360.0)


def standardise_grid(ds: xr.Dataset, name: str = "dataset") -> xr.Dataset:
    """finescale's layout of ``ds``'s spatial coordinates (see the module docstring); the CF
    detection lives in :mod:`engine.data.gridcf`."""
    from engine.data.gridcf import standardise_grid as _standardise

    return _standardise(ds, name)


# -- geometry: locating points in a grid, footprints, coarser and padded grids ----------------------
def _xyz(lat, lon) -> np.ndarray:
    la, lo = np.deg2rad(np.asarray(lat, float)), np.deg2rad(np.asarray(lon, float))
    return np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=-1)


def _axis_index(axis: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Fractional index of ``points`` along an ascending axis, extrapolated linearly past its ends."""
    axis = np.asarray(axis, dtype=np.float64)
    if axis.size == 1:
        return np.zeros_like(points, dtype=np.float64)
    idx = np.interp(points, axis, np.arange(axis.size, dtype=np.float64))
    lo_step, hi_step = axis[1] - axis[0], axis[-1] - axis[-2]
    idx = np.where(points < axis[0], (points - axis[0]) / lo_step, idx)
    return np.where(points > axis[-1], axis.size - 1 + (points - axis[-1]) / hi_step, idx)


_TREES: dict = {}


def _tree(grid: Grid):
    """k-d tree of the cell centres' unit vectors, kept for the last few grids."""
    from scipy.spatial import cKDTree

    if grid.key not in _TREES:
        if len(_TREES) >= 8:
            _TREES.pop(next(iter(_TREES)))
        _TREES[grid.key] = cKDTree(_xyz(grid.lat, grid.lon).reshape(-1, 3))
    return _TREES[grid.key]


def fractional_index(grid: Grid, lat, lon) -> tuple[np.ndarray, np.ndarray]:
    """Fractional (row, column) of points (degrees) in ``grid``: cell centres are whole numbers,
    a point inside the grid's outer cell edges lies in ``[-0.5, n - 0.5]``.

    Rectilinear grids (lat/lon, rotated, projected) go through their CRS exactly; a curvilinear
    grid known only by its 2-D lat/lon takes the nearest centre (k-d tree on the sphere) and two
    Gauss-Newton steps of the local bilinear map.
    """
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    if grid.kind != "curvilinear":
        y, x = grid.to_native(lat, lon)
        return _axis_index(grid.y, y), _axis_index(grid.x, x)
    ny, nx = grid.shape
    pts = _xyz(lat, lon).reshape(-1, 3)
    _, flat = _tree(grid).query(pts)
    fi, fj = np.divmod(flat, nx)
    fi, fj = fi.astype(np.float64), fj.astype(np.float64)
    cells = _xyz(grid.lat, grid.lon)
    for _ in range(2):
        i0 = np.clip(np.floor(fi), 0, max(ny - 2, 0)).astype(int)
        j0 = np.clip(np.floor(fj), 0, max(nx - 2, 0)).astype(int)
        i1, j1 = np.minimum(i0 + 1, ny - 1), np.minimum(j0 + 1, nx - 1)
        di, dj = (fi - i0)[:, None], (fj - j0)[:, None]
        p00, p01, p10, p11 = cells[i0, j0], cells[i0, j1], cells[i1, j0], cells[i1, j1]
        pos = p00 * (1 - di) * (1 - dj) + p01 * (1 - di) * dj + p10 * di * (1 - dj) + p11 * di * dj
        d_i = (p10 - p00) * (1 - dj) + (p11 - p01) * dj
        d_j = (p01 - p00) * (1 - di) + (p11 - p10) * di
        jac = np.stack([d_i, d_j], axis=-1)  # (n, 3, 2)
        jtj = np.einsum("nki,nkj->nij", jac, jac)
        jtr = np.einsum("nki,nk->ni", jac, pts - pos)
        delta = np.linalg.solve(jtj + 1e-18 * np.eye(2), jtr[..., None])[..., 0]
        fi, fj = fi + delta[:, 0], fj + delta[:, 1]
    return fi.reshape(lat.shape), fj.reshape(lat.shape)


def inside(fi: np.ndarray, fj: np.ndarray, grid: Grid, tol: float = 1e-6) -> np.ndarray:
    """Which fractional positions lie within the grid's outer cell edges."""
    ny, nx = grid.shape
    ok = (fi >= -0.5 - tol) & (fi <= ny - 0.5 + tol)
    if not grid.periodic:
        ok &= (fj >= -0.5 - tol) & (fj <= nx - 0.5 + tol)
    return ok & np.isfinite(fi) & np.isfinite(fj)


def boundary(grid: Grid, per_side: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(lat, lon) of points along the grid's outer cell edges (its true footprint)."""
    ny, nx = grid.shape
    ti = np.linspace(-0.5, ny - 0.5, per_side)
    tj = np.linspace(-0.5, nx - 0.5, per_side)
    ii = np.concatenate([np.full(per_side, -0.5), ti, np.full(per_side, ny - 0.5), ti[::-1]])
    jj = np.concatenate([tj, np.full(per_side, nx - 0.5), tj[::-1], np.full(per_side, -0.5)])
    return at_index(grid, ii, jj)


def at_index(grid: Grid, fi, fj) -> tuple[np.ndarray, np.ndarray]:
    """(lat, lon) at fractional indices, extrapolating half a cell (or more) past the edges."""
    fi, fj = np.asarray(fi, dtype=np.float64), np.asarray(fj, dtype=np.float64)
    if grid.kind != "curvilinear":
        def along(axis, f):
            n = np.arange(axis.size, dtype=np.float64)
            if axis.size == 1:
                return np.full_like(f, axis[0])
            v = np.interp(f, n, axis)
            v = np.where(f < 0, axis[0] + f * (axis[1] - axis[0]), v)
            return np.where(f > axis.size - 1, axis[-1] + (f - axis.size + 1) * (axis[-1] - axis[-2]), v)
        return grid.to_latlon(along(grid.y, fi), along(grid.x, fj))
    ny, nx = grid.shape
    i0 = np.clip(np.floor(fi), 0, max(ny - 2, 0)).astype(int)
    j0 = np.clip(np.floor(fj), 0, max(nx - 2, 0)).astype(int)
    i1, j1 = np.minimum(i0 + 1, ny - 1), np.minimum(j0 + 1, nx - 1)
    di, dj = (fi - i0)[..., None], (fj - j0)[..., None]
    c = _xyz(grid.lat, grid.lon)
    p = (c[i0, j0] * (1 - di) * (1 - dj) + c[i0, j1] * (1 - di) * dj + c[i1, j0] * di * (1 - dj)
         + c[i1, j1] * di * dj)
    lat = np.rad2deg(np.arctan2(p[..., 2], np.hypot(p[..., 0], p[..., 1])))
    lon = np.rad2deg(np.arctan2(p[..., 1], p[..., 0]))
    return lat, _lon_near(lon, grid.lon)


def footprint(grid: Grid) -> tuple[float, float, float, float]:
    """(lat_min, lat_max, lon_min, lon_max) of the outer cell edges (for messages and cuts)."""
    lat, lon = boundary(grid)
    if grid.periodic:
        return float(lat.min()), float(lat.max()), -180.0, 180.0
    lon = np.unwrap(lon, period=360.0)
    return float(lat.min()), float(lat.max()), float(lon.min()), float(lon.max())


def fmt_footprint(grid: Grid) -> str:
    b = footprint(grid)
    return f"{grid.kind} grid {grid.shape[0]} x {grid.shape[1]}, lat {b[0]:.4g}..{b[1]:.4g}, lon {b[2]:.4g}..{b[3]:.4g}"


def check_inside(target: Grid, source: Grid, target_name: str, source_name: str) -> None:
    """Raise :class:`DataError` unless the target's true footprint lies within the source's.

    ``target_name`` / ``source_name`` describe the grids in the message ("the grid of entry 'x'")."""
    lat, lon = boundary(target)
    fi, fj = fractional_index(source, lat, lon)
    ok = inside(fi, fj, source, tol=1e-3)
    if not ok.all():
        bad = int((~ok).sum())
        raise DataError(
            f"the {target_name} ({fmt_footprint(target)}) does not lie inside the {source_name} "
            f"({fmt_footprint(source)}): {bad} of {ok.size} points on its outer edge "
            f"are outside{' (the grids do not overlap at all)' if bad == ok.size else ''}; cut the target "
            "with data.bbox or choose an input that covers it"
        )


def cell_size(grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Approximate extent of every cell in degrees of latitude and longitude, two (ny, nx) arrays
    (for area means of finer sources over each cell)."""
    lat, lon = grid.lat, np.unwrap(grid.lon, period=360.0, axis=-1)

    def spread(a, axis):
        if a.shape[axis] < 2:
            return np.zeros_like(a)
        return np.abs(np.gradient(a, axis=axis))

    dlat = spread(lat, 0) + spread(lat, 1)
    dlon = spread(lon, 0) + spread(lon, 1)
    return dlat, dlon


def grid_coords(grid: Grid, crs_attrs: dict | None = None) -> dict:
    """Coordinates that put an array on ``grid`` (1-D y/x or lat/lon, 2-D lat/lon, crs)."""
    if grid.kind == "latlon":
        return {"lat": ("lat", grid.y, {"standard_name": "latitude", "units": "degrees_north", "axis": "Y"}),
                "lon": ("lon", grid.x, {"standard_name": "longitude", "units": "degrees_east", "axis": "X"})}
    # projected axes keep their unit, so that describe() of the result reads km as km (without it a
    # regridded MOS input on a km grid was placed as if in metres, thousands of km away)
    unit = {1.0: "m", 1000.0: "km"}.get(float(grid.metres_per_unit)) if grid.kind == "projected" else None
    axis_attrs = [{"axis": a, **({"units": unit} if unit else {})} for a in ("Y", "X")]
    coords = {
        "y": ("y", grid.y, axis_attrs[0]),
        "x": ("x", grid.x, axis_attrs[1]),
        "lat": (("y", "x"), grid.lat, {"standard_name": "latitude", "units": "degrees_north"}),
        "lon": (("y", "x"), grid.lon, {"standard_name": "longitude", "units": "degrees_east"}),
    }
    if grid.crs is not None:
        attrs = dict(crs_attrs) if crs_attrs else {k: v for k, v in grid.crs.to_cf().items() if v is not None}
        coords["crs"] = ((), np.int32(0), attrs)
    return coords


def block_centres(grid: Grid, scale: int) -> Grid:
    """The grid of the centres of ``scale`` x ``scale`` blocks (sizes must be multiples of
    ``scale``): block-mean native coordinates, and the cell positions from the CRS (or, for a
    curvilinear grid, the normalised mean of the block's unit vectors)."""
    ny, nx = grid.shape
    if ny % scale or nx % scale:
        raise DataError(f"block centres need sizes that are multiples of {scale}, got {ny} x {nx}")
    y = grid.y.reshape(-1, scale).mean(axis=1)
    x = grid.x.reshape(-1, scale).mean(axis=1)
    if grid.kind == "curvilinear":
        v = _xyz(grid.lat, grid.lon).reshape(ny // scale, scale, nx // scale, scale, 3).mean(axis=(1, 3))
        lat = np.rad2deg(np.arctan2(v[..., 2], np.hypot(v[..., 0], v[..., 1])))
        lon = _continuous_lon(np.rad2deg(np.arctan2(v[..., 1], v[..., 0])))
        lon = lon + 360.0 * np.round((grid.lon.mean() - lon.mean()) / 360.0)
    else:
        yy, xx = np.meshgrid(y, x, indexing="ij")
        lat, lon = grid.to_latlon(yy, xx)
        if grid.kind != "latlon":
            lon = _lon_near(lon, grid.lon)
    return Grid(grid.kind, grid.dims, lat.shape, grid.crs, y, x, np.asarray(lat), np.asarray(lon),
                grid.metres_per_unit, grid.periodic)


# -- fitting a grid to a scale ----------------------------------------------------------------------
def pad_to_multiple(obj, scale: int, name: str = "the target grid"):
    """Pad the spatial dims of ``obj`` at their ends to multiples of ``scale``.

    Padded cells are NaN (invalid: the mask excludes them from losses and scores) and carry real
    coordinates: the native axes continue with their spacing and the 2-D lat/lon are those of the
    continued axes (through the CRS, or extrapolated for a curvilinear grid).

    Returns
    -------
    (padded, padding) : ``padding`` = ``{"dims": (ydim, xdim), "shape": (ny, nx), "pad": (py, px)}``
        (empty ``pad`` = (0, 0) when nothing was done); :func:`unpad` undoes it.
    """
    ydim, xdim = spatial_dims(obj)
    ny, nx = obj.sizes[ydim], obj.sizes[xdim]
    if scale > ny or scale > nx:
        raise DataError(f"data.scale={scale} is larger than {name} ({ny} x {nx}); accepted: a scale of "
                        f"at most {min(ny, nx)} (or a larger domain)")
    py, px = (-ny) % scale, (-nx) % scale
    info = {"dims": (ydim, xdim), "shape": (ny, nx), "pad": (py, px)}
    if py == 0 and px == 0:
        return obj, info
    g = describe(obj)
    ext = {}
    for d, axis, p in ((ydim, g.y, py), (xdim, g.x, px)):
        step = axis[-1] - axis[-2] if axis.size > 1 else 1.0
        ext[d] = np.concatenate([axis, axis[-1] + step * np.arange(1, p + 1)])
    drop = [c for c in obj.coords if c != "crs" and set(obj[c].dims) & {ydim, xdim}]
    out = obj.drop_vars(drop).pad({ydim: (0, py), xdim: (0, px)}, mode="constant")  # NaN for floats
    coords = {ydim: (ydim, ext[ydim], dict(obj[ydim].attrs)), xdim: (xdim, ext[xdim], dict(obj[xdim].attrs))}
    if g.kind != "latlon":
        ii, jj = np.meshgrid(np.arange(ny + py, dtype=float), np.arange(nx + px, dtype=float), indexing="ij")
        lat, lon = at_index(g, ii, jj)
        lat[:ny, :nx], lon[:ny, :nx] = g.lat, g.lon  # the original cells keep their exact positions
        coords["lat"] = ((ydim, xdim), lat, dict(obj["lat"].attrs))
        coords["lon"] = ((ydim, xdim), lon, dict(obj["lon"].attrs))
    out = out.assign_coords(coords)
    log.info("%s: %d x %d is not a multiple of data.scale=%d; padded by %d row(s) and %d column(s) of invalid "
             "(NaN, masked) cells to %d x %d; predictions are cut back to %d x %d", name, ny, nx, scale, py, px,
             ny + py, nx + px, ny, nx)
    return out, info


def unpad(obj, padding: dict | None):
    """Undo :func:`pad_to_multiple`: the first ``shape`` cells of the spatial dims (``padding`` as
    returned there, or ``PairedData.padding``); anything without those dims is returned as is."""
    if not padding or not any(padding.get("pad", (0, 0))):
        return obj
    (ydim, xdim), (ny, nx) = padding["dims"], padding["shape"]
    sel = {d: slice(0, n) for d, n in ((ydim, ny), (xdim, nx)) if d in obj.dims}
    return obj.isel(sel) if sel else obj
