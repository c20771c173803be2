"""Synthetic data factories: small CF datasets with the quirks of real archives.

Tests, benchmarks, the README and notebooks use these to build files shaped like the data climate
scientists have: CORDEX rotated-pole output, Lambert-conformal RCM / CERRA grids (with or without
the grid-mapping variable they name), polar stereographic radar composites, regular lat/lon grids
stored descending, in 0..360, across the date line or Greenwich, global; non-standard calendars;
odd units; packed int16; a pressure-level dimension.

Every field is :func:`analytic` of the cell's **true** latitude/longitude and of time, so a test
can check that coordinates, pairing and regridding picked the right cells by comparing against
the formula evaluated on independently computed coordinates.

Each factory returns an in-memory :class:`xarray.Dataset` with CF attributes and, for packed
data, the packing in ``encoding``; :func:`write` stores it as NetCDF, where the encoding is applied
(so the file holds int16 with ``scale_factor``/``add_offset``/``_FillValue``).

Example
-------
>>> ds = rotated_pole(ny=12, nx=16, ntime=3, calendar="noleap")
>>> ds.tas.dims, ds.tas.attrs["grid_mapping"]
(('time', 'rlat', 'rlon'), 'rotated_pole')
>>> ds = regular(lat=(-10, 10), lon=(170, 190), lon_convention="-180..180")  # split at the date line
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from engine.data.errors import DataError

CALENDARS = ("standard", "gregorian", "proleptic_gregorian", "noleap", "365_day", "all_leap", "366_day", "360_day")
LEVELS = (850, 700, 500, 300)

_VARIABLES = {
    # name: (standard_name, long_name, canonical units)
    "tas": ("air_temperature", "near-surface air temperature", "K"),
    "tasmax": ("air_temperature", "daily maximum near-surface air temperature", "K"),
    "ta": ("air_temperature", "air temperature", "K"),
    "pr": ("precipitation_flux", "precipitation", "mm day-1"),
}
# unit -> (factor, offset) from the canonical unit: value = canonical * factor + offset
_UNITS = {
    "K": (1.0, 0.0),
    "degC": (1.0, -273.15),
    "mm day-1": (1.0, 0.0),
    "mm/day": (1.0, 0.0),
    "kg m-2 s-1": (1.0 / 86400.0, 0.0),
}


def analytic(lat, lon, t=0.0, variable: str = "tas", level: float | None = None) -> np.ndarray:
    """The synthetic field at true positions, in canonical units (K, or mm/day for ``pr``).

    Smooth on the sphere (continuous across the date line), with large-scale structure (tens of
    degrees, tens of K) plus a 1 K ripple of 4 x 5 degrees, so that a wrong cell (a shifted,
    mirrored or mis-projected grid) shows up clearly while bilinear interpolation of a 0.1-0.5
    degree grid stays accurate to a few hundredths of a kelvin.

    Parameters
    ----------
    lat, lon : array-like, degrees (any longitude convention; broadcast together).
    t : array-like, days since the first time step (broadcast against ``lat``: pass ``t[:, None, None]``).
    variable : ``"pr"`` gives a non-negative precipitation-like field; anything else temperature.
    level : pressure in hPa; colder aloft (about 6.5 K per 100 hPa below 1000 hPa).
    """
    la = np.deg2rad(np.asarray(lat, dtype=np.float64))
    lo = np.deg2rad(np.asarray(lon, dtype=np.float64))
    t = np.asarray(t, dtype=np.float64)
    season = np.sin(2 * np.pi * t / 365.0)
    base = (
        250.0
        + 40.0 * np.cos(la)
        + 6.0 * np.sin(3 * la) * np.cos(2 * lo)
        + 4.0 * np.cos(la) * np.sin(3 * lo + 0.5)
        + 5.0 * season * np.sin(la)
        + 0.3 * np.cos(2 * np.pi * t / 7.0) * np.cos(lo)
        # a 4 x 5 degree ripple: shows a grid shifted by one 0.1-degree cell; 360 / 5 is whole, so
        # it stays continuous across the date line
        + 1.0 * np.sin(2 * np.pi * np.rad2deg(la) / 4.0) * np.cos(2 * np.pi * np.rad2deg(lo) / 5.0)
    )
    if variable == "pr":
        ripple = np.sin(2 * np.pi * np.rad2deg(la) / 4.0) * np.cos(2 * np.pi * np.rad2deg(lo) / 5.0)
        return np.maximum(
            0.0, 3.0 + 3.0 * np.sin(2 * la + 1.0) * np.cos(3 * lo) + 1.5 * season * np.cos(lo) + 1.0 * ripple
        )
    if level is not None:
        base = base - 0.065 * (1000.0 - float(level))
    return base


# -- time ----------------------------------------------------------------------------------------
def time_axis(ntime: int, start: str = "2000-01-01", freq: str = "D", calendar: str = "standard") -> xr.DataArray:
    """``ntime`` time stamps from ``start`` every ``freq`` in ``calendar`` (cftime objects unless
    the calendar is standard/gregorian/proleptic_gregorian, which give numpy datetime64)."""
    if calendar not in CALENDARS:
        raise DataError(f"calendar {calendar!r} is not supported; accepted: {', '.join(CALENDARS)}")
    use_cftime = calendar not in ("standard", "gregorian", "proleptic_gregorian")
    times = xr.date_range(start, periods=ntime, freq=freq, calendar=calendar, use_cftime=use_cftime)
    da = xr.DataArray(np.asarray(times), dims="time", name="time", attrs={"standard_name": "time", "axis": "T"})
    da.encoding.update(units="days since 1950-01-01", calendar=calendar)
    return da


def _elapsed_days(times: xr.DataArray) -> np.ndarray:
    """Days since the first stamp, in the data's own calendar."""
    import cftime

    values = times.values
    if np.issubdtype(values.dtype, np.datetime64):
        return (values - values[0]) / np.timedelta64(1, "D")
    cal = values[0].calendar
    return np.asarray(cftime.date2num(values, "days since 1900-01-01", calendar=cal), dtype=np.float64) - float(
        cftime.date2num(values[0], "days since 1900-01-01", calendar=cal)
    )


