"""Pairing: the low-resolution input and the high-resolution target of a downscaling problem.

Two ways (``data.downscaling``):

- ``perfectprog`` (perfect prognosis): the input is the target itself, block-mean coarsened by
  ``scale`` in its native ``(y, x)`` or ``(lat, lon)`` (NaN-aware: a block's mean over its valid
  cells).
- ``mos`` (model output statistics): the input comes from another catalogue entry (``data.lowres``,
  e.g. a GCM or reanalysis) at any resolution and on any grid. Only the time steps both have are
  kept; the target's true footprint must lie inside the input's (checked in any projection). The
  input is regridded onto an intermediate grid exactly ``scale`` times coarser than the target
  (the block centres of the target grid, in the target's projection) with ``data.regrid_method``
  (:mod:`engine.data.regrid`; ``auto``: an area mean when the source is finer than that grid,
  bilinear when coarser), so a non-integer resolution ratio (0.3 degree -> 1/12 degree with
  scale 4) and a rotated-pole GCM under a Lambert-conformal target both work.

Any target size works with any scale: a grid that is not a multiple of ``scale`` is padded at its
ends with invalid (NaN, masked) cells whose coordinates continue the grid, and a log message says
so; ``PairedData.padding`` records it and :func:`unpad` cuts predictions back to the original grid.

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

from engine.data import passcache
from engine.data.catalog import open_dataset, standardise
from engine.data.validity import apply_missing_input_policy
from engine.data.errors import DataError
from engine.data.predictors import external_predictors, inputs, target_view
from engine.data import grid
from engine.data.regrid import block_mean, choose_method, regrid_to
from engine.data.static import static_on
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
    #: how the target grid was padded to a multiple of ``scale``: ``{"dims", "shape" (original), "pad"
    #: (rows, columns added at the ends)}``; :func:`unpad` cuts arrays back to the original grid.
    padding: dict = field(default_factory=dict)
    #: the streaming pass pairing made (:class:`engine.data.datapass.PassResult`): the mask, and the
    #: moments of the configured normalisation over the training period that ``Normaliser.fit`` reuses
    prepass: object = field(default=None, repr=False, compare=False)

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
    """(lat_min, lat_max, lon_min, lon_max) of the grid cells' outer edges, on any grid."""
    return grid.footprint(grid.describe(ds))


def _fmt_box(b) -> str:
    return f"lat {b[0]:.4g}..{b[1]:.4g}, lon {b[2]:.4g}..{b[3]:.4g}"


def _fmt_times(t) -> str:
    return fmt_times(t)


def _check_vars(ds: xr.Dataset, names, entry: str, role: str) -> None:
    have = sorted(ds.data_vars)
    for n in names:
        if n not in ds.data_vars:
            raise DataError(f"{role} variable {n!r} is not in entry {entry!r}; its variables: {', '.join(have)}")
        dims = grid.spatial_dims(ds)
        if not set(dims) <= set(ds[n].dims) or "time" not in ds[n].dims:
            raise DataError(f"{role} variable {n!r} of entry {entry!r} has dims {ds[n].dims}; expected (time, {', '.join(dims)})")


def _cut_bbox(ds: xr.Dataset, bbox, entry: str) -> xr.Dataset:
    if bbox is None:
        return ds
    lat_min, lat_max, lon_min, lon_max = bbox
    ydim, xdim = grid.spatial_dims(ds)
    if ydim == "lat":
        out = ds.sel(lat=slice(lat_min, lat_max), lon=slice(lon_min, lon_max))
    else:  # the smallest (y, x) rectangle holding every cell whose centre is in the box
        lat, lon = grid.latlon(ds)
        lon = lon_min + np.mod(lon - lon_min, 360.0)
        rows, cols = np.nonzero((lat >= lat_min) & (lat <= lat_max) & (lon <= lon_max))
        out = ds.isel({ydim: slice(rows.min(), rows.max() + 1) if rows.size else slice(0, 0),
                       xdim: slice(cols.min(), cols.max() + 1) if cols.size else slice(0, 0)})
    if out.sizes[ydim] == 0 or out.sizes[xdim] == 0:
        raise DataError(
            f"data.bbox={tuple(bbox)} contains no grid cell of entry {entry!r}, whose grid covers {_fmt_box(_box(ds))}"
        )
    return out


