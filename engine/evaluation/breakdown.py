"""Breakdowns of the scores: regions (lat/lon boxes, regionmask regions, user polygons) and
periods (the whole test period, seasons, months, hours of the day).

Example
-------
>>> import numpy as np, xarray as xr
>>> lat, lon = np.arange(40.0, 50.0), np.arange(0.0, 10.0)
>>> masks = region_masks({"south": (40, 44.5, 0, 10)}, lat, lon)
>>> list(masks.region.values), int(masks.sel(region="south").sum())
(['domain', 'south'], 50)
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd
import xarray as xr

from engine.evaluation._common import MetricError

SEASONS = ("DJF", "MAM", "JJA", "SON")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
BREAKDOWNS = ("season", "month", "hour")


def _bounds(lat, lon) -> str:
    return f"lat {float(np.min(lat)):g}..{float(np.max(lat)):g}, lon {float(np.min(lon)):g}..{float(np.max(lon)):g}"


def _box_mask(name: str, box, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    if len(box) != 4:
        raise MetricError(f"region {name!r}: a box is (lat_min, lat_max, lon_min, lon_max); got {box!r}")
    la0, la1, lo0, lo1 = (float(v) for v in box)
    if la1 < la0:
        raise MetricError(f"region {name!r}: lat_max {la1} < lat_min {la0}")
    in_lat = (lat >= la0) & (lat <= la1)
    # Longitudes compared modulo 360, so a box in -180..180 works on a 0..360 grid and back.
    width = (lo1 - lo0) % 360.0 if lo1 - lo0 != 360.0 else 360.0
    in_lon = ((lon - lo0) % 360.0) <= width + 1e-9
    if lat.ndim == 2:  # 2-D lat/lon of a rotated or projected grid: cell by cell
        return in_lat & in_lon
    return in_lat[:, None] & in_lon[None, :]


def _regionmask_masks(regions, lat: np.ndarray, lon: np.ndarray) -> dict[str, np.ndarray]:
    import regionmask

    import warnings

    with warnings.catch_warnings():
        # "No gridpoint belongs to any region": we say so ourselves, naming the domain
        warnings.filterwarnings("ignore", message="No gridpoint", category=UserWarning)
        if lat.ndim == 2:  # curvilinear: regionmask takes 2-D coordinates on their dims
            m3 = regions.mask_3D(xr.DataArray(lon, dims=("y", "x")), xr.DataArray(lat, dims=("y", "x")))
        else:
            m3 = regions.mask_3D(lon, lat)
    m3 = m3.rename({d: n for d, n in zip(m3.dims[1:], ("lat", "lon")) if d != n})
    names = m3["names"].values if "names" in m3.coords else m3["region"].values
    return {str(n): m3.isel(region=i).transpose("lat", "lon").values for i, n in enumerate(names)}


def region_masks(regions: Any, lat, lon, include_domain: bool = True) -> xr.DataArray:
    """Boolean masks (region, lat, lon), True inside, ``"domain"`` (everything) first.

    Parameters
    ----------
    regions : None, or a mapping name -> box ``(lat_min, lat_max, lon_min, lon_max)`` /
        boolean (lat, lon) array / shapely polygon; or a ``regionmask.Regions``; or the dotted
        name of a ``regionmask.defined_regions`` set (e.g. ``"srex"``, ``"ar6.land"``).
    lat, lon : 1-D coordinates of a regular grid, or 2-D ``(y, x)`` ones of any other grid (degrees);
        the masks are then ``(region, y, x)``

    Raises
    ------
    MetricError
        when a named box, polygon or mask holds no grid point of the domain (for a regionmask
        set, only when none of its regions does: a global set mostly misses a regional domain).
    """
    lat = np.asarray(lat, dtype=float)
    lon = np.asarray(lon, dtype=float)
    shape = lat.shape if lat.ndim == 2 else (lat.size, lon.size)
    masks: dict[str, np.ndarray] = {}
    if include_domain:
        masks["domain"] = np.ones(shape, dtype=bool)
    if regions is None:
        pass
    elif isinstance(regions, str) or _is_regionmask(regions):
        rs = _defined_regions(regions) if isinstance(regions, str) else regions
        found = {k: v for k, v in _regionmask_masks(rs, lat, lon).items() if v.any()}
        if not found:
            raise MetricError(f"no region of {regions!r} overlaps the domain ({_bounds(lat, lon)})")
        masks.update(found)
    elif isinstance(regions, Mapping):
        for name, spec in regions.items():
            name = str(name)
            if name in masks:
                raise MetricError(f"region name {name!r} is used twice (or clashes with 'domain')")
            if isinstance(spec, xr.DataArray):
                m = spec.astype(bool).transpose(*(("lat", "lon") if lat.ndim == 1 else ("y", "x"))).values
            elif isinstance(spec, np.ndarray) and spec.ndim == 2:
                m = spec.astype(bool)
            elif hasattr(spec, "geom_type"):  # a shapely polygon
                import regionmask

                m = _regionmask_masks(regionmask.Regions([spec], names=[name]), lat, lon).popitem()[1]
            elif isinstance(spec, (tuple, list)):
                m = _box_mask(name, spec, lat, lon)
            else:
                raise MetricError(
                    f"region {name!r}: {type(spec).__name__} is not valid; accepted: a (lat_min, lat_max, "
                    "lon_min, lon_max) box, a boolean (lat, lon) mask, a shapely polygon"
                )
            if m.shape != shape:
                raise MetricError(f"region {name!r}: mask shape {m.shape} is not the grid's {shape}")
            if not m.any():
                raise MetricError(f"region {name!r} misses the domain ({_bounds(lat, lon)}): no grid point inside")
            masks[name] = m
    else:
        raise MetricError(
            f"regions of type {type(regions).__name__} are not valid; accepted: None, a dict of boxes / masks / "
            "polygons, a regionmask.Regions, or a regionmask.defined_regions name such as 'srex'"
        )
    if lat.ndim == 2:
        return xr.DataArray(np.stack(list(masks.values())), dims=("region", "y", "x"),
                            coords={"region": list(masks), "lat": (("y", "x"), lat), "lon": (("y", "x"), lon)},
                            name="region_mask")
    return xr.DataArray(
        np.stack(list(masks.values())),
        dims=("region", "lat", "lon"),
        coords={"region": list(masks), "lat": lat, "lon": lon},
        name="region_mask",
    )


def _is_regionmask(obj) -> bool:
    return type(obj).__module__.startswith("regionmask") and hasattr(obj, "mask_3D")


def _defined_regions(name: str):
    import regionmask

    obj = regionmask.defined_regions
    for part in name.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            known = [n for n in dir(regionmask.defined_regions) if not n.startswith("_")]
            raise MetricError(f"unknown regionmask region set {name!r}; known: {', '.join(known)}") from None
    return obj


def period_groups(time: xr.DataArray, period: str = "test", by=BREAKDOWNS) -> dict[str, np.ndarray]:
    """Boolean selections of the time axis: ``period`` (everything), then each season, month
    and hour of day present (hours only for sub-daily data). Labels: ``"DJF"``, ``"Jan"``,
    ``"hour-06"``.

    Example
    -------
    >>> t = xr.DataArray(pd.date_range("2003-01-30", periods=4, freq="D"), dims="time")
    >>> list(period_groups(t, by=("season", "month")))
    ['test', 'DJF', 'Jan', 'Feb']
    """
    bad = [b for b in by if b not in BREAKDOWNS]
    if bad:
        raise MetricError(f"breakdown {bad[0]!r} is not valid; accepted: {', '.join(BREAKDOWNS)}")
    n = time.size
    groups = {period: np.ones(n, dtype=bool)}
    if n == 0:
        return groups
    if "season" in by:
        seasons = time.dt.season.values
        for s in SEASONS:
            sel = seasons == s
            if sel.any():
                groups[s] = sel
    if "month" in by:
        months = time.dt.month.values
        for m in range(1, 13):
            sel = months == m
            if sel.any():
                groups[MONTHS[m - 1]] = sel
    if "hour" in by:
        hours = time.dt.hour.values
        if np.unique(hours).size > 1:  # sub-daily data
            for h in np.unique(hours):
                groups[f"hour-{int(h):02d}"] = hours == h
    return groups
