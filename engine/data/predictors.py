"""The input channels of a pairing: the target's counterpart, predictors, levels, name maps, units.

What the configuration says (``engine.config.DataConfig``) and what it becomes here:

- ``predictors: [psl, ta, hus850]`` — names looked up first in the *input entry* (MOS: ``lowres``;
  PerfectProg: ``highres``, coarsened with the target), then in each entry of
  ``predictor_entries`` (catalogue role ``predictor``, on their own grids; regridded onto the
  input grid by :func:`external_predictors`).
- A variable with a level dimension (``ta(time, plev, lat, lon)``) becomes one channel per level,
  named ``<name><level>`` (``ta850``, ``ta500``); ``levels: {ta: [850, 500]}`` selects levels,
  and a predictor may name one directly (``hus850``). Pressure levels are matched in hPa
  whatever the file stores (85000 Pa is level 850).
- ``variable_map: {tg: tas}`` — the name on the right is what the entry calls the variable that
  the configuration calls by the name on the left (E-OBS ``tg`` against reanalysis ``tas``).
  Channels keep the configuration's names.
- ``units: {name: units}`` — canonical units; the input's target channel always goes to the
  target's units (:mod:`engine.data.units`).
- ``target_as_input: false`` — the input holds only the predictors (emulation / perfect prognosis
  with large-scale predictors, as CORDEX ML-Bench does).

Example
-------
>>> chans = resolve(cfg, {"era5": ds_era5, "ncep": ds_ncep}, ["era5", "ncep"])   # doctest: +SKIP
>>> [(c.name, c.entry, c.source, c.level) for c in chans]                         # doctest: +SKIP
[('psl', 'ncep', 'slp', None), ('ta850', 'ncep', 'ta', 850.0)]
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import xarray as xr

from engine.data.errors import DataError
from engine.data.units import conversion, declared_units, harmonise

#: Dimensions that are never a level dimension.
_NOT_LEVEL = ("time", "lat", "lon", "y", "x", "bnds", "nv", "bounds")
_CHANNEL = re.compile(r"^(.*?[^\d.])(\d+(?:\.\d+)?)$")


@dataclass(frozen=True)
class Channel:
    """One input channel: ``name`` in the configuration, taken from variable ``source`` of
    catalogue entry ``entry`` (at ``level`` of its level dimension ``level_dim`` when 4-D)."""

    name: str
    entry: str
    source: str
    level: float | None = None
    level_dim: str | None = None


def level_dim(da: xr.DataArray) -> str | None:
    """The level dimension of ``da`` (not time nor spatial), or None for a 3-D variable."""
    dims = [d for d in da.dims if d not in _NOT_LEVEL]
    if len(dims) > 1:
        raise DataError(f"variable {da.name!r} has dims {da.dims}; expected (time, [level,] spatial...) with at most "
                        "one level dimension")
    return dims[0] if dims else None


def level_values(ds: xr.Dataset, dim: str) -> np.ndarray:
    """The values of level dimension ``dim``, in hPa when the coordinate holds pressure."""
    coord = ds[dim] if dim in ds.coords else xr.DataArray(np.arange(ds.sizes[dim]), dims=dim)
    values = np.asarray(coord.values, dtype=np.float64)
    units = coord.attrs.get("units")
    if units:
        try:
            factor, offset, _ = conversion(str(units), "hPa")
            values = values * factor + offset
        except DataError:
            pass  # heights, model levels: their own values
    return values


def _fmt_level(v: float) -> str:
    return f"{v:g}"


def _available(ds: xr.Dataset) -> list[str]:
    """Names a predictor may use for ``ds``: its variables, and ``<var><level>`` channels of 4-D ones."""
    names = []
    for v in ds.data_vars:
        names.append(str(v))
        dim = level_dim(ds[v]) if "time" in ds[v].dims else None
        if dim:
            names.extend(f"{v}{_fmt_level(x)}" for x in level_values(ds, dim))
    return names


def _expand(cfg, name: str, src: str, ds: xr.Dataset, entry: str) -> list[Channel] | None:
    """Channels for predictor ``name`` from entry ``ds``; None when the entry does not have it."""
    if src in ds.data_vars:
        dim = level_dim(ds[src])
        if dim is None:
            if name in cfg.levels:
                raise DataError(f"data.levels names {name!r}, but variable {src!r} of entry {entry!r} has no "
                                f"level dimension (dims {ds[src].dims}); accepted: variables with levels")
            return [Channel(name, entry, src)]
        have = level_values(ds, dim)
        wanted = cfg.levels.get(name, cfg.levels.get(src))
        if wanted is None:
            wanted = list(have)
        chans = []
        for lv in wanted:
            hit = np.flatnonzero(np.isclose(have, float(lv)))
            if not hit.size:
                raise DataError(f"level {lv!r} of {name!r} (data.levels) is not in entry {entry!r}; its levels of "
                                f"{src!r}: {', '.join(_fmt_level(x) for x in have)}")
            chans.append(Channel(f"{name}{_fmt_level(float(lv))}", entry, src, float(have[hit[0]]), dim))
        return chans
    match = _CHANNEL.match(name)
    if match:  # "ta850": level 850 of ta
        base, lv = match.group(1), float(match.group(2))
        bsrc = cfg.variable_map.get(base, base)
        if bsrc in ds.data_vars and level_dim(ds[bsrc]) is not None:
            dim = level_dim(ds[bsrc])
            have = level_values(ds, dim)
            hit = np.flatnonzero(np.isclose(have, lv))
            if not hit.size:
                raise DataError(f"predictor {name!r}: level {_fmt_level(lv)} is not in variable {bsrc!r} of entry "
                                f"{entry!r}; its levels: {', '.join(_fmt_level(x) for x in have)}")
            return [Channel(name, entry, bsrc, float(have[hit[0]]), dim)]
    return None


def resolve(cfg, sources: dict[str, xr.Dataset], order: list[str]) -> list[Channel]:
    """The predictor channels of ``cfg.predictors``, each from the first entry in ``order`` that has it.

    Parameters
    ----------
    cfg : DataConfig
    sources : entry name -> (lazily opened) dataset
    order : entry names to search, the input entry first

    Raises
    ------
    DataError
        a name no entry has (lists what each entry offers), an unknown level.
    """
    for var in cfg.levels:
        if var not in cfg.predictors and not any(str(p).startswith(var) for p in cfg.predictors):
            raise DataError(f"data.levels names {var!r}, which is not a predictor; accepted: names in "
                            f"data.predictors ({', '.join(cfg.predictors) or 'none'})")
    channels: list[Channel] = []
    for name in cfg.predictors:
        if name == cfg.variable and getattr(cfg, "target_as_input", True):
            continue  # the target's input channel is there already (as before: listing it is harmless)
        src = cfg.variable_map.get(name, name)
        found = None
        for entry in order:
            found = _expand(cfg, name, src, sources[entry], entry)
            if found:
                break
        if not found:
            offer = "; ".join(f"{', '.join(_available(sources[e])) or 'none'} (entry {e!r})" for e in order)
            mapped = f" (mapped by data.variable_map to {src!r})" if src != name else ""
            raise DataError(f"predictor variable {name!r}{mapped} is not in entry {' nor '.join(map(repr, order))}; "
                            f"its variables: {offer}. Entries of role 'predictor' are searched when listed in "
                            "data.predictor_entries")
        channels.extend(found)
    names = [c.name for c in channels]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup or (cfg.variable in names and getattr(cfg, "target_as_input", True)):
        raise DataError(f"input channel(s) {dup or [cfg.variable]} appear twice (a level channel named like the target "
                        "or a level listed twice); accepted: distinct predictor names")
    return channels


def channel_array(ds: xr.Dataset, ch: Channel) -> xr.DataArray:
    """The 3-D ``(time, ...)`` array of channel ``ch`` from its entry's dataset, named ``ch.name``."""
    da = ds[ch.source]
    if ch.level_dim is not None:
        pos = int(np.flatnonzero(np.isclose(level_values(ds, ch.level_dim), ch.level))[0])
        da = da.isel({ch.level_dim: pos}, drop=True)
    da = da.rename(ch.name)
    da.attrs = {**da.attrs, **({"level": ch.level} if ch.level is not None else {})}
    return da


