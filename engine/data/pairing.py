"""Pairing: the low-resolution input and the high-resolution target of a downscaling problem.

Two ways (``data.downscaling``):

- ``perfectprog`` (perfect prognosis): the input is the target itself, block-mean coarsened by
  ``scale`` (NaN-aware: a block's mean over its valid cells). The grid must be divisible by
  ``scale``; ``data.bbox`` cuts it to a size that is.
- ``mos`` (model output statistics): the input comes from another catalogue entry (``data.lowres``,
  e.g. a GCM or reanalysis) at any resolution. Only the time steps both have are kept; the
  high-resolution box must lie inside the low-resolution one. The input is regridded onto an
  intermediate grid exactly ``scale`` times coarser than the target (the block centres of the
  target grid): conservatively when the source is finer than that grid, bilinearly when coarser,
  so a non-integer resolution ratio (0.3 degree -> 1/12 degree with scale 4) works.

Predictors (extra low-resolution variables) come from the low-resolution source (for PerfectProg,
the coarsened high-resolution entry); static fields (elevation, land mask) on the target grid come
from :mod:`engine.data.static`.

Example
-------
>>> from engine.config import DataConfig
>>> pair = make_pair(DataConfig(highres="demo_alps", variable="t2m", scale=4))
>>> pair.hr.shape, pair.lr.t2m.shape
((1095, 64, 128), (1095, 16, 32))
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import xarray as xr

from engine.data.catalog import open_dataset, standardise
from engine.data.errors import DataError
from engine.data.predictors import external_predictors, inputs, target_view
from engine.data.regrid import block_mean, cell_edges, regrid
from engine.data.static import static_fields
from engine.data.timeaxis import check_times, fmt_times, match_times, time_index


@dataclass
class PairedData:
    """A paired downscaling problem in physical units, lazy: ``lr`` and ``hr`` are dask-backed float32
    (read block by block downstream); ``static`` and ``mask`` are in memory.

    Attributes
    ----------
    lr : xr.Dataset
        The target variable (same name) and the predictors, ``(time, h, w)`` on the low-resolution
        grid, exactly ``scale`` times coarser than ``hr`` (``h = H / scale``). May hold NaN.
    hr : xr.DataArray
        The target ``(time, H, W)``. NaN where missing (e.g. sea for a land-only dataset).
    static : xr.Dataset
        Static fields ``(H, W)`` on the target grid (may have no variables).
    mask : xr.DataArray
        ``(H, W)`` bool, True where the target has a value at some time step (the domain's valid
        support); per-time-step validity is ``hr.notnull()``.
    scale : int
        The resolution factor.
    """

    lr: xr.Dataset
    hr: xr.DataArray
    static: xr.Dataset
    mask: xr.DataArray
    scale: int
    variable: str = "t2m"
    predictors: tuple[str, ...] = ()
    downscaling: str = "perfectprog"
    highres: str = ""
    lowres: str | None = None
    attrs: dict = field(default_factory=dict)
    target_as_input: bool = True  #: False: the model input is the predictors only (emulation)

    @property
    def times(self) -> pd.Index:
        """The paired time steps: a DatetimeIndex, or a CFTimeIndex for cftime calendars."""
        return time_index(self.hr.time)

    @property
    def lr_channels(self) -> list[str]:
        """Names of the model's low-resolution input channels: the variable first (unless
        ``target_as_input`` is False), then the predictors."""
        return [self.variable, *self.predictors] if self.target_as_input else list(self.predictors)


def _box(ds) -> tuple[float, float, float, float]:
    """(lat_min, lat_max, lon_min, lon_max) of the grid cells' outer edges."""
    la, lo = ds.lat.values, ds.lon.values
    if la.size < 2 or lo.size < 2:
        return float(la.min()), float(la.max()), float(lo.min()), float(lo.max())
    ey, ex = cell_edges(la), cell_edges(lo)
    return float(ey[0]), float(ey[-1]), float(ex[0]), float(ex[-1])


