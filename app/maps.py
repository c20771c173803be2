"""Map building blocks shared by the views: geoviews maps in the data's own CRS (rotated pole,
Lambert, polar stereographic, lat/lon: :mod:`app.projection`), offline coastlines, colour limits.

Elements given in longitude/latitude (coastlines, the picked point, the region box) carry a
PlateCarree CRS and geoviews projects them into the map's CRS; taps and drawn boxes come back in
the map's CRS and :func:`tap_latlon` / :func:`app.projection.bounds_to_latlon` turn them into
latitude/longitude.

Coastlines are drawn offline: they are the 0.5 contour of the real land mask on the map's grid
(:func:`engine.data.static.static_fields`), so no cartopy shapefile or map tile is ever
downloaded (online map tiles are an opt-in, :func:`tile_layer`, fetched by the browser only).
Large grids are rasterized on the server (datashader) so that the browser only ever
receives about as many pixels as it shows.

Views give their map panes ``linked_axes=False``: Panel otherwise links the axes of every
HoloViews pane with the same dimensions in a page, so one tab's domain (the dataset's) would
set the ranges of another's (a run's, a sub-domain's). Maps inside one view stay linked
through the holoviews Layout (``shared_axes``, True by default for a Layout).

Map updates are cheap when options are set once: views never call ``.opts`` on a Layout or a
DynamicMap of maps (holoviews then re-applies those options to every frame of every map, a
clone of each element per update, about half of an update's Python), and a DynamicMap's
frames come from :class:`MapFrames` (options set on the first frame only).
"""

from __future__ import annotations

import logging
import threading

import numpy as np

log = logging.getLogger(__name__)

#: Above this many pixels a map is rasterized by datashader on the server (aggregated to the
#: screen's resolution) instead of sending every pixel to the browser.
RASTERIZE_ABOVE = 300_000

_LAND_MASKS: dict[tuple, object] = {}
_LAND_LOCK = threading.Lock()
_COASTS: dict[int, tuple] = {}  # id(land mask) -> (the mask, its coastline element)


def kdims():
    """Longitude and latitude key dimensions, named the same in every map so axes link."""
    import holoviews as hv

    return [hv.Dimension("lon", label="Longitude", unit="°E"), hv.Dimension("lat", label="Latitude", unit="°N")]


def _regular(values: np.ndarray) -> bool:
    if values.size < 3:
        return True
    step = np.diff(values)
    return bool(np.allclose(step, step[0], rtol=1e-3, atol=0))


def _geo():
    """geoviews with its bokeh plotting loaded (imported lazily: app.warmup preloads it)."""
    import geoviews as gv
    import geoviews.plotting.bokeh  # noqa: F401  (.opts(projection=...) needs the geo plots)
    import holoviews.plotting.bokeh  # noqa: F401

    return gv


def map_element(da, title: str, value_name: str, units: str = "", group: str | None = None, **opts):
    """A geoviews ``Image`` (regular in its CRS) or ``QuadMesh`` of a 2-D field, in the data's CRS.

    The map is drawn in the data's own CRS (:func:`app.projection.map_crs`): a rotated-pole or
    Lambert grid as the rectangle it is in its native ``x``/``y``, a lat/lon grid in
    longitude/latitude, a curvilinear grid (no CRS) from its 2-D longitude/latitude. The hover
    shows the value with its units and, on rotated and projected grids, each cell's latitude
    and longitude (extra value dimensions).

    Parameters
    ----------
    da : xarray.DataArray
        2-D field on a standardised grid (``(lat, lon)`` or ``(y, x)``); NaN where masked.
    title : str
        Plot title (it may change from frame to frame: the date of the shown time).
    group : str, optional
        The element's group, so that options never leak between maps (default: from the
        title). A DynamicMap whose title changes per frame must give a fixed group: a new group
        per frame makes holoviews rebuild the overlay and drop its other layers (coastlines).
    value_name : str
        Name of the value dimension (the colour bar's label).
    units : str
        Units shown on the colour bar.
    **opts
        Plot and style options of this element (cmap, clim, ...).

    Example
    -------
    >>> map_element(ds.truth.isel(time=0), "Truth", "t2m", "K", cmap="RdYlBu_r")   # doctest: +SKIP
    """
    import holoviews as hv

    from .projection import grid_of, map_crs

    gv = _geo()
    vdim = hv.Dimension(value_name, label=value_name, unit=units or None)
    group = "".join(c for c in (group or title).title() if c.isalnum()) or "Map"
    grid = grid_of(da)
    crs = map_crs(grid)
    kind, coords, extra_values, dims = _layout(grid)
    values = _map_values(da, grid)
    extra = [hv.Dimension("cell_lat", label="Latitude", unit="°N"),
             hv.Dimension("cell_lon", label="Longitude", unit="°E")] if extra_values else []
    element = getattr(gv, kind)((*coords, values, *extra_values), kdims=dims, vdims=[vdim, *extra], group=group,
                                crs=crs)
    # Options keyed by type and group: a Layout's options (shared_axes) merge its maps' option
    # trees into one, where options keyed by the type alone would all become the last map's.
    # Tools stay keyed by type, so that a view's later .opts(tools=...) on the map replaces them.
    tools = {k: opts.pop(k) for k in ("tools", "active_tools") if k in opts}
    element = element.opts(**tools) if tools else element
    # The plot's projection is the data's CRS unless the caller draws in another (Web Mercator
    # under map tiles: see tile_layer).
    return element.opts({f"{type(element).__name__}.{group}": dict(title=title, **{"projection": crs, **opts})})


