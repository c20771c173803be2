"""Baselines every model is scored against, computed the way MOS users compute them.

Interpolations start from the **native** low-resolution input (the ``lowres`` entry's own grid
for MOS; the block-mean coarsened target for PerfectProg), never from the intermediate grid the
network sees, and are evaluated at every target cell's position:

- ``nearest``, ``bilinear``, ``bicubic``: PyTorch ``grid_sample`` (Keys cubic, a = -0.75, the
  kernel of ``F.interpolate``) at the fractional index of each target cell in the source grid;
- ``conservative``: the area-overlap mean of :func:`engine.data.regrid.conservative`, offered
  when the regridding module has it and both grids are regular latitude/longitude.

Bias-corrected interpolations (the usual MOS references), fitted on the **training period only**
on top of the bilinear interpolation, per target cell:

- ``bias_cell``: the mean bias (interpolation - truth) removed;
- ``bias_month``: the mean bias of each calendar month removed (months missing from the
  training period use the all-period bias);
- ``quantile_map``: empirical quantile mapping (the BCSD-style reference): the value's quantile
  among the training interpolations maps to the same quantile of the training truth (linear
  between the quantiles; beyond the training range the end correction is kept). Needs at least
  :data:`MIN_QUANTILE_VALUES` training values in every valid cell.

The corrections are fitted in one streaming pass over the training period, a time block at a
time (:mod:`engine.inference.corrections`: exact means; quantiles from every training step, or
from an evenly spaced sample of steps when a very long period at a fine grid would not fit), and
the validation RMSE of :meth:`Baselines.best` is summed block by block, so memory is bounded by a
block (:data:`BLOCK_BYTES`) whatever the length of the periods.

:class:`Baselines` computes them for any period and names the best one on the validation
period: the headline reference of tables, the CLI and ``status.json``.

Example
-------
>>> b = Baselines(pair, train_period=("2001-01-01", "2002-12-31"))    # doctest: +SKIP
>>> fields = b.fields(pair.hr.time.sel(time=slice("2003-07", "2003-12")).values)  # doctest: +SKIP
>>> b.best(("2003-01-01", "2003-06-30"))                                 # doctest: +SKIP
('quantile_map', {'nearest': 2.9, ..., 'quantile_map': 2.0})
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import numpy as np
import torch
import xarray as xr

from engine.config import BASELINE_NAMES
from engine.registry import BASELINES
from engine.inference.corrections import (  # noqa: F401  (part of this module's interface)
    CORRECTIONS,
    MIN_QUANTILE_VALUES,
    N_QUANTILES,
    BaselineError,
    BiasCorrection,
    CorrectionFit,
    quantile_error,
)

INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "conservative")
NAMES = INTERPOLATIONS + CORRECTIONS
assert NAMES == BASELINE_NAMES, "engine.config.BASELINE_NAMES lists the baselines computed here"
DESCRIPTIONS = {
    "nearest": "nearest-neighbour interpolation of the native low-resolution input",
    "bilinear": "bilinear interpolation of the native low-resolution input",
    "bicubic": "bicubic interpolation of the native low-resolution input",
    "conservative": "conservative (area-weighted) remapping of the native low-resolution input",
    "bias_cell": "bilinear interpolation minus its mean bias per cell (fitted on the training period)",
    "bias_month": "bilinear interpolation minus its mean bias per cell and calendar month (training period)",
    "quantile_map": "bilinear interpolation quantile-mapped per cell onto the truth (training period; BCSD-style)",
}
_BLOCK = 64  # time steps interpolated at a time (bounds memory on long periods)
#: Bytes of one block of the training and validation passes (fits and validation RMSE).
BLOCK_BYTES = 256 * 2**20
#: Bytes per target cell and time step in those passes: truth, interpolations and corrections
#: (float32), float64 temporaries.
_CELL_BYTES = 96


def check_names(names: Sequence[str] | None) -> tuple[str, ...]:
    """``names`` as a tuple of known baseline names (None = all)."""
    if names is None:
        return NAMES
    if isinstance(names, str):
        names = (names,)
    for name in names:
        if name not in NAMES:
            raise BaselineError(f"baseline {name!r} is not valid; accepted: {', '.join(NAMES)}")
    return tuple(names)


# ---------------------------------------------------------------------------------------
# Grids
# ---------------------------------------------------------------------------------------
def _spatial_dims(obj) -> tuple[str, str]:
    try:  # the grid contract's one place that knows (engine/data/grid.py)
        from engine.data.grid import spatial_dims
        return tuple(spatial_dims(obj))
    except ImportError:
        return ("lat", "lon")


def _target_latlon(hr: xr.DataArray) -> tuple[np.ndarray, np.ndarray]:
    try:
        from engine.data.grid import latlon
        lat, lon = latlon(hr)
        return np.asarray(lat, dtype=float), np.asarray(lon, dtype=float)
    except ImportError:
        lat2, lon2 = np.meshgrid(hr["lat"].values, hr["lon"].values, indexing="ij")
        return lat2.astype(float), lon2.astype(float)


def _fill_nan(values: np.ndarray) -> np.ndarray:
    """NaN in the source (e.g. sea in a land-only product) filled from the nearest valid cell, so
    that it does not spread into valid target cells; cells NaN at some steps only take that
    step's mean."""
    valid = np.isfinite(values)
    if valid.all():
        return values
    from scipy import ndimage

    ever = valid.any(axis=0)
    out = values.copy()
    if ever.any() and not ever.all():
        idx = ndimage.distance_transform_edt(~ever, return_distances=False, return_indices=True)
        out = out[:, idx[0], idx[1]]
    still = ~np.isfinite(out)
    if still.any():
        means = np.nanmean(np.where(np.isfinite(out), out, np.nan), axis=(1, 2), keepdims=True) if ever.any() else 0.0
        out = np.where(still, np.broadcast_to(np.nan_to_num(means), out.shape), out)
    return out


