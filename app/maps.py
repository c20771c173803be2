"""Map building blocks shared by the views: holoviews images, offline coastlines, colour limits.

Coastlines are drawn offline: they are the 0.5 contour of the real land mask on the map's grid
(:func:`engine.data.static.static_fields`), so no cartopy shapefile or map tile is ever
downloaded. Large grids are rasterized on the server (datashader) so that the browser only ever
receives about as many pixels as it shows.

Views give their map panes ``linked_axes=False``: Panel otherwise links the axes of every
HoloViews pane with the same dimensions in a page, so one tab's domain (the dataset's) would
set the ranges of another's (a run's, a sub-domain's). Maps inside one view stay linked
through the holoviews Layout (``shared_axes``).
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


def kdims():
    """Longitude and latitude key dimensions, named the same in every map so axes link."""
    import holoviews as hv

    return [hv.Dimension("lon", label="Longitude", unit="°E"), hv.Dimension("lat", label="Latitude", unit="°N")]


def _regular(values: np.ndarray) -> bool:
    if values.size < 3:
        return True
    step = np.diff(values)
    return bool(np.allclose(step, step[0], rtol=1e-3, atol=0))


def map_element(da, title: str, value_name: str, units: str = "", group: str | None = None, **opts):
    """A holoviews ``Image`` (regular grid) or ``QuadMesh`` (irregular) of a ``(lat, lon)`` array.

    Parameters
    ----------
    da : xarray.DataArray
        ``(lat, lon)`` field; NaN where masked.
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
    import holoviews.plotting.bokeh  # noqa: F401  (.opts() needs a loaded plotting backend)

    vdim = hv.Dimension(value_name, label=value_name, unit=units or None)
    group = "".join(c for c in (group or title).title() if c.isalnum()) or "Map"
    dims = spatial_dims(da)
    if dims != ("lat", "lon") or da["lat"].ndim != 1:
        # Any other grid (rotated pole, Lambert, polar stereographic, curvilinear): every cell
        # drawn where it is, from its 2-D latitude and longitude (engine.data.grid.latlon), so
        # the map, its hover and the coastlines share longitude/latitude axes.
        lat2, lon2 = cell_latlon(da)
        values = np.asarray(da.transpose(*dims).values, dtype=float)
        element = hv.QuadMesh((lon2, lat2, values), kdims=kdims(), vdims=[vdim], group=group)
        return element.opts(title=title, **opts)
    da = da.transpose("lat", "lon")
    lat, lon = da["lat"].values, da["lon"].values
    data = (lon, lat, np.asarray(da.values, dtype=float))
    kind = hv.Image if _regular(lat) and _regular(lon) else hv.QuadMesh
    element = kind(data, kdims=kdims(), vdims=[vdim], group=group)
    return element.opts(title=title, **opts)


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
    """The 0.5 contour of a ``(lat, lon)`` land mask as black paths (an empty overlay if None)."""
    import holoviews as hv
    import holoviews.plotting.bokeh  # noqa: F401  (.opts() needs a loaded plotting backend)
    from holoviews.operation import contours

    if land_mask is None:
        return hv.Contours([], kdims=kdims())
    image = hv.Image((land_mask["lon"].values, land_mask["lat"].values,
                      np.asarray(land_mask.transpose("lat", "lon").values, dtype=float)),
                     kdims=kdims(), vdims=["land_mask"])
    lines = contours(image, levels=[0.5], filled=False)
    return lines.opts(color="black", line_width=1.2, cmap=["black"], colorbar=False, show_legend=False,
                      tools=[])


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
    """The picked region ``(lat_min, lat_max, lon_min, lon_max)`` as a dashed rectangle (an
    empty element without a region, so that it never widens the map's axes)."""
    import holoviews as hv

    dims = [*kdims(), "lon1", "lat1"]
    boxes = [] if region is None else [(region[2], region[0], region[3], region[1])]
    return hv.Rectangles(boxes, kdims=dims).opts(fill_alpha=0, line_color="magenta", line_width=2,
                                                 line_dash="dashed", tools=[])


def dated(title: str, label: str | None) -> str:
    """A map title with the date of the shown time: ``"Truth — 2003-07-01"`` (midnight
    times without the hour)."""
    if not label:
        return title
    label = label[:-6] if label.endswith(" 00:00") else label
    return f"{title} — {label}"
