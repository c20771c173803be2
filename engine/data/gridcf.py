"""Recognising the grid of any CF file and bringing it to finescale's layout
(:func:`standardise_grid`; the layout itself is described in :mod:`engine.data.grid`).

Coordinates are found from CF metadata through cf-xarray (``standard_name``, ``axis``, ``units``,
``grid_mapping``); only where a file has none does cf-xarray's name-based guess run. The CRS comes
from the grid-mapping variable (``pyproj.CRS.from_cf``) or from a PROJ string in a global
attribute (``projection``, as radar composites carry; an ellipsoid given in km, as pySTEPS writes,
is turned into metres with x/y in km). A grid mapping that is named but absent (the CORDEX
ML-Bench templates) leaves the file's 2-D lat/lon to locate the cells, said once in the log.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from engine.data.errors import DataError
from engine.data.grid import _METRES, Grid, _continuous_lon, _is_periodic, _say_once

_PROJ_ATTRS = ("projection", "proj4", "proj4_string", "proj4text", "proj_string", "crs")


def _first_dim_coord(ds, names, ndim=1):
    for n in names:
        if n in ds.variables and ds[n].ndim == ndim and (ndim != 1 or ds[n].dims[0] == n or n in ds.dims):
            return n
    return None


def _grid_mapping_name(ds) -> str | None:
    for v in ds.data_vars.values():
        gm = v.attrs.get("grid_mapping") or v.encoding.get("grid_mapping")
        if gm:
            return str(gm).split(":")[0].split()[0]
    return None


def _crs_from_file(ds, name: str):
    """(CRS or None, name of the grid-mapping variable or None, how it was found)."""
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    gm = _grid_mapping_name(ds)
    if gm and gm in ds.variables:
        try:
            return CRS.from_cf(dict(ds[gm].attrs)), gm, f"grid mapping {gm!r}"
        except CRSError as exc:
            raise DataError(f"{name}: grid mapping {gm!r} is not a CRS pyproj understands: {exc}") from None
    for attr in _PROJ_ATTRS:
        text = ds.attrs.get(attr)
        if isinstance(text, str) and ("+proj" in text or "PROJCRS" in text or text.upper().startswith("EPSG:")):
            try:
                return CRS(text), None, f"global attribute {attr!r}"
            except CRSError:
                continue
    if gm:
        return None, gm, "missing"
    return None, None, "none"


def _km_ellipsoid(crs):
    """PROJ strings with ``+a=6378.137`` (km, as pySTEPS writes radar grids) -> the metric CRS
    and the factor of its native unit (1000)."""
    from pyproj import CRS

    if crs is None or crs.ellipsoid is None or crs.ellipsoid.semi_major_metre > 1e5:
        return crs, 1.0
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "may lose information": the PROJ string is the source
        params = crs.to_dict()
    for k in ("a", "b", "R", "x_0", "y_0"):
        if k in params:
            params[k] = float(params[k]) * 1000.0
    return CRS.from_dict(params), 1000.0


def _agrees(grid: Grid, lat: np.ndarray, lon: np.ndarray) -> bool:
    """Whether the CRS puts a sample of cells within half a cell of the file's own 2-D lat/lon
    (a wrong false easting or unit in a grid mapping is a real quirk of RCM files)."""
    ny, nx = lat.shape
    iy = np.unique(np.linspace(0, ny - 1, 5).astype(int))
    ix = np.unique(np.linspace(0, nx - 1, 5).astype(int))
    yy, xx = np.meshgrid(grid.y[iy], grid.x[ix], indexing="ij")
    clat, clon = grid.to_latlon(yy, xx)
    flat, flon = lat[np.ix_(iy, ix)], lon[np.ix_(iy, ix)]
    coslat = np.cos(np.deg2rad(flat))
    dev = np.hypot(clat - flat, ((clon - flon + 180.0) % 360.0 - 180.0) * coslat)
    if nx > 1:
        step = np.hypot(np.diff(lat, axis=1), ((np.diff(lon, axis=1) + 180.0) % 360.0 - 180.0) * np.cos(np.deg2rad(lat[:, 1:])))
    else:
        step = np.hypot(np.diff(lat, axis=0), np.zeros(1))
    cell = float(np.nanmedian(step)) if step.size else np.inf
    return bool(np.all(np.isfinite(dev)) and np.nanmax(dev) <= 0.5 * cell)


def _regular_lon(ds: xr.Dataset) -> xr.Dataset:
    """Sort and shift 1-D longitudes so that they increase without a jump over the domain."""
    lon = ds["lon"].values.astype(np.float64)
    if lon.size < 2:
        return ds
    wrapped = (lon + 180.0) % 360.0 - 180.0
    order = np.argsort(wrapped, kind="stable")
    w = wrapped[order]
    gaps = np.diff(np.concatenate([w, [w[0] + 360.0]]))
    cut = int(np.argmax(gaps))  # the domain's seam is after the largest gap
    if _is_periodic(np.sort(wrapped)):
        cut = w.size - 1  # a global grid keeps -180..180
    order = np.roll(order, -(cut + 1))
    new = np.unwrap(wrapped[order], period=360.0)
    new = new - 360.0 * np.floor((new[0] + 180.0) / 360.0)
    if np.array_equal(order, np.arange(lon.size)) and np.allclose(new, lon):
        return ds
    ds = ds.isel(lon=order)
    return ds.assign_coords(lon=("lon", new, dict(ds["lon"].attrs)))


def standardise_grid(ds: xr.Dataset, name: str = "dataset") -> xr.Dataset:
    """Rename and orient the spatial coordinates of ``ds`` as the module docstring says.

    Lazy: nothing but coordinates is read.

    Raises
    ------
    DataError
        no latitude/longitude or projection coordinates, or a projected grid with neither a usable
        grid mapping nor 2-D lat/lon (names what was found and what would be accepted).
    """
    import cf_xarray  # noqa: F401  (registers the .cf accessor)

    if "time" not in ds.dims:
        times = [t for t in ds.cf.axes.get("T", []) if t in ds.dims] or [
            t for t in ("valid_time", "t") if t in ds.dims]
        if times:
            ds = ds.rename({times[0]: "time"})
    probe = ds
    axes, coords = probe.cf.axes, probe.cf.coordinates
    if not (coords.get("latitude") or axes.get("Y")):
        probe = ds.cf.guess_coord_axis()
        axes, coords = probe.cf.axes, probe.cf.coordinates
    # 1-D latitude/longitude on other dims (lat(y), lon(x)): a regular grid under other dim names
    one_d = {k: [n for n in coords.get(k, []) if probe[n].ndim == 1 and probe[n].dims[0] != n] for k in
             ("latitude", "longitude")}
    if one_d["latitude"] and one_d["longitude"] and not (_first_dim_coord(probe, coords.get("latitude", []))):
        la, lo = one_d["latitude"][0], one_d["longitude"][0]
        if probe[la].dims != probe[lo].dims:
            probe = probe.swap_dims({probe[la].dims[0]: la, probe[lo].dims[0]: lo})
    lat_name = _first_dim_coord(probe, coords.get("latitude", []))
    lon_name = _first_dim_coord(probe, coords.get("longitude", []))
    if lat_name and lon_name:
        return _standard_latlon(probe, lat_name, lon_name)
    lat2 = _first_dim_coord(probe, coords.get("latitude", []), ndim=2)
    lon2 = _first_dim_coord(probe, coords.get("longitude", []), ndim=2)
    ydim = next((a for a in axes.get("Y", []) if a in probe.dims and a not in (lat_name, lon_name)), None)
    xdim = next((a for a in axes.get("X", []) if a in probe.dims and a not in (lat_name, lon_name)), None)
    if (ydim is None or xdim is None) and lat2 and lon2:
        ydim, xdim = probe[lat2].dims  # curvilinear: the 2-D coordinates' dims
    if ydim is None or xdim is None:
        raise DataError(
            f"{name}: cannot find the spatial coordinates among {list(ds.variables)}; accepted: 1-D "
            "latitude/longitude (standard_name latitude/longitude or units degrees_north/east), or "
            "1-D projection coordinates (axis X/Y, standard_name projection_x/y_coordinate or "
            "grid_longitude/latitude) with a grid mapping or 2-D lat/lon, or 2-D lat/lon alone"
        )
    return _standard_projected(probe, name, ydim, xdim, lat2, lon2)


def _standard_latlon(ds, lat_name, lon_name) -> xr.Dataset:
    ds = ds.rename({k: v for k, v in ((lat_name, "lat"), (lon_name, "lon")) if k != v})
    if "valid_time" in ds.coords and "time" in ds.dims and "valid_time" not in ds.dims:
        ds = ds.drop_vars("valid_time")  # GRIB: same as time for analyses
    lat = ds["lat"].values
    if lat.size > 1 and lat[0] > lat[-1]:
        ds = ds.isel(lat=slice(None, None, -1))
    ds = _regular_lon(ds)
    ds["lat"].attrs.update(units="degrees_north", standard_name="latitude", axis="Y")
    ds["lon"].attrs.update(units="degrees_east", standard_name="longitude", axis="X")
    ds["lat"].attrs.pop("bounds", None)
    ds["lon"].attrs.pop("bounds", None)
    return ds.transpose(*[d for d in ("time",) if d in ds.dims], ..., "lat", "lon")


def _standard_projected(ds, name, ydim, xdim, lat2, lon2) -> xr.Dataset:
    from pyproj import CRS

    crs, gm, how = _crs_from_file(ds, name)
    curvilinear_dims = lat2 is not None and ydim not in ds.variables
    crs, km = _km_ellipsoid(crs)
    units = str(ds[xdim].attrs.get("units", "")).strip() if xdim in ds.variables else ""
    metres = _METRES.get(units, km if not units else 1.0)
    # rename: dims -> y/x, the 2-D coordinates -> lat/lon, the grid mapping -> crs
    rename = {ydim: "y", xdim: "x"}
    if lat2:
        rename.update({lat2: "lat", lon2: "lon"})
    clash = [v for v in ("y", "x", "lat", "lon", "crs") if v in ds.variables and v not in rename and
             v not in rename.values() and v != gm]
    if clash:
        ds = ds.drop_vars(clash)  # e.g. unrelated 1-D 'lat' labels on a curvilinear grid
    ds = ds.rename({k: v for k, v in rename.items() if k != v})
    index_axes = curvilinear_dims or "y" not in ds.coords
    if index_axes:
        ds = ds.assign_coords(y=("y", np.arange(ds.sizes["y"], dtype=np.float64)),
                              x=("x", np.arange(ds.sizes["x"], dtype=np.float64)))
        metres = 1.0
    for d in ("y", "x"):
        v = ds[d].values
        if v.size > 1 and v[0] > v[-1]:
            ds = ds.isel({d: slice(None, None, -1)})
    kind = "curvilinear"
    if crs is not None:
        cf = crs.to_cf()
        kind = "rotated" if cf.get("grid_mapping_name") == "rotated_latitude_longitude" else "projected"
        if kind == "rotated":
            metres = 1.0
    have_latlon = "lat" in ds.coords and ds["lat"].ndim == 2
    if crs is None and not have_latlon:
        where = f"names grid mapping {gm!r}, which the file does not contain" if gm else "has no grid mapping"
        raise DataError(f"{name}: the grid ({ydim}, {xdim}) {where} and no 2-D latitude/longitude; "
                        "accepted: a CF grid-mapping variable, a PROJ string in the global attribute "
                        "'projection', or 2-D lat/lon coordinates")
    if crs is None and gm:
        _say_once(f"{name}: grid mapping {gm!r} is named but absent; the file's 2-D lat/lon locate the cells")
    grid_tmp = Grid(kind, ("y", "x"), (ds.sizes["y"], ds.sizes["x"]), crs, ds["y"].values, ds["x"].values,
                    np.zeros(1), np.zeros(1), metres)
    if have_latlon:
        lat, lon = (np.asarray(ds[c].transpose("y", "x").values, dtype=np.float64) for c in ("lat", "lon"))
        if crs is not None and not _agrees(grid_tmp, lat, lon):
            _say_once(f"{name}: the CRS from the {how} puts the cells more than half a cell away from the file's "
                      "2-D lat/lon; the 2-D lat/lon locate the cells and the grid mapping is not used")
            crs, kind = None, "curvilinear"
    else:
        yy, xx = np.meshgrid(ds["y"].values, ds["x"].values, indexing="ij")
        lat, lon = grid_tmp.to_latlon(yy, xx)
    lat_attrs = {"standard_name": "latitude", "units": "degrees_north", "long_name": "latitude"}
    lon_attrs = {"standard_name": "longitude", "units": "degrees_east", "long_name": "longitude"}
    ds = ds.assign_coords(lat=(("y", "x"), lat, lat_attrs), lon=(("y", "x"), _continuous_lon(lon), lon_attrs))
    if gm and gm in ds.variables:
        ds = ds.drop_vars(gm)
    if crs is not None:
        cf = crs.to_cf()
        cf = {k: v for k, v in cf.items() if v is not None}
        ds = ds.assign_coords(crs=xr.DataArray(np.int32(0), attrs=cf))
    sx = {"standard_name": "projection_x_coordinate", "axis": "X"}
    sy = {"standard_name": "projection_y_coordinate", "axis": "Y"}
    if kind == "rotated":
        sx, sy = {"standard_name": "grid_longitude", "axis": "X"}, {"standard_name": "grid_latitude", "axis": "Y"}
    elif kind == "curvilinear" and index_axes:
        sx, sy = {"long_name": "cell index along x", "axis": "X"}, {"long_name": "cell index along y", "axis": "Y"}
    elif kind == "curvilinear":
        sx, sy = {"axis": "X"}, {"axis": "Y"}
    for d, extra in (("x", sx), ("y", sy)):
        ds[d].attrs.update(extra)
        ds[d].attrs.pop("bounds", None)
        if kind == "projected":  # describe() reads the scale from the units
            ds[d].attrs["units"] = "km" if metres == 1000.0 else "m"
    for v in ds.data_vars.values():
        v.attrs.pop("coordinates", None)
        v.attrs.pop("grid_mapping", None)
        v.encoding.pop("coordinates", None)
        v.encoding.pop("grid_mapping", None)
        if crs is not None and {"y", "x"} <= set(v.dims):
            v.attrs["grid_mapping"] = "crs"
    if "valid_time" in ds.coords and "time" in ds.dims and "valid_time" not in ds.dims:
        ds = ds.drop_vars("valid_time")
    return ds.transpose(*[d for d in ("time",) if d in ds.dims], ..., "y", "x")