def unpad(obj, pair: "PairedData"):
    """``obj`` (on the paired target grid, possibly padded) cut back to the original target grid."""
    return grid.unpad(obj, pair.padding)


def _neighbourhood(ds: xr.Dataset, src, dst, margin: int = 2) -> xr.Dataset:
    """The part of ``ds`` (on grid ``src``) around grid ``dst``: the index rectangle of ``dst``'s
    footprint in ``src`` plus ``margin`` cells (all columns where it wraps a periodic grid)."""
    lat, lon = grid.boundary(dst)
    fi, fj = grid.fractional_index(src, np.concatenate([lat, dst.lat.ravel()]), np.concatenate([lon, dst.lon.ravel()]))
    ydim, xdim = src.dims
    ny, nx = src.shape
    sel = {ydim: slice(max(int(np.floor(np.nanmin(fi))) - margin, 0), min(int(np.ceil(np.nanmax(fi))) + margin + 1, ny))}
    if not src.periodic or np.nanmax(fj) - np.nanmin(fj) < nx / 2:
        sel[xdim] = slice(max(int(np.floor(np.nanmin(fj))) - margin, 0), min(int(np.ceil(np.nanmax(fj))) + margin + 1, nx))
    return ds.isel(sel)


def _fit_to_scale(hr_vars: xr.Dataset, scale: int, entry: str) -> tuple[xr.Dataset, dict]:
    """Pad the target grid at its ends to a multiple of ``scale`` (padded cells NaN = invalid);
    :func:`engine.data.grid.unpad` with ``PairedData.padding`` cuts arrays back."""
    return grid.pad_to_multiple(hr_vars, scale, f"the grid of entry {entry!r}")


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
    hr_src, hr_dir = hr_ds.encoding.get("finescale_urlpath"), hr_ds.encoding.get("finescale_catalog_dir")
    lr_src = lr_dir = None
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
        _check_target(hr_vars[cfg.variable], hr_name)
        hr_vars, padding = _fit_to_scale(hr_vars, scale, hr_name)
        hr = hr_vars[cfg.variable]
        lr = block_mean(hr_vars, scale)  # perfect prognosis on any grid: block means in the native (y, x)
        lr_name, method = None, "block mean"
    elif cfg.downscaling == "mos":
        if not cfg.lowres and lowres is None:
            raise DataError("data.downscaling='mos' needs data.lowres, the low-resolution catalogue entry")
        lr_name = cfg.lowres or "lowres"
        lr_ds = open_dataset(cfg.lowres, cfg.catalog) if lowres is None else standardise(lowres, "lowres dataset")
        lr_src, lr_dir = lr_ds.encoding.get("finescale_urlpath"), lr_ds.encoding.get("finescale_catalog_dir")
        ins = inputs(cfg, lr_ds, lr_name, lowres is None, target_units, is_target_entry=False)
        lr_ds, predictors = ins.ds, tuple(p for p in ins.predictors if p in ins.ds)
        _check_vars(lr_ds, [*[cfg.variable][: cfg.variable in lr_ds], *predictors], lr_name, "input")
        check_times(lr_ds.time, f"entry {lr_name!r}")
        # common steps by calendar date at the data's frequency (00:00 and 12:00 daily stamps pair)
        hr_pos, lr_pos = match_times(hr_ds.time, lr_ds.time, f"entry {hr_name!r}", f"entry {lr_name!r}")
        # the target's true footprint inside the input's, whatever their projections
        lr_grid = grid.describe(lr_ds)
        grid.check_inside(grid.describe(hr_ds), lr_grid, f"high-resolution box of {hr_name!r}",
                          f"low-resolution box of {lr_name!r}")
        hr = _load(hr_ds[[cfg.variable]].isel(time=hr_pos), hr_name)[cfg.variable]
        _check_target(hr, hr_name)
        hr_vars, padding = _fit_to_scale(hr.to_dataset(), scale, hr_name)
        hr = hr_vars[cfg.variable]
        # The intermediate grid: centres of scale x scale blocks of the target grid (in the
        # target's projection for a projected target).
        inter = grid.block_centres(grid.describe(hr), scale)
        method = choose_method(lr_grid, inter, getattr(cfg, "regrid_method", "auto"))
        # Read only the neighbourhood of the target (matters for large lazy archives).
        near = _neighbourhood(lr_ds[[*[cfg.variable][: cfg.variable in lr_ds], *predictors]].isel(time=lr_pos),
                              lr_grid, inter)
        near = _load(near, lr_name)
        crs_attrs = dict(hr.coords["crs"].attrs) if "crs" in hr.coords else None
        lr = regrid_to(near, inter, method, crs_attrs=crs_attrs).astype(np.float32)
        lr = lr.assign_coords(time=hr.time.values)
        for n in lr.data_vars:
            lr[n].attrs = dict(lr_ds[n].attrs)
    else:
        raise DataError(f"data.downscaling={cfg.downscaling!r} is not valid; accepted: perfectprog, mos")

    if ins.external:  # predictors from their own entries, on their own grids -> the LR grid
        lr = lr.assign(external_predictors(cfg, ins.external, time_index(hr.time), lr, ins.sources))
    predictors = ins.predictors
    dims = grid.spatial_dims(hr)
    lr = lr[[*[cfg.variable][: cfg.variable in lr], *predictors]].transpose("time", *dims)
    static = static_on(hr, tuple(cfg.static))
    hr = hr.transpose("time", *dims)
    # The domain's valid support and the configured normalisation's statistics over the training period:
    # one streaming pass over the target (engine.data.datapass), or its result kept for these files and
    # this configuration (engine.data.passcache).
    sources = [(hr_src, hr_dir)] + ([(lr_src, lr_dir)] if cfg.downscaling == "mos" else [])
    key = passcache.fingerprint(cfg, sources) if highres is None and (lowres is None or cfg.downscaling != "mos") else None
    prepass = passcache.load(key) or _prepass(cfg, hr, lr, hr_name)
    template = hr.isel(time=0, drop=True)
    mask = xr.DataArray(prepass.mask, dims=template.dims, coords=template.coords, name="mask",
                        attrs={"long_name": "target has data (True = valid)"})
    # Missing input where the target has data: refused, or those cells masked (engine.data.validity).
    # PerfectProg: the target's own input channel is its NaN-aware block mean, finite wherever the target
    # has data, so only the other channels can conflict; checking it would be one more full pass over the
    # target (a 30 GiB store: 30 GiB read for nothing).
    checked = lr.drop_vars([cfg.variable]) if cfg.downscaling == "perfectprog" and cfg.variable in lr else lr
    policed = apply_missing_input_policy(checked, hr, mask.transpose(*dims), scale,
                                         getattr(cfg, "missing_input", "refuse"), lr_name or hr_name, hr_name)
    if policed is not hr:  # cells masked out: the statistics of the pass no longer describe the target
        prepass.moments, prepass.count, key = {}, None, None
    # PerfectProg with the target as it was coarsened: its LR channel can be computed from a block of
    # the target in memory (engine.data.datapass.block_mean) instead of coarsening the chunks again
    same_target = cfg.downscaling == "perfectprog" and policed is hr and cfg.variable in lr
    hr = policed
    if prepass.origin != "cache":
        passcache.save(key, prepass)
    return PairedData(
        lr=lr,
        hr=hr.transpose("time", *dims),
        static=static,
        mask=mask,
        scale=scale,
        variable=cfg.variable,
        predictors=tuple(predictors),
        target_as_input=bool(getattr(cfg, "target_as_input", True)),
        downscaling=cfg.downscaling,
        highres=hr_name,
        lowres=lr_name,
        attrs={"bbox": tuple(cfg.bbox) if cfg.bbox is not None else None, "regrid_method": method,
               "lr_block_mean_of_hr": cfg.variable if same_target else None,
               "statistics_sample": getattr(cfg, "statistics_sample", "all")},
        padding=padding,
        prepass=prepass,
    )