# -- assembling a dataset ------------------------------------------------------------------------
def _finish(
    coords: dict,
    dims: tuple[str, str],
    lat2d: np.ndarray,
    lon2d: np.ndarray,
    *,
    variable: str,
    units: str | None,
    ntime: int,
    start: str,
    freq: str,
    calendar: str,
    levels,
    packed: bool,
    grid_mapping: xr.DataArray | None,
    grid_mapping_name: str | None,
    attrs: dict | None = None,
    dtype=np.float32,
) -> xr.Dataset:
    if variable not in _VARIABLES:
        raise DataError(f"synthetic variable {variable!r} is not known; accepted: {', '.join(_VARIABLES)}")
    std, long_name, canon = _VARIABLES[variable]
    unit_key = units if units else canon  # "" (no units attribute) stores canonical values
    if unit_key not in _UNITS:
        raise DataError(f"synthetic units {units!r} are not known; accepted: {', '.join(_UNITS)}")
    # precipitation and temperature units must not be mixed
    if (canon == "K") != (unit_key in ("K", "degC")):
        raise DataError(f"units {units!r} do not fit variable {variable!r} (canonical {canon!r})")
    factor, offset = _UNITS[unit_key]
    time = time_axis(ntime, start, freq, calendar)
    t = _elapsed_days(time)[:, None, None]
    if levels:
        values = np.stack([analytic(lat2d, lon2d, t, variable, level=p) for p in levels], axis=1)
        vdims = ("time", "plev", *dims)
    else:
        values = analytic(lat2d, lon2d, t, variable)
        vdims = ("time", *dims)
    values = (values * factor + offset).astype(dtype)
    vattrs = {"standard_name": std, "long_name": long_name}
    if units != "":
        vattrs["units"] = unit_key
    if grid_mapping_name:
        vattrs["grid_mapping"] = grid_mapping_name
    all_coords = dict(coords)
    all_coords["time"] = time
    if levels:
        all_coords["plev"] = (
            "plev",
            np.asarray(levels, dtype=np.float64),
            {"standard_name": "air_pressure", "units": "hPa", "axis": "Z", "positive": "down"},
        )
    da = xr.DataArray(values, dims=vdims, coords=all_coords, attrs=vattrs, name=variable)
    if packed:
        lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
        scale = (hi - lo) / 60000.0 if hi > lo else 1.0
        da.encoding.update(
            dtype="int16", scale_factor=scale, add_offset=(hi + lo) / 2.0, _FillValue=np.int16(-32767)
        )
    ds = da.to_dataset()
    ds.time.encoding.update(time.encoding)
    if grid_mapping is not None and grid_mapping_name:
        ds[grid_mapping_name] = grid_mapping
    ds.attrs.update({"Conventions": "CF-1.8", "source": "finescale synthetic (engine.data.synthetic)"})
    ds.attrs.update(attrs or {})
    return ds


