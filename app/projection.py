"""The cartopy CRS a map is drawn in, from the data layer's grid description.

Every map is drawn in its data's own CRS (:func:`engine.data.grid.describe`): a Lambert
conformal domain looks like the regional model's own map, a rotated-pole domain is the
rectangle it is in rotated degrees, a regular grid is plain longitude/latitude. Elements given
in longitude/latitude (coastlines, markers, the picked region) carry :func:`latlon_crs` and
geoviews projects them into the map's CRS.

Imports of cartopy happen inside the functions: the server's start-up stays light
(:mod:`app.warmup` preloads them once the server is up).
"""

from __future__ import annotations

import functools

import numpy as np

#: Margin around a projected domain (fraction of its span) inside the projection's bounds, so
#: coastlines just outside the domain are still drawn, not cut at its edge.
_MARGIN = 0.5


@functools.lru_cache(maxsize=1)
def _latlon_class():
    import cartopy.crs as ccrs

    class LatLon(ccrs.PlateCarree):
        """PlateCarree whose ``proj4_params`` names ``lon_0``.

        Cartopy 0.26 writes PlateCarree as ``proj=latlong`` without ``lon_0``; geoviews 1.15
        reads ``proj4_params["lon_0"]`` when it projects a path or extents out of PlateCarree
        (KeyError: holoviz/geoviews#884, fixed after 1.15.1). The CRS itself is unchanged.
        """

        @property
        def proj4_params(self):
            params = dict(super().proj4_params)
            params.setdefault("lon_0", float(params.get("pm", 0.0)))
            return params

    return LatLon


def latlon_crs():
    """Longitude/latitude in degrees (PlateCarree), the CRS of coastlines, markers and regions."""
    return _latlon_class()()


@functools.lru_cache(maxsize=1)
def _native_class():
    import cartopy.crs as ccrs

    class Native(ccrs.Projection):
        """Any projected pyproj CRS as a cartopy projection, bounded around the domain.

        ``cartopy.crs.Projection(pyproj_crs)`` has no bounds for a CRS without an area of use
        (a model's own Lambert or stereographic grid), and geoviews needs them to clip and to
        set the axes' limits.
        """

        def __init__(self, crs, bounds):
            super().__init__(crs)
            self.bounds = tuple(float(b) for b in bounds)

        @property
        def boundary(self):
            import shapely.geometry as sgeom

            x0, x1, y0, y1 = self.bounds
            return sgeom.LinearRing([(x0, y0), (x0, y1), (x1, y1), (x1, y0), (x0, y0)])

        @property
        def x_limits(self):
            return self.bounds[:2]

        @property
        def y_limits(self):
            return self.bounds[2:]

        @property
        def threshold(self):
            return 1e-3 * max(self.bounds[1] - self.bounds[0], self.bounds[3] - self.bounds[2])

    return Native


def grid_of(obj):
    """The :class:`engine.data.grid.Grid` of a standardised Dataset or DataArray."""
    from engine.data.grid import describe

    return describe(obj)


def native_xy(grid) -> tuple[np.ndarray, np.ndarray]:
    """1-D ``x`` and ``y`` of the grid in its CRS's own units (metres for a projection given in km,
    degrees for lat/lon and rotated grids)."""
    return grid.x * grid.metres_per_unit, grid.y * grid.metres_per_unit


def _rotated(crs):
    import cartopy.crs as ccrs

    cf = crs.to_cf()
    ellipsoid = crs.ellipsoid
    globe = ccrs.Globe(semimajor_axis=ellipsoid.semi_major_metre, semiminor_axis=ellipsoid.semi_minor_metre,
                       ellipse=None)
    return ccrs.RotatedPole(pole_longitude=float(cf["grid_north_pole_longitude"]),
                            pole_latitude=float(cf["grid_north_pole_latitude"]),
                            central_rotated_longitude=float(cf.get("north_pole_grid_longitude", 0.0)),
                            globe=globe)


def map_crs(grid):
    """The cartopy CRS of a grid's native ``x``/``y`` (a :class:`engine.data.grid.Grid`).

    ``latlon`` and ``curvilinear`` grids (the latter drawn from their 2-D lon/lat) are in
    longitude/latitude; ``rotated`` is a ``cartopy.crs.RotatedPole`` with the file's pole;
    ``projected`` is the file's pyproj CRS itself, bounded around the domain.
    """
    if grid.kind in ("latlon", "curvilinear"):
        return latlon_crs()
    if grid.kind == "rotated":
        return _rotated(grid.crs)
    if grid.kind == "projected":
        x, y = native_xy(grid)
        dx, dy = (float(np.ptp(x)) or 1.0) * _MARGIN, (float(np.ptp(y)) or 1.0) * _MARGIN
        bounds = (x.min() - dx, x.max() + dx, y.min() - dy, y.max() + dy)
        return _native_class()(grid.crs, bounds)
    raise ValueError(f"unknown grid kind {grid.kind!r}; accepted: latlon, rotated, projected, curvilinear")


def to_latlon(crs, x, y) -> tuple[np.ndarray, np.ndarray]:
    """(lat, lon) in degrees of points given in the map CRS ``crs`` (a tap, a box's corners)."""
    import cartopy.crs as ccrs

    x, y = np.atleast_1d(np.asarray(x, dtype=float)), np.atleast_1d(np.asarray(y, dtype=float))
    if isinstance(crs, ccrs.PlateCarree):  # already lon/lat: keep a domain's 170..190 as it is
        return y, x
    pts = latlon_crs().transform_points(crs, x, y)
    return pts[:, 1], pts[:, 0]


def bounds_to_latlon(crs, bounds) -> tuple[float, float, float, float] | None:
    """A box ``(x0, y0, x1, y1)`` drawn on a map in ``crs`` as the lon/lat box around it,
    ``(lon0, lat0, lon1, lat1)`` (its edges sampled, since a projected box is curved in lon/lat)."""
    if bounds is None:
        return None
    x0, y0, x1, y1 = (float(b) for b in bounds)
    t = np.linspace(0.0, 1.0, 17)
    xs = np.concatenate([x0 + (x1 - x0) * t, np.full_like(t, x1), x1 - (x1 - x0) * t, np.full_like(t, x0)])
    ys = np.concatenate([np.full_like(t, y0), y0 + (y1 - y0) * t, np.full_like(t, y1), y1 - (y1 - y0) * t])
    lat, lon = to_latlon(crs, xs, ys)
    ok = np.isfinite(lat) & np.isfinite(lon)
    if not ok.any():
        return None
    return float(lon[ok].min()), float(lat[ok].min()), float(lon[ok].max()), float(lat[ok].max())