def interpolate(source: xr.DataArray, target: xr.DataArray, method: str) -> np.ndarray:
    """``source`` (time, a, b) on its own grid, interpolated to every cell of ``target`` (time?, H, W).

    Returns float32 (T, H, W) with T = the source's time steps.
    """
    if method == "conservative":
        return _conservative(source, target)
    if method not in ("nearest", "bilinear", "bicubic"):
        raise BaselineError(f"interpolation {method!r} is not valid; accepted: {', '.join(INTERPOLATIONS)}")
    sdims = _spatial_dims(source)
    source = source.transpose("time", *sdims)
    # every target cell located in the source grid through its true position (engine.data.grid:
    # any pair of grids, e.g. a rotated-pole input under a Lambert target)
    from engine.data import grid as _grid

    lat, lon = _grid.latlon(target)
    f0, f1 = _grid.fractional_index(_grid.describe(source), lat, lon)
    p0 = f0
    h, w = source.shape[1:]
    # grid_sample wants (x, y) in [-1, 1] with align_corners=True: -1 = first centre, 1 = last.
    gx = 2.0 * f1 / max(w - 1, 1) - 1.0
    gy = 2.0 * f0 / max(h - 1, 1) - 1.0
    grid = torch.from_numpy(np.stack([gx, gy], axis=-1).astype(np.float32))[None]  # (1, H, W, 2)
    values = _fill_nan(source.values.astype(np.float32))
    out = []
    for start in range(0, values.shape[0], _BLOCK):
        block = torch.from_numpy(np.ascontiguousarray(values[start:start + _BLOCK]))[:, None]
        g = grid.expand(block.shape[0], *grid.shape[1:])
        out.append(torch.nn.functional.grid_sample(block, g, mode=method, padding_mode="border",
                                                   align_corners=True)[:, 0].numpy())
    return np.concatenate(out, axis=0) if out else np.zeros((0, *p0.shape), np.float32)


def conservative_available(source: xr.DataArray, target: xr.DataArray) -> bool:
    """Conservative remapping is offered for regular lat/lon source and target grids."""
    from engine.data import regrid

    return (hasattr(regrid, "conservative") and tuple(_spatial_dims(source)) == ("lat", "lon")
            and tuple(_spatial_dims(target)) == ("lat", "lon") and target["lat"].ndim == 1)