def _fmt_box(b) -> str:
    return f"lat {b[0]:.4g}..{b[1]:.4g}, lon {b[2]:.4g}..{b[3]:.4g}"


def _fmt_times(t) -> str:
    return fmt_times(t)


def _check_vars(ds: xr.Dataset, names, entry: str, role: str) -> None:
    have = sorted(ds.data_vars)
    for n in names:
        if n not in ds.data_vars:
            raise DataError(f"{role} variable {n!r} is not in entry {entry!r}; its variables: {', '.join(have)}")
        if "lat" not in ds[n].dims or "lon" not in ds[n].dims or "time" not in ds[n].dims:
            raise DataError(f"{role} variable {n!r} of entry {entry!r} has dims {ds[n].dims}; expected (time, lat, lon)")


def _cut_bbox(ds: xr.Dataset, bbox, entry: str) -> xr.Dataset:
    if bbox is None:
        return ds
    lat_min, lat_max, lon_min, lon_max = bbox
    out = ds.sel(lat=slice(lat_min, lat_max), lon=slice(lon_min, lon_max))
    if out.sizes["lat"] == 0 or out.sizes["lon"] == 0:
        raise DataError(
            f"data.bbox={tuple(bbox)} contains no grid cell of entry {entry!r}, whose grid covers {_fmt_box(_box(ds))}"
        )
    return out


def _check_divisible(hr: xr.DataArray, scale: int, entry: str) -> None:
    ny, nx = hr.sizes["lat"], hr.sizes["lon"]
    if ny % scale == 0 and nx % scale == 0:
        return
    ny2, nx2 = ny - ny % scale, nx - nx % scale
    if ny2 == 0 or nx2 == 0:
        raise DataError(f"the grid of entry {entry!r} ({ny} x {nx}) is smaller than data.scale={scale}")
    ey, ex = cell_edges(hr.lat.values), cell_edges(hr.lon.values)
    # a box that keeps the first ny2 x nx2 cells (its edges sit between cell centres)
    suggestion = [round(float(v), 4) for v in (ey[0], ey[ny2], ex[0], ex[nx2])]
    raise DataError(
        f"data.scale={scale} does not divide the grid of entry {entry!r}: {ny} x {nx} (lat x lon); "
        f"both sizes must be multiples of {scale}. Cut the domain with data.bbox, e.g. "
        f"bbox: {suggestion} ({ny2} x {nx2})"
    )