def _latlon_attrs(axis: bool) -> tuple[dict, dict]:
    lat = {"standard_name": "latitude", "long_name": "latitude", "units": "degrees_north"}
    lon = {"standard_name": "longitude", "long_name": "longitude", "units": "degrees_east"}
    if axis:
        lat["axis"], lon["axis"] = "Y", "X"
    return lat, lon


def _common(kw):
    keys = ("variable", "units", "ntime", "start", "freq", "calendar", "levels", "packed")
    return {k: kw[k] for k in keys}


# -- regular lat/lon -----------------------------------------------------------------------------
def regular(
    lat: tuple[float, float] = (40.0, 50.0),
    lon: tuple[float, float] = (0.0, 20.0),
    res: float = 0.5,
    *,
    descending: bool = False,
    lon_convention: str | None = None,
    global_grid: bool = False,
    names: tuple[str, str] = ("lat", "lon"),
    variable: str = "tas",
    units: str | None = None,
    ntime: int = 10,
    start: str = "2000-01-01",
    freq: str = "D",
    calendar: str = "standard",
    levels=None,
    packed: bool = False,
) -> xr.Dataset:
    """A regular latitude/longitude grid of cell centres ``lat[0] + res/2 ... lat[1] - res/2``.

    Parameters
    ----------
    lat, lon : the box's outer edges in degrees; ``lon`` may run past 180 (e.g. ``(170, 190)``
        across the date line) or below 0 (``(-10, 10)`` across Greenwich).
    descending : store latitude north to south (ERA5 style).
    lon_convention : ``"0..360"`` or ``"-180..180"``: wrap longitudes into that range and sort them
        ascending, as a file cut from a global archive is (a box across the seam of the convention
        is then stored in two pieces, e.g. 0..10 then 350..360); None keeps them as given.
    global_grid : the whole globe (``lat``/``lon`` ignored), longitudes 0..360.
    names : names of the latitude and longitude dimensions (e.g. ``("latitude", "longitude")``).
    variable, units, ntime, start, freq, calendar, levels, packed : see :func:`rotated_pole`.
    """
    if global_grid:
        lat, lon = (-90.0, 90.0), (0.0, 360.0)
        lon_convention = lon_convention or "0..360"
    la = np.arange(lat[0] + res / 2, lat[1] - res / 4, res)
    lo = np.arange(lon[0] + res / 2, lon[1] - res / 4, res)
    if la.size == 0 or lo.size == 0:
        raise DataError(f"the box lat={lat}, lon={lon} holds no cell at res={res}")
    if lon_convention == "0..360":
        lo = np.sort(np.mod(lo, 360.0))
    elif lon_convention == "-180..180":
        lo = np.sort((lo + 180.0) % 360.0 - 180.0)
    elif lon_convention is not None:
        raise DataError(f"lon_convention={lon_convention!r} is not valid; accepted: '0..360', '-180..180', None")
    if descending:
        la = la[::-1]
    lat2d, lon2d = np.meshgrid(la, lo, indexing="ij")
    alat, alon = _latlon_attrs(axis=True)
    coords = {names[0]: (names[0], la, alat), names[1]: (names[1], lo, alon)}
    return _finish(
        coords, names, lat2d, lon2d, grid_mapping=None, grid_mapping_name=None, **_common(locals())
    )


# -- rotated pole --------------------------------------------------------------------------------
def _transform_to_latlon(crs, x2d, y2d):
    from pyproj import CRS, Transformer

    tr = Transformer.from_crs(crs, CRS.from_epsg(4326), always_xy=True)
    lon2d, lat2d = tr.transform(x2d, y2d)
    return np.asarray(lat2d), np.asarray(lon2d)


def _transform_from_latlon(crs, lat, lon):
    from pyproj import CRS, Transformer

    tr = Transformer.from_crs(CRS.from_epsg(4326), crs, always_xy=True)
    x, y = tr.transform(lon, lat)
    return float(x), float(y)