def input_view(cfg, ds: xr.Dataset, entry: str, channels: list[Channel], target_units: str | None,
               from_catalog: bool, include_target: bool) -> xr.Dataset:
    """The input entry as a dataset of 3-D channels named as in the configuration, units harmonised.

    ``include_target``: the input's counterpart of the target (``variable_map`` applied) is included
    as ``cfg.variable``, converted to ``target_units``; required when ``cfg.target_as_input``.
    """
    declared = declared_units(entry, cfg.catalog) if from_catalog else {}
    out = {}
    if include_target:
        src = cfg.variable_map.get(cfg.variable, cfg.variable)
        if src not in ds.data_vars:
            if cfg.target_as_input:
                mapped = f" (data.variable_map maps {cfg.variable!r} to {src!r})" if src != cfg.variable else ""
                raise DataError(f"input variable {src!r}{mapped} is not in entry {entry!r}; its variables: "
                                f"{', '.join(map(str, ds.data_vars))}. Accepted: a variable of the entry, a "
                                f"data.variable_map such as {{{cfg.variable}: <its name in {entry!r}>}}, or "
                                "data.target_as_input=false with predictors only")
        else:
            da = ds[src].rename(cfg.variable)
            what = f"input variable {src!r} of entry {entry!r}"
            need = target_units is not None or from_catalog
            da = harmonise(da, what, declared.get(src), target_units, required=need)
            out[cfg.variable] = da
    for ch in channels:
        if ch.entry != entry:
            continue
        what = f"predictor {ch.name!r} (variable {ch.source!r} of entry {entry!r})"
        out[ch.name] = harmonise(channel_array(ds, ch), what, declared.get(ch.source), cfg.units.get(ch.name),
                                 required=from_catalog)
    view = xr.Dataset(out, attrs=ds.attrs)
    return view.assign_coords({k: v for k, v in ds.coords.items() if k not in view.coords and set(v.dims) <= set(view.dims)})


