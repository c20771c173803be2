"""Real static fields (surface elevation, land–sea mask) for any grid: :func:`static_fields` on
regular lat/lon axes, :func:`static_on` on any standardised grid (rotated pole, projected,
curvilinear: sampled at every cell's true 2-D lat/lon).

Both come from global files inside ordinary PyPI packages, so a user's own domain gets real static
predictors with no download:

- ``elevation`` [m]: pvlib's ``data/Altitude.h5``, 1/12 degree (2160 x 4320, row 0 at 90N, column 0
  at 180W, cell centres), stored as ``uint8 * 28 - 450`` metres with 255 = no data. No data is the
  sea, so sea elevation is 0 here (also where the land mask below sees no land at all).
- ``land_mask`` [1]: the ``global-land-mask`` package (GLOBE, 30 arc-seconds, 21600 x 43200 booleans;
  the package stores True = ocean, we return 1 = land). On a grid coarser than 30" the value is the land *fraction* of the cell.

Values on the requested grid are the mean of the source cells whose centres fall in each target
cell (a block average, exact for nested grids); a target cell smaller than a source cell takes the
nearest source cell. The global land mask is ~1 GB unpacked: the first call streams it once out of
the package's compressed file into a bit-packed copy in the cache folder (117 MB, memory-mapped
afterwards), so that later calls read only the rows they need.

Example
-------
>>> import numpy as np
>>> st = static_fields(np.arange(43.04, 48.3, 1 / 12), np.arange(5.04, 15.6, 1 / 12))
>>> float(st.elevation.max()) > 3000  # the Alps
True
"""

from __future__ import annotations

import functools
import zipfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import xarray as xr

from engine.data.errors import DataError
from engine.data.paths import atomic_path, cache_dir

#: The static fields finescale can provide (the configuration validates ``data.static`` against it).
STATIC_FIELDS = ("elevation", "land_mask")

_ATTRS = {
    "elevation": {
        "units": "m",
        "standard_name": "surface_altitude",
        "long_name": "surface elevation above sea level (0 over the sea)",
        "source": "pvlib data/Altitude.h5 (Mapzen terrain tiles, 1/12 degree)",
    },
    "land_mask": {
        "units": "1",
        "standard_name": "land_area_fraction",
        "long_name": "land fraction of the grid cell (1 = land, 0 = sea)",
        "source": "global-land-mask (GLOBE, 30 arc-seconds)",
    },
}


# -- the global sources ------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _altitude() -> np.ndarray:
    """pvlib's global elevation in metres, (2160, 4320) float32, sea (no data) = 0."""
    import h5py
    import pvlib

    path = Path(pvlib.__file__).parent / "data" / "Altitude.h5"
    if not path.exists():
        raise DataError(f"pvlib's elevation file {str(path)!r} is missing; reinstall pvlib (>= 0.10)")
    with h5py.File(path, "r") as f:
        raw = f["Altitude"][:]
    out = raw.astype(np.float32) * 28.0 - 450.0
    out[raw == 255] = 0.0  # no data = sea
    return out


def _landmask_npz() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("global_land_mask")
    if spec is None or spec.origin is None:
        raise DataError("the land mask needs the package 'global-land-mask'; install it with pip")
    return Path(spec.origin).parent / "globe_combined_mask_compressed.npz"