class MapFrames:
    """The frames of one map of a ``DynamicMap``: options set once, each frame only new data.

    A map's frames differ only in their values and the date in the title, yet
    :func:`map_element` builds each one from scratch: the grid's layout and CRS, all its
    options again (two ``.opts`` calls). Here the first frame is built with
    :func:`map_element`; every later frame on the same grid is a clone of it (same type, group
    and label, hence the same overlay layer: a new label or group per frame would make
    holoviews add a layer and hide the old one) with the new values and only its title set.

    Parameters
    ----------
    value_name, units, group, **opts
        As for :func:`map_element` (``group`` is required: it must not change between frames).

    Example
    -------
    >>> frames = MapFrames("t2m", "K", group="Truth", cmap="viridis")            # doctest: +SKIP
    >>> hv.DynamicMap(lambda t: frames(field(t), dated("Truth", t)), streams=...)  # doctest: +SKIP
    """

    def __init__(self, value_name: str, units: str = "", group: str = "Map", **opts):
        if not group:
            raise ValueError("MapFrames needs a fixed group (the overlay layer of the map); got an empty one")
        self.value_name, self.units, self.group, self.opts = value_name, units, group, opts
        self._template = None
        self._grid_key = None
        self._lock = threading.Lock()  # frames of one session may be asked for from two threads

    def __call__(self, da, title: str):
        """The frame of the 2-D field ``da`` titled ``title``."""
        from .projection import grid_of

        grid = grid_of(da)
        # Same grid (shape, kind and corner coordinates): the template's options and layout hold.
        corners = [float(np.ravel(c)[i]) for c in (grid.x, grid.y) for i in (0, -1)]
        key = (grid.kind, tuple(grid.shape), *corners)
        with self._lock:
            if self._template is None or key != self._grid_key:
                self._template = map_element(da, title, self.value_name, self.units, group=self.group,
                                             **self.opts)
                self._spec = f"{type(self._template).__name__}.{self._template.group}"
                self._layout = _layout(grid)
                self._grid_key = key
            template, spec, (_, coords, extra_values, _) = self._template, self._spec, self._layout
        values = _map_values(da, grid)
        return template.clone(data=(*coords, values, *extra_values)).opts({spec: dict(title=title)})


def _map_values(da, grid) -> np.ndarray:
    """A field's values for a map: float32 unless the data is float64 (no precision is added by
    float64 to float32 or integer data, and the browser then receives half the bytes on every
    time step; colour limits and hover values are unchanged)."""
    values = np.asarray(da.transpose(*grid.dims).values)
    return values.astype(np.result_type(values.dtype, np.float32), copy=False)


def _layout(grid):
    """How a field on ``grid`` becomes an element: ``(element type name, coordinates, extra
    value arrays (each cell's lat/lon on rotated and projected grids), key dimensions)``."""
    if grid.kind == "latlon":
        lat, lon = grid.y, grid.x
        return ("Image" if _regular(lat) and _regular(lon) else "QuadMesh"), (lon, lat), (), kdims()
    if grid.kind == "curvilinear":
        # No CRS: every cell drawn where it is from its 2-D longitude/latitude.
        return "QuadMesh", (grid.lon, grid.lat), (), kdims()
    from .projection import native_xy

    x, y = native_xy(grid)
    return ("Image" if _regular(x) and _regular(y) else "QuadMesh"), (x, y), (grid.lat, grid.lon), native_kdims(grid)


def native_kdims(grid):
    """Key dimensions of a rotated or projected map: ``x``/``y`` in the CRS's units."""
    import holoviews as hv

    unit = "°" if grid.kind == "rotated" else "m"
    return [hv.Dimension("x", label="x", unit=unit), hv.Dimension("y", label="y", unit=unit)]