def external_predictors(cfg, channels: list[Channel], times, lr: xr.Dataset, sources: dict[str, xr.Dataset],
                        from_catalog: bool = True) -> dict[str, xr.DataArray]:
    """Channels from ``predictor_entries``, at the paired ``times``, regridded onto the LR grid of ``lr``.

    Each entry's times are matched to ``times`` as the input's are (by calendar date for daily data);
    every paired step must be there.

    Raises
    ------
    DataError
        a predictor entry that misses paired steps (names the first), another calendar, units.
    """
    from engine.data.grid import check_inside, describe, spatial_dims
    from engine.data.regrid import regrid_to
    from engine.data.timeaxis import check_times, fmt_times, match_times, stamp

    out: dict[str, xr.DataArray] = {}
    for ch in channels:
        ds = sources[ch.entry]
        what = f"predictor {ch.name!r} (variable {ch.source!r} of entry {ch.entry!r})"
        check_times(ds.time, f"entry {ch.entry!r}")
        pos_t, pos_p = match_times(times, ds.time, "the paired data", f"entry {ch.entry!r}")
        if pos_t.size != len(times):
            missing = np.setdiff1d(np.arange(len(times)), pos_t)
            raise DataError(f"{what} covers {fmt_times(ds.time)}; {missing.size} paired step(s) are missing, the "
                            f"first {stamp(times[int(missing[0])])}. Accepted: a predictor entry covering "
                            f"{fmt_times(times)}")
        da = channel_array(ds, ch).isel(time=pos_p)
        declared = declared_units(ch.entry, cfg.catalog) if from_catalog else {}
        da = harmonise(da, what, declared.get(ch.source), cfg.units.get(ch.name), required=from_catalog)
        # onto the input's LR grid from the predictor's true cell positions (any grid kind), lazily
        dst, src_grid = describe(lr), describe(ds)
        try:
            check_inside(dst, src_grid, "input grid", f"entry {ch.entry!r}")
        except DataError as exc:
            raise DataError(f"{what}: {exc}") from None
        attrs = dict(da.attrs)
        field = regrid_to(da.astype(np.float32), dst, getattr(cfg, "regrid_method", None) or "auto")
        field = field.assign_coords(time=lr.time.values)
        field.attrs = attrs
        sdims = spatial_dims(lr)
        out[ch.name] = field.transpose("time", *sdims)
    return out