@functools.lru_cache(maxsize=1)
def _landmask_packed() -> np.ndarray:
    """The 30" land mask, bit-packed along longitude: (21600, 5400) uint8, memory-mapped.

    Built once per cache folder by streaming the package's compressed ``.npz`` (importing
    ``global_land_mask`` would unpack all 933 MB into memory).
    """
    target = cache_dir("static") / "global_land_mask_packed_v2.npy"
    if not target.exists():
        src = _landmask_npz()
        with zipfile.ZipFile(src) as zf, zf.open("mask.npy") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
            if fortran or dtype != np.bool_ or len(shape) != 2:
                raise DataError(f"unexpected layout of {src}: shape={shape}, dtype={dtype}, fortran={fortran}")
            nrow, ncol = shape
            with atomic_path(target) as tmp:
                out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(nrow, ncol // 8))
                chunk = 720
                for r0 in range(0, nrow, chunk):
                    n = min(chunk, nrow - r0)
                    buf = f.read(n * ncol)
                    rows = np.frombuffer(buf, dtype=np.uint8).reshape(n, ncol)
                    # the package stores True = ocean; keep True = land
                    out[r0 : r0 + n] = np.packbits(rows == 0, axis=1)
                out.flush()
                del out
    return np.load(target, mmap_mode="r")


# -- block averaging from a global regular grid -------------------------------------------------
def _edges(centres: np.ndarray) -> np.ndarray:
    """Cell edges (n + 1) from centres (n): midpoints, extrapolated by half a cell at the ends."""
    c = np.asarray(centres, dtype=np.float64)
    if c.size == 1:
        return np.array([c[0] - 0.5, c[0] + 0.5])  # a single cell: one degree wide by convention
    mid = 0.5 * (c[1:] + c[:-1])
    return np.concatenate([[2 * c[0] - mid[0]], mid, [2 * c[-1] - mid[-1]]])


def _ranges(centres, edges, index_of, n: int, wrap: bool):
    """Source index ranges ``[a, b)`` of the cells whose centres fall in each target cell.

    ``index_of(x)`` maps a coordinate to the fractional source index (centres on integers).
    A target cell with no source centre in it takes the nearest source cell.
    """
    lo, hi = np.minimum(edges[:-1], edges[1:]), np.maximum(edges[:-1], edges[1:])
    ia, ib = index_of(lo), index_of(hi)
    # index_of is monotonic increasing or decreasing; order the bounds
    first = np.ceil(np.minimum(ia, ib) - 1e-9).astype(np.int64)
    last = np.ceil(np.maximum(ia, ib) - 1e-9).astype(np.int64)  # exclusive
    empty = last <= first
    nearest = np.rint(index_of(np.asarray(centres, dtype=np.float64))).astype(np.int64)
    first = np.where(empty, nearest, first)
    last = np.where(empty, nearest + 1, last)
    if not wrap:
        first, last = np.clip(first, 0, n - 1), np.clip(last, 1, n)
    return first, last


def _block_mean(
    read_rows: Callable[[int, int], np.ndarray],
    shape: tuple[int, int],
    res: float,
    offset: float,
    lat: np.ndarray,
    lon: np.ndarray,
) -> np.ndarray:
    """Average a global grid (row 0 at 90N, column 0 at 180W, resolution ``res``, centres at
    ``(i + offset) * res``) onto the target grid ``lat`` (n,) x ``lon`` (m,) -> (n, m) float32."""
    nrow, ncol = shape
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    ra, rb = _ranges(lat, _edges(lat), lambda x: (90.0 - x) / res - offset, nrow, wrap=False)
    ca, cb = _ranges(lon, _edges(lon), lambda x: (x + 180.0) / res - offset, ncol, wrap=True)
    c0 = int(ca.min())
    cols = np.arange(c0, int(cb.max())) % ncol  # wrap across the date line
    out = np.empty((lat.size, lon.size), dtype=np.float32)
    for k in range(lat.size):
        block = read_rows(int(ra[k]), int(rb[k]))[:, cols].astype(np.float64)
        csum = np.concatenate([[0.0], np.cumsum(block.sum(axis=0))])
        count = (cb - ca) * block.shape[0]
        out[k] = (csum[cb - c0] - csum[ca - c0]) / count
    return out


def _check_grid(lat, lon) -> tuple[np.ndarray, np.ndarray]:
    lat = np.asarray(lat, dtype=np.float64).ravel()
    lon = np.asarray(lon, dtype=np.float64).ravel()
    if lat.size == 0 or lon.size == 0:
        raise DataError(f"static fields need a non-empty grid, got {lat.size} latitudes x {lon.size} longitudes")
    if not (np.all(np.isfinite(lat)) and np.all(np.abs(lat) <= 90)):
        raise DataError(f"latitudes must lie in [-90, 90], got {lat.min()}..{lat.max()}")
    if not np.all(np.isfinite(lon)):
        raise DataError("longitudes must be finite")
    return lat, lon


@functools.lru_cache(maxsize=32)
def _field(name: str, lat_bytes: bytes, lon_bytes: bytes) -> np.ndarray:
    lat = np.frombuffer(lat_bytes, dtype=np.float64)
    lon = np.frombuffer(lon_bytes, dtype=np.float64)
    if name == "elevation":
        alt = _altitude()
        elev = _block_mean(lambda a, b: alt[a:b], alt.shape, 1 / 12, 0.5, lat, lon)
        # the two sources disagree on some coastal cells: where the land mask sees only sea, 0 m
        return np.where(_field("land_mask", lat_bytes, lon_bytes) > 0, elev, np.float32(0.0))
    packed = _landmask_packed()
    ncol = packed.shape[1] * 8
    return _block_mean(
        lambda a, b: np.unpackbits(packed[a:b], axis=1), (packed.shape[0], ncol), 1 / 120, 0.0, lat, lon
    )


def _box_mean_2d(
    read: Callable[[int, int, int, int], np.ndarray],
    shape: tuple[int, int],
    res: float,
    offset: float,
    lat: np.ndarray,
    lon: np.ndarray,
    dlat: np.ndarray,
    dlon: np.ndarray,
) -> np.ndarray:
    """Mean of a global grid (as in :func:`_block_mean`) over a box around every cell of a 2-D
    grid: the source cells whose centres lie within ``lat +- dlat/2``, ``lon +- dlon/2``; a box
    holding no source centre takes the nearest source cell. Summed-area table over the window
    the grid covers; ``read(r0, r1, c0, c1)`` returns source rows ``r0:r1`` and columns ``c0:c1``
    (taken modulo the row length, so windows may cross the date line)."""
    nrow, ncol = shape
    lon = np.unwrap(lon, period=360.0, axis=-1)

    def row_of(x):  # fractional source row of a latitude
        return (90.0 - x) / res - offset

    def col_of(x):
        return (x + 180.0) / res - offset

    ra = np.ceil(row_of(lat + dlat / 2) - 1e-9).astype(np.int64)
    rb = np.floor(row_of(lat - dlat / 2) + 1e-9).astype(np.int64) + 1
    ca = np.ceil(col_of(lon - dlon / 2) - 1e-9).astype(np.int64)
    cb = np.floor(col_of(lon + dlon / 2) + 1e-9).astype(np.int64) + 1
    empty = (rb <= ra) | (cb <= ca)
    nr, nc = np.rint(row_of(lat)).astype(np.int64), np.rint(col_of(lon)).astype(np.int64)
    ra, rb = np.where(empty, nr, ra), np.where(empty, nr + 1, rb)
    ca, cb = np.where(empty, nc, ca), np.where(empty, nc + 1, cb)
    ra, rb = np.clip(ra, 0, nrow - 1), np.clip(rb, 1, nrow)
    r0, r1, c0, c1 = int(ra.min()), int(rb.max()), int(ca.min()), int(cb.max())
    window = read(r0, r1, c0, c1)
    # integer sources (the land mask's bits) sum exactly in int32 (half int64's memory on large
    # domains; a window under 2**31 cells cannot overflow it); elevation in float64
    acc = (np.int32 if window.size < 2**31 else np.int64) if window.dtype.kind in "ub" else np.float64
    sat = np.zeros((window.shape[0] + 1, window.shape[1] + 1), dtype=acc)
    np.cumsum(window, axis=0, dtype=acc, out=sat[1:, 1:])  # in place: no full-size temporaries
    np.cumsum(sat[1:, 1:], axis=1, out=sat[1:, 1:])
    del window
    ra, rb, ca, cb = ra - r0, rb - r0, ca - c0, cb - c0
    total = sat[rb, cb] - sat[ra, cb] - sat[rb, ca] + sat[ra, ca]
    return (total / ((rb - ra) * (cb - ca))).astype(np.float32)


@functools.lru_cache(maxsize=16)
def _field_2d(name: str, key: bytes, shape: tuple[int, int]) -> np.ndarray:
    lat, lon, dlat, dlon = np.frombuffer(key, dtype=np.float64).reshape(4, *shape)
    if name == "elevation":
        alt = _altitude()
        elev = _box_mean_2d(lambda a, b, c, d: alt[a:b, np.arange(c, d) % alt.shape[1]], alt.shape, 1 / 12, 0.5,
                            lat, lon, dlat, dlon)
        return np.where(_field_2d("land_mask", key, shape) > 0, elev, np.float32(0.0))
    packed = _landmask_packed()
    ncol = packed.shape[1] * 8

    def read(a, b, c, d):  # unpack only the bytes holding columns c:d (modulo the row)
        bytes_ = np.arange(c // 8, (d + 7) // 8) % packed.shape[1]
        return np.unpackbits(packed[a:b][:, bytes_], axis=1)[:, c - 8 * (c // 8):][:, : d - c]

    return _box_mean_2d(read, (packed.shape[0], ncol), 1 / 120, 0.0, lat, lon, dlat, dlon)


def static_on(obj, names: Sequence[str] = STATIC_FIELDS) -> xr.Dataset:
    """Real static fields on the grid of ``obj`` (a standardised Dataset/DataArray on any grid),
    sampled at every cell's true position: the mean of the source cells inside the cell where it is
    larger than the source's cells, the nearest source cell otherwise.

    Returns a Dataset on ``obj``'s spatial dims with its spatial coordinates (and ``crs``).
    """
    from engine.data import grid as g

    names = tuple(names)
    unknown = [n for n in names if n not in STATIC_FIELDS]
    if unknown:
        raise DataError(f"unknown static field(s) {unknown}; accepted: {', '.join(STATIC_FIELDS)}")
    dims = g.spatial_dims(obj)
    coords = {c: obj.coords[c] for c in obj.coords if c == "crs" or (obj[c].dims and set(obj[c].dims) <= set(dims))}
    if dims == ("lat", "lon") and obj["lat"].ndim == 1:
        return static_fields(obj["lat"].values, obj["lon"].values, names).assign_coords(coords)
    grid = g.describe(obj)
    lat, lon = _check_grid(grid.lat, grid.lon)
    dlat, dlon = g.cell_size(grid)
    key = np.stack([grid.lat, grid.lon, dlat, dlon]).astype(np.float64).tobytes()
    data_vars = {n: (dims, _field_2d(n, key, grid.shape).copy(), dict(_ATTRS[n])) for n in names}
    return xr.Dataset(data_vars, coords=coords)


def static_fields(lat: Sequence[float], lon: Sequence[float], names: Sequence[str] = STATIC_FIELDS) -> xr.Dataset:
    """Real static fields on the grid ``lat`` x ``lon``.

    Parameters
    ----------
    lat, lon : 1-D sequences of cell-centre coordinates in degrees (any order; longitudes in
        -180..180 or 0..360).
    names : static field names, a subset of :data:`STATIC_FIELDS`.

    Returns
    -------
    xr.Dataset
        One float32 variable ``(lat, lon)`` per name, with CF attributes. ``elevation`` in metres
        (0 over the sea), ``land_mask`` the land fraction in [0, 1].
    """
    names = tuple(names)
    unknown = [n for n in names if n not in STATIC_FIELDS]
    if unknown:
        raise DataError(f"unknown static field(s) {unknown}; accepted: {', '.join(STATIC_FIELDS)}")
    lat_a, lon_a = _check_grid(lat, lon)
    data_vars = {}
    for name in names:
        # unwrap across the date line / Greenwich so cell edges stay monotonic (359.5, 0.5 -> 359.5, 360.5)
        lon_u = np.unwrap(lon_a, period=360.0) if lon_a.size > 1 else lon_a
        values = _field(name, lat_a.tobytes(), np.ascontiguousarray(lon_u).tobytes()).copy()
        data_vars[name] = (("lat", "lon"), values, dict(_ATTRS[name]))
    coords = {
        "lat": ("lat", lat_a, {"units": "degrees_north", "standard_name": "latitude"}),
        "lon": ("lon", lon_a, {"units": "degrees_east", "standard_name": "longitude"}),
    }
    return xr.Dataset(data_vars, coords=coords)