def rotated_pole(
    ny: int = 40,
    nx: int = 48,
    res: float = 0.11,
    *,
    centre: tuple[float, float] = (46.5, 10.5),
    pole: tuple[float, float] = (39.25, -162.0),
    variable: str = "tas",
    units: str | None = None,
    ntime: int = 10,
    start: str = "2000-01-01",
    freq: str = "D",
    calendar: str = "standard",
    levels=None,
    packed: bool = False,
    latlon: bool = True,
) -> xr.Dataset:
    """A CORDEX-like rotated-pole grid (EUR-11's pole by default), centred on the Alps.

    Dims ``(time, rlat, rlon)`` in rotated degrees (``grid_latitude``/``grid_longitude``), a
    ``rotated_pole`` grid-mapping variable (``rotated_latitude_longitude``) and, with ``latlon``,
    2-D ``lat``/``lon`` auxiliary coordinates as CORDEX files carry.

    Parameters
    ----------
    ny, nx : grid size; res : spacing in rotated degrees; centre : (lat, lon) of the box centre.
    pole : (grid_north_pole_latitude, grid_north_pole_longitude).
    variable : ``tas``, ``tasmax``, ``ta`` or ``pr``; units : e.g. ``"degC"``, ``"kg m-2 s-1"``
        (None: canonical K or mm day-1; ``""`` drops the attribute).
    ntime, start, freq, calendar : the time axis (any cftime calendar).
    levels : pressure levels in hPa (e.g. :data:`LEVELS`) for a ``plev`` dimension.
    packed : store as int16 with scale_factor/add_offset/_FillValue when written.
    latlon : include the 2-D lat/lon (False: only the grid mapping tells where cells are).
    """
    from pyproj import CRS

    gm_attrs = {
        "grid_mapping_name": "rotated_latitude_longitude",
        "grid_north_pole_latitude": float(pole[0]),
        "grid_north_pole_longitude": float(pole[1]),
        "north_pole_grid_longitude": 0.0,
    }
    crs = CRS.from_cf(gm_attrs)
    rx0, ry0 = _transform_from_latlon(crs, centre[0], centre[1])
    rlat = ry0 + (np.arange(ny) - (ny - 1) / 2) * res
    rlon = rx0 + (np.arange(nx) - (nx - 1) / 2) * res
    x2d, y2d = np.meshgrid(rlon, rlat)
    lat2d, lon2d = _transform_to_latlon(crs, x2d, y2d)
    coords = {
        "rlat": ("rlat", rlat, {"standard_name": "grid_latitude", "units": "degrees", "axis": "Y", "long_name": "latitude in rotated pole grid"}),
        "rlon": ("rlon", rlon, {"standard_name": "grid_longitude", "units": "degrees", "axis": "X", "long_name": "longitude in rotated pole grid"}),
    }
    if latlon:
        alat, alon = _latlon_attrs(axis=False)
        coords["lat"] = (("rlat", "rlon"), lat2d, alat)
        coords["lon"] = (("rlat", "rlon"), lon2d, alon)
    gm = xr.DataArray(np.int32(0), attrs=gm_attrs)
    ds = _finish(
        coords, ("rlat", "rlon"), lat2d, lon2d, grid_mapping=gm, grid_mapping_name="rotated_pole", **_common(locals())
    )
    if latlon:
        ds[variable].attrs["coordinates"] = "lat lon"
    return ds


# -- projected grids -----------------------------------------------------------------------------
def _projected(
    gm_attrs: dict,
    ny: int,
    nx: int,
    dx_km: float,
    centre,
    xy_units: str,
    grid_mapping: str,
    kw: dict,
    gm_name: str,
) -> xr.Dataset:
    from pyproj import CRS

    crs = CRS.from_cf(gm_attrs)
    cx, cy = _transform_from_latlon(crs, centre[0], centre[1])
    dx = dx_km * 1000.0
    # snap the grid origin to a multiple of the spacing, as RCM grids are
    x = np.round(cx / dx) * dx + (np.arange(nx) - (nx - 1) / 2) * dx
    y = np.round(cy / dx) * dx + (np.arange(ny) - (ny - 1) / 2) * dx
    x2d, y2d = np.meshgrid(x, y)
    lat2d, lon2d = _transform_to_latlon(crs, x2d, y2d)
    factor = {"m": 1.0, "km": 1e-3}.get(xy_units)
    if factor is None:
        raise DataError(f"xy_units={xy_units!r} is not valid; accepted: 'm', 'km'")
    alat, alon = _latlon_attrs(axis=False)
    coords = {
        "y": ("y", y * factor, {"standard_name": "projection_y_coordinate", "units": xy_units, "axis": "Y"}),
        "x": ("x", x * factor, {"standard_name": "projection_x_coordinate", "units": xy_units, "axis": "X"}),
        "lat": (("y", "x"), lat2d, alat),
        "lon": (("y", "x"), lon2d, alon),
    }
    if grid_mapping not in ("present", "missing", "attribute"):
        raise DataError(f"grid_mapping={grid_mapping!r} is not valid; accepted: 'present', 'missing', 'attribute'")
    name = gm_name if grid_mapping != "attribute" else None
    gm = xr.DataArray(np.int32(0), attrs=gm_attrs) if grid_mapping == "present" else None
    attrs = {}
    if grid_mapping == "attribute":
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "may lose information": not for these CRSs
            attrs["projection"] = crs.to_proj4()
    ds = _finish(coords, ("y", "x"), lat2d, lon2d, grid_mapping=gm, grid_mapping_name=name, attrs=attrs, **kw)
    ds[kw["variable"]].attrs["coordinates"] = "lat lon"
    return ds