@dataclass
class Inputs:
    """What :func:`inputs` gives pairing: the input entry as channels, and where the rest come from."""

    ds: xr.Dataset  #: the input entry's channels: ``cfg.variable`` (where present) and its predictors
    predictors: tuple[str, ...]  #: every predictor channel, in configuration order
    external: list[Channel]  #: channels from ``predictor_entries`` (see :func:`external_predictors`)
    sources: dict[str, xr.Dataset]  #: the opened predictor entries


def target_view(cfg, ds: xr.Dataset, entry: str, from_catalog: bool) -> xr.Dataset:
    """``ds`` with the target's units read (file attribute, else the catalogue's declaration) and
    converted to ``data.units[variable]`` where declared. A target from a catalogue entry without
    units is refused; in-memory data without units pass unchanged (nothing to compare)."""
    declared = declared_units(entry, cfg.catalog) if from_catalog else {}
    da = harmonise(ds[cfg.variable], f"target {cfg.variable!r} of entry {entry!r}", declared.get(cfg.variable),
                   cfg.units.get(cfg.variable), required=from_catalog)
    return ds.assign({cfg.variable: da})


def open_predictor_entries(cfg) -> dict[str, xr.Dataset]:
    """The entries of ``data.predictor_entries``, opened lazily; a role other than ``predictor`` or
    ``lowres`` is refused."""
    from engine.data.catalog import entry_metadata, open_dataset

    out = {}
    for name in cfg.predictor_entries:
        role = entry_metadata(name, cfg.catalog).get("role")
        if role not in ("predictor", "lowres"):
            raise DataError(f"data.predictor_entries names {name!r}, whose role is {role!r}; accepted: entries of "
                            "role 'predictor' (or 'lowres')")
        out[name] = open_dataset(name, cfg.catalog)
    return out


def inputs(cfg, ds: xr.Dataset, entry: str, from_catalog: bool, target_units: str | None,
           is_target_entry: bool, sources: dict[str, xr.Dataset] | None = None) -> Inputs:
    """Resolve the input channels of ``cfg`` with ``ds`` (entry ``entry``) as the input entry.

    ``is_target_entry``: PerfectProg, where the input is the (already converted) target itself.
    ``sources``: opened predictor entries (default: opened here from ``data.predictor_entries``).
    """
    sources = open_predictor_entries(cfg) if sources is None else dict(sources)
    order = [entry, *[e for e in cfg.predictor_entries if e != entry]]
    channels = resolve(cfg, {entry: ds, **sources}, order)
    view = input_view(cfg, ds, entry, channels, target_units, from_catalog, include_target=not is_target_entry)
    if is_target_entry:
        view = view.assign({cfg.variable: ds[cfg.variable]})
    external = [c for c in channels if c.entry != entry]
    return Inputs(view, tuple(c.name for c in channels), external, sources)