def make_pair(data_cfg, highres: xr.Dataset | None = None, lowres: xr.Dataset | None = None) -> PairedData:
    """Build the paired data that ``data_cfg`` (a :class:`engine.config.DataConfig`) describes.

    Parameters
    ----------
    data_cfg : DataConfig
        Uses ``highres, variable, downscaling, lowres, scale, predictors, static, bbox, catalog``.
    highres, lowres : xr.Dataset, optional
        Datasets to use instead of opening the catalogue entries (tests, a user's own data).

    Returns
    -------
    PairedData
        Lazy (dask-backed float32 ``lr``, ``hr``; nothing is read but the target's first chunk and
        one streaming pass for ``mask``).

    Raises
    ------
    DataError
        unknown entry or variable, a scale that does not divide the grid (PerfectProg), no common
        time steps or a target box outside the input box (MOS), a target that is all NaN.
    """
    cfg = data_cfg
    scale = int(cfg.scale)
    if scale < 1:
        raise DataError(f"data.scale={cfg.scale!r} is not valid; expected an integer >= 1")
    hr_name = cfg.highres if highres is None else getattr(cfg, "highres", "highres")
    hr_ds = open_dataset(cfg.highres, cfg.catalog) if highres is None else standardise(highres, "highres dataset")
    _check_vars(hr_ds, [cfg.variable], hr_name, "target")
    hr_ds = _cut_bbox(hr_ds, cfg.bbox, hr_name)
    check_times(hr_ds.time, f"entry {hr_name!r}")
    # units of the target; predictors, levels, name map and units of the input (engine.data.predictors)
    hr_ds = target_view(cfg, hr_ds, hr_name, from_catalog=highres is None)
    target_units = hr_ds[cfg.variable].attrs.get("units")

    if cfg.downscaling == "perfectprog":
        ins = inputs(cfg, hr_ds, hr_name, highres is None, target_units, is_target_entry=True)
        hr_ds, predictors = ins.ds, tuple(p for p in ins.predictors if p in ins.ds)
        _check_vars(hr_ds, predictors, hr_name, "predictor")
        hr_vars = _load(hr_ds[[cfg.variable, *[p for p in predictors if p != cfg.variable]]], hr_name)
        hr = hr_vars[cfg.variable]
        _check_target(hr, hr_name)
        _check_divisible(hr, scale, hr_name)
        lr = block_mean(hr_vars, scale)
        lr_name = None
    elif cfg.downscaling == "mos":
        if not cfg.lowres and lowres is None:
            raise DataError("data.downscaling='mos' needs data.lowres, the low-resolution catalogue entry")
        lr_name = cfg.lowres or "lowres"
        lr_ds = open_dataset(cfg.lowres, cfg.catalog) if lowres is None else standardise(lowres, "lowres dataset")
        ins = inputs(cfg, lr_ds, lr_name, lowres is None, target_units, is_target_entry=False)
        lr_ds, predictors = ins.ds, tuple(p for p in ins.predictors if p in ins.ds)
        _check_vars(lr_ds, [*[cfg.variable][: cfg.variable in lr_ds], *predictors], lr_name, "input")
        check_times(lr_ds.time, f"entry {lr_name!r}")
        # common steps by calendar date at the data's frequency (00:00 and 12:00 daily stamps pair)
        hr_pos, lr_pos = match_times(hr_ds.time, lr_ds.time, f"entry {hr_name!r}", f"entry {lr_name!r}")
        hr_box, lr_box = _box(hr_ds), _box(lr_ds)
        tol = 1e-6
        inside = (
            hr_box[0] >= lr_box[0] - tol
            and hr_box[1] <= lr_box[1] + tol
            and hr_box[2] >= lr_box[2] - tol
            and hr_box[3] <= lr_box[3] + tol
        )
        if not inside:
            raise DataError(
                f"the high-resolution box of {hr_name!r} ({_fmt_box(hr_box)}) does not lie inside the "
                f"low-resolution box of {lr_name!r} ({_fmt_box(lr_box)}); cut it with data.bbox"
            )
        hr = _load(hr_ds[[cfg.variable]].isel(time=hr_pos), hr_name)[cfg.variable]
        _check_target(hr, hr_name)
        _check_divisible(hr, scale, hr_name)
        # The intermediate grid: centres of scale x scale blocks of the target grid.
        ilat = hr.lat.values.reshape(-1, scale).mean(axis=1)
        ilon = hr.lon.values.reshape(-1, scale).mean(axis=1)
        # Load only the neighbourhood of the target box (matters for large lazy archives).
        dlat = abs(float(np.diff(lr_ds.lat.values[:2])[0])) if lr_ds.sizes["lat"] > 1 else 1.0
        dlon = abs(float(np.diff(lr_ds.lon.values[:2])[0])) if lr_ds.sizes["lon"] > 1 else 1.0
        near = lr_ds[[*[cfg.variable][: cfg.variable in lr_ds], *predictors]].isel(time=lr_pos).sel(
            lat=slice(hr_box[0] - 2 * dlat, hr_box[1] + 2 * dlat),
            lon=slice(hr_box[2] - 2 * dlon, hr_box[3] + 2 * dlon),
        )
        near = _load(near, lr_name)
        lr = xr.Dataset({n: regrid(near[n], ilat, ilon).astype(np.float32) for n in near.data_vars})
        lr = lr.assign_coords(time=hr.time.values)
        for n in lr.data_vars:
            lr[n].attrs = dict(lr_ds[n].attrs)
    else:
        raise DataError(f"data.downscaling={cfg.downscaling!r} is not valid; accepted: perfectprog, mos")

    if ins.external:  # predictors from their own entries, on their own grids -> the LR grid
        lr = lr.assign(external_predictors(cfg, ins.external, time_index(hr.time), lr, ins.sources))
    predictors = ins.predictors
    lr = lr[[*[cfg.variable][: cfg.variable in lr], *predictors]].transpose("time", "lat", "lon")
    static = static_fields(hr.lat.values, hr.lon.values, tuple(cfg.static))
    static = static.assign_coords(lat=hr.lat, lon=hr.lon)
    # The domain's valid support: one streaming pass over the target (chunk by chunk, never whole).
    mask = _compute(hr.notnull().any("time"), hr_name).rename("mask")
    mask.attrs = {"long_name": "target has data (True = valid)"}
    return PairedData(
        lr=lr,
        hr=hr.transpose("time", "lat", "lon"),
        static=static,
        mask=mask,
        scale=scale,
        variable=cfg.variable,
        predictors=tuple(predictors),
        target_as_input=bool(getattr(cfg, "target_as_input", True)),
        downscaling=cfg.downscaling,
        highres=hr_name,
        lowres=lr_name,
        attrs={"bbox": tuple(cfg.bbox) if cfg.bbox is not None else None},
    )


