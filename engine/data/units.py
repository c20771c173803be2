"""Physical units: read, compared and converted with pint and cf-xarray's CF unit registry.

Every variable that enters a pairing has units: the file's ``units`` attribute or, where the file
has none, the units the catalogue entry declares (``metadata.variables.<name>.units``). A variable
without either is refused (opening it from the catalogue), because a silent mismatch trains a
model on nonsense (a degC input against a K target gave "rmse=270").

Conversions are affine (``new = old * factor + offset``), worked out once with pint on scalars
and applied lazily to the (dask) array in its own float dtype:

- K <-> degC, Pa <-> hPa, m s-1 <-> km h-1, ... anything pint calls compatible;
- precipitation **flux** (``kg m-2 s-1``, mass per area per time) <-> **depth rate** (``mm day-1``,
  length per time) and amount (``kg m-2``) <-> depth (``mm``): not compatible in the SI sense; they
  are converted through the density of liquid water, :data:`WATER_DENSITY` = 1000 kg m-3
  (1 kg m-2 of water is 1 mm deep; 1 kg m-2 s-1 = 86400 mm day-1), and the converted variable's
  ``units_conversion`` attribute says so;
- anything else (m vs K) is refused, naming both units and what would be accepted.

Example
-------
>>> conversion("degC", "K")
(1.0, 273.15, '')
>>> conversion("kg m-2 s-1", "mm day-1")[:2]
(86400.0, 0.0)
"""

from __future__ import annotations

import functools

import numpy as np
import xarray as xr

from engine.data.errors import DataError

#: Density of liquid water [kg m-3], used for precipitation flux <-> depth conversions.
WATER_DENSITY = 1000.0


@functools.lru_cache(maxsize=1)
def registry():
    """cf-xarray's pint registry (understands CF strings such as ``kg m-2 s-1`` and ``degC``)."""
    from cf_xarray.units import units

    return units


@functools.lru_cache(maxsize=256)
def parse(text: str):
    """``text`` as a pint Unit; an unreadable string raises :class:`DataError`."""
    text = str(text).strip()
    if not text:
        raise DataError("empty units string")
    try:
        return registry().Quantity(1.0, text).units
    except Exception as exc:
        raise DataError(f"units {text!r} cannot be read ({type(exc).__name__}: {exc}); accepted: CF/UDUNITS "
                        "strings such as 'K', 'degC', 'kg m-2 s-1', 'mm day-1', 'Pa', 'hPa', 'm s-1', '1'") from None


def _dims(unit) -> dict:
    return dict(registry().Quantity(1.0, unit).dimensionality)


def _water(src_dims: dict, dst_dims: dict) -> int:
    """+1 when src is mass/area(/time) and dst the same as depth(/time); -1 the other way; else 0."""
    diff = {k: src_dims.get(k, 0) - dst_dims.get(k, 0) for k in set(src_dims) | set(dst_dims)}
    diff = {k: v for k, v in diff.items() if v}
    # mass per area = density * length: src has one more [mass] and three fewer [length]
    if diff == {"[mass]": 1, "[length]": -3}:
        return 1
    if diff == {"[mass]": -1, "[length]": 3}:
        return -1
    return 0


@functools.lru_cache(maxsize=256)
def conversion(src: str, dst: str, what: str = "variable") -> tuple[float, float, str]:
    """``(factor, offset, note)`` with ``value_dst = value_src * factor + offset``.

    ``note`` is non-empty when the conversion needs more than the units (water density).

    Raises
    ------
    DataError
        unreadable units, or units that cannot be converted into each other.
    """
    ureg = registry()
    su, du = parse(src), parse(dst)
    q0, q1 = ureg.Quantity(0.0, su), ureg.Quantity(1.0, su)
    note = ""
    sd, dd = _dims(su), _dims(du)
    if sd != dd:
        water = _water(sd, dd)
        if not water:
            raise DataError(
                f"{what}: units {src!r} ({_fmt_dims(sd)}) cannot be converted to {dst!r} ({_fmt_dims(dd)}); "
                f"accepted: units of {_fmt_dims(dd)}, or a precipitation flux/amount against a depth rate/depth"
            )
        rho = ureg.Quantity(WATER_DENSITY, "kg m-3")
        q0, q1 = (q0 / rho, q1 / rho) if water > 0 else (q0 * rho, q1 * rho)
        note = f"converted from {src} to {dst} through the density of liquid water ({WATER_DENSITY:g} kg m-3)"
    try:
        v0, v1 = float(q0.to(du).magnitude), float(q1.to(du).magnitude)
    except Exception as exc:  # pint: offset units in products etc.
        raise DataError(f"{what}: units {src!r} cannot be converted to {dst!r}: {exc}") from None
    return v1 - v0, v0, note