def lambert(
    ny: int = 32,
    nx: int = 32,
    dx_km: float = 12.5,
    *,
    centre: tuple[float, float] = (46.0, 11.0),
    standard_parallel: tuple[float, float] = (46.0, 46.0),
    lon0: float = 10.5,
    lat0: float = 46.0,
    false_easting: float = 2_800_000.0,
    false_northing: float = 2_200_000.0,
    xy_units: str = "km",
    grid_mapping: str = "present",
    variable: str = "tas",
    units: str | None = None,
    ntime: int = 10,
    start: str = "2000-01-01",
    freq: str = "D",
    calendar: str = "standard",
    levels=None,
    packed: bool = False,
) -> xr.Dataset:
    """A Lambert-conformal RCM grid like the CORDEX ML-Bench ALPS / Aladin grid: ``(time, y, x)``
    with ``x``/``y`` in km (positive, through false easting/northing) and 2-D ``lat``/``lon``.

    ``grid_mapping``: ``"present"`` (a ``lambert_conformal_conic`` variable), ``"missing"``
    (named by the data variable but absent, as in the ML-Bench templates) or ``"attribute"``
    (a PROJ string in the global attribute ``projection``).
    """
    gm_attrs = {
        "grid_mapping_name": "lambert_conformal_conic",
        "standard_parallel": [float(v) for v in standard_parallel],
        "longitude_of_central_meridian": float(lon0),
        "latitude_of_projection_origin": float(lat0),
        "false_easting": float(false_easting),
        "false_northing": float(false_northing),
        "earth_radius": 6371229.0,
    }
    kw = _common(locals())
    return _projected(gm_attrs, ny, nx, dx_km, centre, xy_units, grid_mapping, kw, "Lambert_Conformal")


def polar_stereographic(
    ny: int = 40,
    nx: int = 36,
    dx_km: float = 5.0,
    *,
    centre: tuple[float, float] = (52.2, 5.3),
    lon0: float = 0.0,
    standard_parallel: float = 60.0,
    xy_units: str = "km",
    grid_mapping: str = "present",
    variable: str = "pr",
    units: str | None = None,
    ntime: int = 10,
    start: str = "2000-01-01",
    freq: str = "D",
    calendar: str = "standard",
    levels=None,
    packed: bool = False,
) -> xr.Dataset:
    """A north polar stereographic grid like the KNMI radar composite (over the Netherlands by
    default). ``grid_mapping`` as for :func:`lambert` (``"attribute"`` gives the radar file's
    layout: a PROJ string in the global attribute ``projection``)."""
    gm_attrs = {
        "grid_mapping_name": "polar_stereographic",
        "straight_vertical_longitude_from_pole": float(lon0),
        "latitude_of_projection_origin": 90.0,
        "standard_parallel": float(standard_parallel),
        "false_easting": 0.0,
        "false_northing": 0.0,
        "semi_major_axis": 6378137.0,
        "semi_minor_axis": 6356752.0,
    }
    kw = _common(locals())
    return _projected(gm_attrs, ny, nx, dx_km, centre, xy_units, grid_mapping, kw, "polar_stereographic")


def mercator(
    ny: int = 32,
    nx: int = 32,
    dx_km: float = 25.0,
    *,
    centre: tuple[float, float] = (-5.0, 115.0),
    lon0: float = 115.0,
    xy_units: str = "m",
    grid_mapping: str = "present",
    variable: str = "tas",
    units: str | None = None,
    ntime: int = 10,
    start: str = "2000-01-01",
    freq: str = "D",
    calendar: str = "standard",
    levels=None,
    packed: bool = False,
) -> xr.Dataset:
    """A Mercator grid (tropical RCM style, Indonesia by default), x/y in metres."""
    gm_attrs = {
        "grid_mapping_name": "mercator",
        "longitude_of_projection_origin": float(lon0),
        "standard_parallel": 0.0,
        "false_easting": 0.0,
        "false_northing": 0.0,
        "earth_radius": 6371229.0,
    }
    kw = _common(locals())
    return _projected(gm_attrs, ny, nx, dx_km, centre, xy_units, grid_mapping, kw, "mercator")


def write(ds: xr.Dataset, path) -> Path:
    """Write ``ds`` as NetCDF4 (packing and time encoding from ``encoding`` applied) -> path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(path, engine="netcdf4")
    return path