#: Time-chunk size (bytes) given to data that arrive in memory (numpy-backed), so that every
#: array of a pair is dask-backed and is read block by block downstream.
CHUNK_BYTES = 32 * 2**20


def _load(ds: xr.Dataset, entry: str) -> xr.Dataset:
    """A lazy float32 view of ``ds``: nothing is read here.

    Dask-backed data (an opened file or store) keep their storage chunks and are cast chunk by chunk
    as they are read; numpy-backed data are wrapped in time chunks of about :data:`CHUNK_BYTES`.
    A read failure shows when the data are first computed (:func:`_compute` names the source).
    """
    if any(v.chunks is None for v in ds.data_vars.values()):
        step = sum(4 * int(np.prod([v.sizes[d] for d in v.dims if d != "time"])) for v in ds.data_vars.values())
        ds = ds.chunk({"time": max(1, CHUNK_BYTES // max(step, 1))})
    out = ds.astype(np.float32)
    for v in out.data_vars:  # keep where the data came from, for error messages
        out[v].encoding.setdefault("source", ds[v].encoding.get("source") or ds.encoding.get("source"))
    return out


def _compute(obj, entry: str):
    """``obj.compute()``; a read failure (corrupt file, lost connection) names the entry and source."""
    try:
        return obj.compute()
    except Exception as exc:
        source = obj.encoding.get("source") if hasattr(obj, "encoding") else None
        raise DataError(
            f"could not read the data of entry {entry!r}{f' from {source}' if source else ''}: "
            f"{type(exc).__name__}: {exc}. The file may be truncated or corrupt"
        ) from None


def _time_slices(da: xr.DataArray) -> list[slice]:
    """Slices over ``da``'s time chunks (one slice when it is not dask-backed)."""
    if da.chunks is None:
        return [slice(0, da.sizes["time"])]
    edges = np.cumsum((0,) + tuple(da.chunks[da.get_axis_num("time")]))
    return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def _check_target(hr: xr.DataArray, entry: str) -> None:
    if hr.sizes.get("time", 0) == 0:
        raise DataError(f"target {hr.name!r} of entry {entry!r} has no time steps")
    # Chunk by chunk, stopping at the first value: real data cost one chunk; only an all-NaN target
    # is read whole (and then refused).
    source = hr.encoding.get("source")
    for sl in _time_slices(hr):
        part = hr.isel(time=sl).notnull().any()
        part.encoding["source"] = source
        if bool(_compute(part, entry)):
            return
    raise DataError(
        f"target {hr.name!r} of entry {entry!r} is all NaN over {_fmt_box(_box(hr))}, "
        f"{_fmt_times(hr.time.values)}; check data.bbox and the periods"
    )