#: Time-chunk size (bytes) given to data that arrive in memory (numpy-backed), so that every
#: array of a pair is dask-backed and is read block by block downstream.
CHUNK_BYTES = 32 * 2**20


def _load(ds: xr.Dataset, entry: str) -> xr.Dataset:
    """A lazy float32 view of ``ds``: nothing is read here.

    Dask-backed data (an opened file or store) keep their storage chunks and are cast chunk by chunk
    as they are read; numpy-backed data, and time chunks of more than twice :data:`CHUNK_BYTES` (a
    file stored as one chunk), get time chunks of about :data:`CHUNK_BYTES`: a block of time steps
    then reads (and regrids) only its own steps, since dask pushes the slice down to the file.
    A read failure shows when the data are first computed (:func:`_compute` names the source).
    """
    step = sum(4 * int(np.prod([v.sizes[d] for d in v.dims if d != "time"])) for v in ds.data_vars.values())
    steps = max(1, CHUNK_BYTES // max(step, 1))
    chunked = all(v.chunks is not None for v in ds.data_vars.values())
    longest = max((max(v.chunksizes.get("time", (0,))) for v in ds.data_vars.values() if v.chunks), default=0)
    if "time" in ds.dims and (not chunked or longest > 2 * steps):
        ds = ds.chunk({"time": steps})
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


def _prepass(cfg, hr: xr.DataArray, lr: xr.Dataset, entry: str):
    """The pass over the target: the mask over every step and, when the configuration names a
    normalisation and a training period that hold steps, its moments over those steps (LR variables
    read at the training steps only)."""
    from engine.data import datapass
    from engine.data.splits import period_mask
    from engine.registry import NORMALISATIONS

    import engine.data.normalise  # noqa: F401  (registers the normalisations)

    kind, positions, names = None, np.zeros(0, np.int64), []
    try:
        kind = NORMALISATIONS.get(getattr(cfg, "normalisation", None))
        positions = np.flatnonzero(period_mask(time_index(hr.time), tuple(cfg.train_period), "training period"))
        names = [v for v in lr.data_vars if not (kind.target_shares_hr and v == cfg.variable)]
    except Exception:  # no (valid) normalisation or period: the checks and the fit say so; the mask is still needed
        kind, positions = None, np.zeros(0, np.int64)
    try:
        # PerfectProg: the input target channel is the target's block mean, computed from the block read
        derived = {cfg.variable: int(cfg.scale)} if cfg.downscaling == "perfectprog" else {}
        # data.statistics_sample: every step, or a sample of a large archive's training period
        result = datapass.run_pass(hr, lr, names if positions.size else [], positions, block_means=derived,
                                   sample=getattr(cfg, "statistics_sample", "all"),
                                   monthly=bool(kind and kind.monthly), pixel=bool(kind and kind.pixel))
    except DataError:
        raise
    except Exception as exc:
        source = hr.encoding.get("source")
        raise DataError(
            f"could not read the data of entry {entry!r}{f' from {source}' if source else ''}: "
            f"{type(exc).__name__}: {exc}. The file may be truncated or corrupt"
        ) from None
    if kind is None or not positions.size:
        result.moments, result.count, result.train_key = {}, None, None
    result.origin = "prepass"
    return result


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