def map_crs_of(da):
    """The cartopy CRS the maps of ``da`` are drawn in (:func:`app.projection.map_crs`)."""
    from .projection import grid_of, map_crs

    return map_crs(grid_of(da))


def tap_latlon(da, x, y) -> tuple[float, float]:
    """``(lat, lon)`` of a tap at ``x``, ``y`` on a map of ``da`` (taps come in the map's CRS)."""
    from .projection import to_latlon

    lat, lon = to_latlon(map_crs_of(da), x, y)
    return float(lat[0]), float(lon[0])


def marker(point, **opts):
    """A picked point ``(lat, lon)`` as a cross, projected into any map (empty without a point)."""
    from .projection import latlon_crs

    gv = _geo()
    data = [] if point is None else [(point[1], point[0])]
    return gv.Points(data, kdims=kdims(), crs=latlon_crs()).opts(**opts)


def spatial_dims(obj) -> tuple[str, str]:
    """``("lat", "lon")`` or ``("y", "x")`` (:func:`engine.data.grid.spatial_dims`)."""
    from engine.data.grid import spatial_dims as dims_of

    return dims_of(obj)


def cell_latlon(obj) -> tuple[np.ndarray, np.ndarray]:
    """Latitude and longitude of every cell, ``(ny, nx)`` each (:func:`engine.data.grid.latlon`)."""
    from engine.data.grid import latlon

    return latlon(obj)


def _regular_axis(values: np.ndarray, n: int) -> np.ndarray:
    """A 1-D axis over the span of (possibly 2-D) coordinates: a regular copy of a 2-D grid's
    footprint, on which the land mask gives coastlines in longitude/latitude."""
    values = np.asarray(values, dtype=float)
    if values.ndim == 1:
        return values
    finite = values[np.isfinite(values)]
    return np.linspace(float(finite.min()), float(finite.max()), int(min(max(n, 2), 512)))


def coastline(land_mask):
    """The 0.5 contour of a ``(lat, lon)`` land mask as black paths in longitude/latitude,
    projected by geoviews into whatever CRS the map is drawn in (an empty element if None).

    Computed once per mask for the whole server: the masks of :func:`land_mask` are cached
    per grid, and every session's maps of that grid share one coastline element (elements
    are never changed in place; each plot projects its own copy).
    """
    key = id(land_mask)
    with _LAND_LOCK:
        hit = _COASTS.get(key)
    if hit is not None and hit[0] is land_mask:  # the same object (an id is reused only after it dies)
        return hit[1]
    element = _coastline(land_mask)
    if land_mask is not None:
        with _LAND_LOCK:
            if len(_COASTS) >= 64:  # masks of many sub-domains: keep the most recent ones
                _COASTS.pop(next(iter(_COASTS)))
            _COASTS[key] = (land_mask, element)
    return element


def _coastline(land_mask):
    import holoviews as hv
    from holoviews.operation import contours

    from .projection import latlon_crs

    gv = _geo()
    if land_mask is None:
        return gv.Contours([], kdims=kdims(), crs=latlon_crs())
    image = hv.Image((land_mask["lon"].values, land_mask["lat"].values,
                      np.asarray(land_mask.transpose("lat", "lon").values, dtype=float)),
                     kdims=kdims(), vdims=["land_mask"])
    lines = contours(image, levels=[0.5], filled=False)
    paths = [p.array([0, 1]) for p in lines.split() if len(p)] if len(lines) else []
    return gv.Contours(paths, kdims=kdims(), crs=latlon_crs()).opts(
        color="black", line_width=1.2, show_legend=False, tools=[])


def land_mask(lat, lon, max_points: int = 512):
    """The real land mask on (a thinned copy of) a grid, for coastlines; None if unavailable.

    Cached per grid for the whole server (it never changes). A grid larger than
    ``max_points`` along an axis is thinned first: a coastline needs no more detail than a map
    shows, and the 0.5 contour of a 1000 x 1000 mask costs more than the map itself.
    """
    lat, lon = np.asarray(lat, dtype=float), np.asarray(lon, dtype=float)
    if lat.ndim == 2 or lon.ndim == 2:  # a projected/rotated grid: coastlines on its lat/lon footprint
        ny, nx = lat.shape
        lat, lon = _regular_axis(lat, ny), _regular_axis(lon, nx)
    lat = lat[:: max(1, int(np.ceil(lat.size / max_points)))]
    lon = lon[:: max(1, int(np.ceil(lon.size / max_points)))]
    key = (lat.size, float(lat[0]), float(lat[-1]), lon.size, float(lon[0]), float(lon[-1]))
    with _LAND_LOCK:
        if key in _LAND_MASKS:
            return _LAND_MASKS[key]
    try:
        from engine.data.static import static_fields

        mask = static_fields(lat, lon, ["land_mask"])["land_mask"].astype(float)
    except Exception as exc:  # maps without coastlines beat no maps
        log.warning("no land mask for coastlines: %s", exc)
        mask = None
    with _LAND_LOCK:
        _LAND_MASKS[key] = mask
    return mask