def _conservative(source: xr.DataArray, target: xr.DataArray) -> np.ndarray:
    from engine.data import regrid

    if not conservative_available(source, target):
        raise BaselineError("baseline 'conservative' needs regular latitude/longitude source and target grids; "
                            f"got source axes {_spatial_dims(source)} and target axes {_spatial_dims(target)}")
    out = regrid.conservative(source.transpose("time", "lat", "lon"), target["lat"].values, target["lon"].values)
    return np.asarray(out.values, dtype=np.float32)


# ---------------------------------------------------------------------------------------
# The native input
# ---------------------------------------------------------------------------------------
def native_input(pair, data_cfg=None) -> tuple[xr.DataArray, str]:
    """The low-resolution target variable on its native grid, and where it came from.

    PerfectProg: the coarsened target (``pair.lr``), which is the native input. MOS: the
    ``lowres`` entry reopened (variable ``data.variable_map[variable]`` when the configuration names
    one), cut to the target's neighbourhood, at the paired time steps, in the target's units.
    """
    variable = pair.variable
    if not getattr(pair, "lowres", None) or pair.downscaling != "mos":
        return pair.lr[variable], "the coarsened target (PerfectProg input)"
    from engine.data.catalog import open_dataset

    catalog = getattr(data_cfg, "catalog", None)
    ds = open_dataset(pair.lowres, catalog)
    name = dict(getattr(data_cfg, "variable_map", None) or {}).get(variable, variable)  # {tg: tas}: E-OBS vs reanalysis
    if name not in ds.data_vars:
        raise BaselineError(f"variable {name!r} is not in the lowres entry {pair.lowres!r}; its variables: "
                            f"{', '.join(map(str, ds.data_vars))}")
    da = ds[name]
    sdims = _spatial_dims(da)
    if tuple(sdims) == ("lat", "lon"):  # load the neighbourhood of the target only
        lat, lon = _target_latlon(pair.hr)
        margin = 3 * max(_spacing(da["lat"].values), _spacing(da["lon"].values))
        lat_sel = slice(np.nanmin(lat) - margin, np.nanmax(lat) + margin)
        da = da.sel(lat=lat_sel)
        lon_axis = da["lon"].values
        lon_pts = lon_axis[0] + np.mod(lon - lon_axis[0], 360.0)
        if np.nanmax(lon_pts) - np.nanmin(lon_pts) < 180:  # no wrap through the cut: cut longitudes too
            da = da.sel(lon=slice(np.nanmin(lon_pts) - margin, np.nanmax(lon_pts) + margin))
    try:  # pair by calendar date as the pairing does (00:00 and 12:00 daily stamps pair)
        from engine.data.timeaxis import match_times
    except ImportError:
        da = da.sel(time=pair.hr["time"].values)
    else:
        hr_pos, lr_pos = match_times(pair.hr["time"], da["time"], "the target", f"entry {pair.lowres!r}")
        if hr_pos.size != pair.hr.sizes["time"]:
            raise BaselineError(f"entry {pair.lowres!r} lacks {pair.hr.sizes['time'] - hr_pos.size} of the paired time steps")
        da = da.isel(time=lr_pos).assign_coords(time=pair.hr["time"].values[hr_pos])
    da = da.astype(np.float32).load()
    da = _to_units(da, pair.hr.attrs.get("units"))
    return da, f"entry {pair.lowres!r} on its native grid"


def _spacing(axis: np.ndarray) -> float:
    axis = np.asarray(axis, dtype=float)
    return float(np.abs(np.diff(axis)).max()) if axis.size > 1 else 1.0


def _to_units(da: xr.DataArray, units: str | None) -> xr.DataArray:
    have = da.attrs.get("units")
    if not units or not have or have == units:
        return da
    try:
        from cf_xarray.units import units as ureg
        values = ureg.Quantity(da.values, have).to(units).magnitude
    except Exception as exc:  # units pint cannot read or convert: say so, never guess
        raise BaselineError(f"the native input is in {have!r} and the target in {units!r}; cannot convert: {exc}") from None
    return da.copy(data=values.astype(np.float32)).assign_attrs(units=units)


# ---------------------------------------------------------------------------------------
# All baselines of a paired problem
# ---------------------------------------------------------------------------------------
def _period_times(times, period) -> np.ndarray:
    """The time steps of ``times`` inside ``period`` ((start, end) ISO strings, inclusive days)."""
    return np.asarray(times)[_period_positions(times, period)]