def _fmt_dims(d: dict) -> str:
    if not d:
        return "dimensionless"
    return " ".join(f"{k}^{v}" if v != 1 else k for k, v in sorted(d.items()))


def units_of(da: xr.DataArray, what: str, declared: str | None = None, required: bool = True) -> str | None:
    """The units of ``da``: its ``units`` attribute, else ``declared`` (from the catalogue).

    Raises
    ------
    DataError
        when neither is there and ``required``; the message says where to declare them.
    """
    units = da.attrs.get("units")
    if units is None or str(units).strip() == "":
        units = declared
    if units is None or str(units).strip() == "":
        if required:
            raise DataError(
                f"{what} has no units attribute and its catalogue entry declares none; accepted: a 'units' "
                f"attribute in the file, or the entry's metadata 'variables: {{{da.name}: {{units: ...}}}}'"
            )
        return None
    parse(str(units))
    return str(units)


def convert(da: xr.DataArray, dst: str, what: str, declared: str | None = None) -> xr.DataArray:
    """``da`` in units ``dst`` (lazy where ``da`` is); attributes kept, ``units`` set to ``dst``.

    Raises
    ------
    DataError
        missing or incompatible units.
    """
    src = units_of(da, what, declared, required=True)
    factor, offset, note = conversion(src, str(dst), what)
    attrs = dict(da.attrs)
    if factor == 1.0 and offset == 0.0:
        out = da
    else:
        dtype = da.dtype if np.issubdtype(da.dtype, np.floating) else np.float32
        # keep float32 data float32 (no float64 copy of a whole archive)
        out = (da * np.asarray(factor, dtype=dtype) + np.asarray(offset, dtype=dtype)).astype(dtype)
        attrs["units_converted_from"] = src
    attrs["units"] = str(dst)
    if note:
        attrs["units_conversion"] = note
    out = out.copy(data=out.data) if out is da else out
    out.attrs = attrs
    # converted values must not be written back with the source's packing (int16 scale/offset)
    keep = da.encoding if out is da or (factor == 1.0 and offset == 0.0) else {
        k: v for k, v in da.encoding.items() if k in ("source", "preferred_chunks", "chunksizes", "zlib", "complevel")}
    out.encoding = dict(keep)
    return out


def harmonise(da: xr.DataArray, what: str, declared: str | None = None, canonical: str | None = None,
              required: bool = True) -> xr.DataArray:
    """Units checked and, where ``canonical`` is given, converted to it.

    ``declared`` fills a missing ``units`` attribute; without both, ``required`` decides between an
    error and leaving the variable as it is (in-memory data the user passed without units).
    """
    units = units_of(da, what, declared, required=required or canonical is not None)
    if units is None:
        return da
    if canonical:
        return convert(da, canonical, what, declared=units)
    if da.attrs.get("units") != units:
        da = da.copy(data=da.data)
        da.attrs["units"] = units
    return da


def declared_units(entry: str | None, catalog=None) -> dict[str, str]:
    """``{variable: units}`` that catalogue entry ``entry`` declares (empty for None)."""
    if not entry:
        return {}
    from engine.data.catalog import entry_metadata

    variables = entry_metadata(entry, catalog).get("variables") or {}
    return {str(k): str(v["units"]) for k, v in variables.items() if isinstance(v, dict) and v.get("units")}
