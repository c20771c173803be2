"""Colour maps by kind of variable, and colour limits that suit them.

One palette for every field misleads: precipitation in a blue-red map shows dry land dark
blue. Here the kind of a field (temperature, precipitation, wind, pressure, humidity, or an
error, a spread, an RMSE) is read from its CF metadata (``standard_name``, ``units``, name)
and given a perceptually uniform map from cmocean:

- temperature: ``thermal`` (sequential);
- precipitation: ``rain`` starting at pure white, limits from 0, so dry cells are white;
- wind speed ``speed``, pressure ``haline``, humidity ``tempo``, anything else ``thermal``;
- errors and biases: ``balance`` (diverging), limits symmetric about 0;
- spreads and RMSE: ``amp`` (sequential from 0).

Example
-------
>>> kind_of("pr", "mm/day")
'precipitation'
>>> kind_of("t2m", "K")
'temperature'
>>> len(palette("precipitation")), palette("precipitation")[0]
(256, '#ffffff')
"""

from __future__ import annotations

import functools

import numpy as np

#: cmocean map per kind.
CMAPS = {
    "temperature": "thermal",
    "precipitation": "rain",
    "wind": "speed",
    "pressure": "haline",
    "humidity": "tempo",
    "other": "thermal",
    "error": "balance",
    "spread": "amp",
}

#: Kinds whose colour limits are symmetric about zero.
DIVERGING = ("error",)

_PRECIP_UNITS = ("mm/day", "mm day-1", "mm d-1", "kg m-2 s-1", "mm", "m", "mm/h", "mm h-1", "kg m-2")


def kind_of(name: str = "", units: str = "", standard_name: str = "") -> str:
    """The kind of a field from its name, units and CF standard name (see :data:`CMAPS`)."""
    text = f"{name} {standard_name}".lower()
    units = (units or "").strip()
    if any(w in text for w in ("precip", "rain", "snowfall", "pr ", "tp ")) or name.lower() in ("pr", "tp", "precip", "rr"):
        return "precipitation"
    if "temperature" in text or name.lower() in ("t2m", "tas", "tasmin", "tasmax", "t", "tmin", "tmax", "sst") \
            or units in ("K", "degC", "°C", "celsius"):
        return "temperature"
    if any(w in text for w in ("wind", "speed")) or name.lower() in ("uas", "vas", "sfcwind", "u10", "v10", "ws"):
        return "wind"
    if "pressure" in text or name.lower() in ("msl", "psl", "ps", "sp"):
        return "pressure"
    if "humidity" in text or name.lower() in ("huss", "hurs", "q", "rh"):
        return "humidity"
    if units in _PRECIP_UNITS[:4]:
        return "precipitation"
    return "other"


def kind_of_array(da, name: str = "") -> str:
    """:func:`kind_of` from a DataArray's attributes."""
    attrs = getattr(da, "attrs", {}) or {}
    return kind_of(name or str(getattr(da, "name", "") or ""), str(attrs.get("units", "")),
                   str(attrs.get("standard_name", "")))


@functools.lru_cache(maxsize=None)
def palette(kind: str, n: int = 256) -> tuple[str, ...]:
    """The colour map of a kind as ``n`` hex colours (what bokeh takes)."""
    import warnings

    from matplotlib.colors import to_hex

    with warnings.catch_warnings():  # cmocean builds its maps with an argument matplotlib deprecates
        warnings.simplefilter("ignore", DeprecationWarning)
        import cmocean

    cmap = getattr(cmocean.cm, CMAPS.get(kind, CMAPS["other"]))
    colours = [to_hex(cmap(i / (n - 1))) for i in range(n)]
    if kind == "precipitation":
        colours[0] = "#ffffff"  # dry is white, not the palette's lightest grey-green
    return tuple(colours)


def limits(values, kind: str, lo: float = 1, hi: float = 99) -> tuple[float, float]:
    """Colour limits for a kind: robust percentiles; from 0 for precipitation, spreads and RMSE;
    symmetric about 0 for errors."""
    from .maps import robust_clim

    if kind in DIVERGING:
        return robust_clim(values, symmetric=True)
    a, b = robust_clim(values, lo, hi)
    if kind in ("precipitation", "spread"):
        values = np.asarray(values, dtype=float)
        top = b if b > 0 else (float(np.nanmax(values)) if np.isfinite(values).any() else 1.0)
        return (0.0, top or 1.0)
    return (a, b)


def options(kind: str, values=None, clim: tuple | None = None) -> dict:
    """holoviews style options (``cmap``, ``clim``, clipping colours) for a map of this kind;
    ``clim`` given by the user wins over the limits computed from ``values``."""
    if clim is None:
        clim = limits(values, kind) if values is not None else None
    out = {"cmap": list(palette(kind))}
    if clim is not None:
        out["clim"] = tuple(float(v) for v in clim)
    if kind == "precipitation":
        out["clipping_colors"] = {"min": "#ffffff", "NaN": "#00000000"}
    return out