def _period_positions(times, period) -> np.ndarray:
    """Positions in ``times`` of the steps inside ``period`` (no data read)."""
    times = np.asarray(times)
    t = xr.DataArray(np.arange(times.size), dims="time", coords={"time": times})
    start, end = period
    return np.asarray(t.sel(time=slice(start, end)).values, dtype=np.int64)


class Baselines:
    """Every baseline of one paired problem (see the module docstring).

    Parameters
    ----------
    pair : :class:`engine.data.pairing.PairedData`
    names : baselines to compute (default all that the grids allow)
    train_period : (start, end) the bias corrections are fitted on; required for them
    data_cfg : the run's DataConfig (catalogue, ``variable_map``) to reopen the native input
    native : the native input to use instead (time, a, b), e.g. a user's own low-resolution data
    """

    def __init__(self, pair, names: Sequence[str] | None = None, train_period: Sequence[str] | None = None,
                 data_cfg=None, native: xr.DataArray | None = None):
        self.pair, self.data_cfg = pair, data_cfg
        self.names = check_names(names)
        self.train_period = tuple(train_period) if train_period is not None else None
        self._native = native
        self._source_note = "given" if native is not None else None
        self._corrections: dict[str, BiasCorrection] = {}
        if any(n in CORRECTIONS for n in self.names) and self.train_period is None:
            asked = ", ".join(n for n in self.names if n in CORRECTIONS)
            raise BaselineError(f"bias-corrected baselines ({asked}) are fitted on the training period, and none was "
                                "given; pass train_period=(start, end) (data.train_period), or ask only for "
                                f"{', '.join(INTERPOLATIONS)}")

    # -- checks before any work ------------------------------------------------------------
    def check(self) -> None:
        """Refuse, before any training or prediction, what cannot be fitted: a training period
        without time steps, quantile mapping with fewer than 30 training values in a cell."""
        if not any(n in CORRECTIONS for n in self.names):
            return
        positions = _period_positions(self.pair.hr["time"].values, self.train_period)
        if positions.size == 0:
            t = self.pair.hr["time"].values
            raise BaselineError(f"bias-corrected baselines are fitted on data.train_period={self.train_period}, which "
                                f"holds no time step of the data ({str(t[0])[:19]} .. {str(t[-1])[:19]})")
        if "quantile_map" in self.names:
            from engine.data.blocks import take
            from engine.data.datapass import times_key

            pre = getattr(self.pair, "prepass", None)  # pairing's one pass counted them (engine.data.datapass)
            if pre is not None and pre.count is not None and pre.train_key == times_key(self.pair.hr["time"].values[positions]):
                count = pre.count
            else:
                count = take(self.pair.hr, positions).notnull().sum("time").values  # lazily, chunk by chunk
            short = (count > 0) & (count < MIN_QUANTILE_VALUES)
            if short.any():
                raise BaselineError(quantile_error(int(count[short].min()), int(short.sum())))

    # -- fields ----------------------------------------------------------------------------
    @property
    def native(self) -> xr.DataArray:
        if self._native is None:
            self._native, self._source_note = native_input(self.pair, self.data_cfg)
        return self._native

    @property
    def source(self) -> str:
        """Where the interpolations start from (for the predictions' attributes)."""
        _ = self.native
        return str(self._source_note)

    def available(self) -> tuple[str, ...]:
        """The requested names this pair's grids allow (``conservative`` needs lat/lon grids)."""
        return tuple(n for n in self.names if n != "conservative" or conservative_available(self.native, self.pair.hr))

    def _interp(self, times, method: str) -> np.ndarray:
        return interpolate(self.native.sel(time=np.asarray(times)), self.pair.hr, method)

    def _blocks(self, positions: np.ndarray) -> list[np.ndarray]:
        """``positions`` (in ``pair.hr``'s time) in blocks of at most :data:`BLOCK_BYTES`, aligned
        to the target's storage chunks (:mod:`engine.data.blocks`)."""
        from engine.data.blocks import plan
        from engine.inference.predict import block_chunk

        per_step = _CELL_BYTES * int(np.prod(self.pair.hr.shape[1:]))
        return plan(positions, block_chunk(self.pair.hr, per_step, BLOCK_BYTES), per_step, BLOCK_BYTES)

    def _truth(self, positions: np.ndarray) -> np.ndarray:
        from engine.data.blocks import take

        return np.asarray(take(self.pair.hr, positions).values, dtype=np.float32)

    def _correction(self, name: str) -> BiasCorrection:
        if name not in self._corrections:
            # every asked correction fitted together in one streaming pass over the training
            # period, a block at a time (engine.inference.corrections)
            positions = _period_positions(self.pair.hr["time"].values, self.train_period)
            if positions.size == 0:
                self.check()
            methods = [n for n in self.names if n in CORRECTIONS and n not in self._corrections and n != name]
            fit = CorrectionFit([name, *methods], self.pair.hr.shape[1:], positions.size)
            all_times = self.pair.hr["time"].values
            for block in self._blocks(positions):
                times = all_times[block]
                fit.add(self._interp(times, "bilinear"), self._truth(block), times)
            self._corrections.update(fit.finish())
        return self._corrections[name]

    def fields(self, times, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Baseline fields (T, H, W) float32 at ``times`` (physical units, unmasked)."""
        names = self.available() if names is None else check_names(names)
        out: dict[str, np.ndarray] = {}
        bilinear = None
        for name in names:
            if name in CORRECTIONS:
                if bilinear is None:
                    bilinear = out.get("bilinear")
                    if bilinear is None:
                        bilinear = self._interp(times, "bilinear")
                out[name] = self._correction(name).apply(bilinear, times)
            else:
                out[name] = self._interp(times, name)
                if name == "bilinear":
                    bilinear = out[name]
        return out

    def rmse(self, period: Sequence[str], names: Sequence[str] | None = None) -> dict[str, float]:
        """RMSE of each baseline against the truth over ``period`` (valid cells only), read a
        block at a time (float64 sums of squared errors)."""
        positions = _period_positions(self.pair.hr["time"].values, period)
        if positions.size == 0:
            raise BaselineError(f"period {tuple(period)} holds no time step of the data")
        all_times = self.pair.hr["time"].values
        sse: dict[str, float] = {}
        n = 0
        for block in self._blocks(positions):
            truth = self._truth(block)
            valid = np.isfinite(truth)
            n += int(valid.sum())
            for name, field in self.fields(all_times[block], names).items():
                err = np.where(valid, field.astype(np.float64) - truth, 0.0)
                sse[name] = sse.get(name, 0.0) + float(np.einsum("ijk,ijk->", err, err))
        return {name: float(np.sqrt(value / max(n, 1))) for name, value in sse.items()}

    def best(self, period: Sequence[str]) -> tuple[str, dict[str, float]]:
        """The baseline with the lowest RMSE over ``period`` (the validation period), and all RMSEs."""
        scores = self.rmse(period)
        return min(scores, key=scores.get), scores


def for_config(cfg, pair, names: Sequence[str] | None = None) -> Baselines:
    """The :class:`Baselines` of a run's configuration (``inference.baselines``, ``data.train_period``)."""
    if names is None:
        names = getattr(cfg.inference, "baselines", None)
    return Baselines(pair, names, train_period=cfg.data.train_period, data_cfg=cfg.data)


def check_config(cfg, pair) -> None:
    """Raise :class:`BaselineError` before training when the configured baselines cannot be fitted."""
    for_config(cfg, pair).check()


def parse_val_rmse(text: str) -> dict[str, float]:
    """``"a=1.2; b=3"`` (the ``baseline_val_rmse`` attribute) -> ``{"a": 1.2, "b": 3.0}``."""
    out = {}
    for part in str(text or "").split(";"):
        key, sep, value = part.strip().partition("=")
        if sep:
            out[key] = float(value)
    return out


def describe(name: str) -> str:
    return DESCRIPTIONS.get(name, name)


# The registry of baselines (engine.registry.BASELINES): every name this module computes, the
# interpolations as ``interpolate(source, target, method=name)``, the corrections as their class.
for _name in NAMES:
    BASELINES.register(_name, description=DESCRIPTIONS[_name],
                       kind="interpolation" if _name in INTERPOLATIONS else "correction")(
        functools.partial(interpolate, method=_name) if _name in INTERPOLATIONS
        else functools.partial(BiasCorrection, _name))