def robust_clim(values, lo: float = 1, hi: float = 99, symmetric: bool = False) -> tuple[float, float]:
    """Colour limits from percentiles of the finite values (a few extreme pixels do not wash
    out the map); ``symmetric`` centres them on 0 for error maps."""
    values = np.asarray(values, dtype=float).ravel()
    if values.size > 2_000_000:  # percentiles of a thinned sample are as good and 10x cheaper
        values = values[:: values.size // 1_000_000]
    finite = values[np.isfinite(values)]
    if not finite.size:
        return (-1.0, 1.0) if symmetric else (0.0, 1.0)
    if symmetric:
        # A sparse map (an attribution confined to a receptive field) has a zero percentile:
        # fall back to its largest value rather than a unit range that hides it.
        top = float(np.percentile(np.abs(finite), hi)) or float(np.abs(finite).max()) or 1.0
        return (-top, top)
    a, b = (float(v) for v in np.percentile(finite, [lo, hi]))
    return (a, b) if b > a else (a - 0.5, a + 0.5)


def aspect_of(lat, lon) -> float:
    """Frame aspect of a lat/lon domain (a degree of longitude is cos(lat) of a degree of latitude)."""
    lat, lon = np.asarray(lat, dtype=float), np.asarray(lon, dtype=float)
    span_lat = float(np.ptp(lat)) or 1.0
    span_lon = float(np.ptp(lon)) * float(np.cos(np.deg2rad(np.mean(lat)))) or 1.0
    return float(np.clip(span_lon / span_lat, 0.5, 3.0))


def maybe_rasterize(element, npixels: int, **opts):
    """Rasterize ``element`` on the server when the grid is large (see :data:`RASTERIZE_ABOVE`)."""
    if npixels <= RASTERIZE_ABOVE:
        return element
    from holoviews.operation.datashader import rasterize

    return rasterize(element).opts(**opts)


def region_box(region):
    """The picked region ``(lat_min, lat_max, lon_min, lon_max)`` as a dashed box in
    longitude/latitude, its edges sampled so that it bends as it should on a projected map (an
    empty element without a region, so that it never widens the map's axes)."""
    from .projection import latlon_crs

    gv = _geo()
    paths = []
    if region is not None:
        la0, la1, lo0, lo1 = (float(v) for v in region)
        t = np.linspace(0.0, 1.0, 33)
        lon = np.concatenate([lo0 + (lo1 - lo0) * t, np.full_like(t, lo1), lo1 - (lo1 - lo0) * t, np.full_like(t, lo0)])
        lat = np.concatenate([np.full_like(t, la0), la0 + (la1 - la0) * t, np.full_like(t, la1), la1 - (la1 - la0) * t])
        paths = [np.c_[lon, lat]]
    return gv.Path(paths, kdims=kdims(), crs=latlon_crs()).opts(color="magenta", line_width=2,
                                                                  line_dash="dashed", tools=[])


def dated(title: str, label: str | None) -> str:
    """A map title with the date of the shown time: ``"Truth — 2003-07-01"`` (midnight
    times without the hour)."""
    if not label:
        return title
    label = label[:-6] if label.endswith(" 00:00") else label
    return f"{title} — {label}"


#: Online tile sources offered under the maps (geoviews' ``tile_sources``), off by default.
TILE_SOURCES = ("OSM", "CartoLight", "EsriImagery")


def tile_projection():
    """The CRS maps are drawn in under map tiles: Web Mercator, the only one tiles come in."""
    import cartopy.crs as ccrs

    return ccrs.GOOGLE_MERCATOR


def tile_layer(source: str = "OSM"):
    """An online map-tile layer (e.g. OpenStreetMap) to put under maps drawn in
    :func:`tile_projection`.

    Optional and never the default: the maps work offline with their own coastlines, and the
    tiles are fetched by the browser only (the server never downloads any). Maps drawn over
    tiles are reprojected into Web Mercator by geoviews.

    Raises
    ------
    ValueError
        For a source not in :data:`TILE_SOURCES` (naming them).
    """
    if source not in TILE_SOURCES:
        raise ValueError(f"unknown tile source {source!r}; accepted: {', '.join(TILE_SOURCES)}")
    gv = _geo()
    return getattr(gv.tile_sources, source).opts(alpha=0.9)
