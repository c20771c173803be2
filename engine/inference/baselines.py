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

from typing import Any, Sequence

import numpy as np
import torch
import xarray as xr

from engine.config import BASELINE_NAMES

INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "conservative")
CORRECTIONS = ("bias_cell", "bias_month", "quantile_map")
NAMES = INTERPOLATIONS + CORRECTIONS
assert NAMES == BASELINE_NAMES, "engine.config.BASELINE_NAMES lists the baselines computed here"
MIN_QUANTILE_VALUES = 30
N_QUANTILES = 100
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


class BaselineError(ValueError):
    """A baseline that cannot be computed as asked; the message names the value and the fix."""


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
# Bias corrections
# ---------------------------------------------------------------------------------------
def _months(times) -> np.ndarray:
    return np.asarray(xr.DataArray(np.asarray(times), dims="time").dt.month.values, dtype=int)


class BiasCorrection:
    """A per-cell correction of an interpolated field, fitted on training data.

    Parameters
    ----------
    method : "bias_cell", "bias_month" or "quantile_map"

    ``fit(interp, truth, times)`` takes (T, H, W) arrays (NaN = missing truth);
    ``apply(interp, times)`` returns the corrected (T, H, W) field.
    """

    def __init__(self, method: str):
        if method not in CORRECTIONS:
            raise BaselineError(f"bias correction {method!r} is not valid; accepted: {', '.join(CORRECTIONS)}")
        self.method = method

    def fit(self, interp: np.ndarray, truth: np.ndarray, times) -> "BiasCorrection":
        interp, truth = np.asarray(interp, dtype=np.float64), np.asarray(truth, dtype=np.float64)
        valid = np.isfinite(truth) & np.isfinite(interp)
        count = valid.sum(axis=0)
        diff = np.where(valid, interp - truth, 0.0)
        # Cells with no training truth are outside the mask: no correction there.
        self.bias = np.where(count > 0, diff.sum(axis=0) / np.maximum(count, 1), 0.0)
        if self.method == "bias_month":
            months = _months(times)
            self.monthly = np.repeat(self.bias[None], 13, axis=0)  # index 1..12; fallback: all-period bias
            for m in np.unique(months):
                sel = months == m
                n = valid[sel].sum(axis=0)
                self.monthly[m] = np.where(n > 0, diff[sel].sum(axis=0) / np.maximum(n, 1), self.bias)
        elif self.method == "quantile_map":
            short = (count > 0) & (count < MIN_QUANTILE_VALUES)
            if short.any():
                raise BaselineError(quantile_error(int(count[short].min()), int(short.sum())))
            levels = np.linspace(0.0, 1.0, min(N_QUANTILES, max(int(count.max()), 2)))
            self.q_model = _quantiles(interp, valid, levels)
            self.q_truth = _quantiles(truth, valid, levels)
            self.levels = levels
        return self

    def apply(self, interp: np.ndarray, times) -> np.ndarray:
        interp = np.asarray(interp, dtype=np.float64)
        if self.method == "bias_cell":
            out = interp - self.bias
        elif self.method == "bias_month":
            out = interp - self.monthly[_months(times)]
        else:
            out = self._quantile_map(interp)
        return out.astype(np.float32)

    def _quantile_map(self, interp: np.ndarray) -> np.ndarray:
        """Piecewise-linear map through the (K,) training quantiles of every cell, vectorised:
        exact at the training quantiles; beyond the training range the end corrections are kept
        (additive), not a flat clip."""
        qm, qt = self.q_model, self.q_truth  # (K, H, W)
        K = qm.shape[0]
        known = np.isfinite(qm).all(axis=0)  # cells without training data (outside the mask) stay as they are
        qm = np.where(known, qm, 0.0)
        qt = np.where(known, qt, 0.0)
        # index of the quantile interval of each value: how many quantiles lie at or below it
        idx = np.zeros(interp.shape, dtype=np.int64)
        for k in range(K):
            idx += interp >= qm[k]
        lo = np.clip(idx - 1, 0, K - 2)
        x0, x1 = np.take_along_axis(qm[None], lo[None], 1)[0], np.take_along_axis(qm[None], (lo + 1)[None], 1)[0]
        y0, y1 = np.take_along_axis(qt[None], lo[None], 1)[0], np.take_along_axis(qt[None], (lo + 1)[None], 1)[0]
        width = x1 - x0
        frac = np.where(width > 0, (interp - x0) / np.where(width > 0, width, 1.0), 0.0)
        mapped = y0 + frac * (y1 - y0)
        mapped = np.where(interp < qm[0], interp + (qt[0] - qm[0]), mapped)
        mapped = np.where(interp > qm[-1], interp + (qt[-1] - qm[-1]), mapped)
        return np.where(known, mapped, interp)


def _quantiles(values: np.ndarray, valid: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Per-cell quantiles (K, H, W) of the valid values; NaN where a cell has none. Cells valid at
    every step take the fast vectorised path, the others (a time-varying mask) nanquantile."""
    out = np.full((len(levels), *values.shape[1:]), np.nan)
    full = valid.all(axis=0)
    if full.any():
        out[:, full] = np.quantile(values[:, full], levels, axis=0)
    partial = valid.any(axis=0) & ~full
    if partial.any():
        out[:, partial] = np.nanquantile(np.where(valid[:, partial], values[:, partial], np.nan), levels, axis=0)
    return out


def quantile_error(fewest: int, cells: int) -> str:
    return (f"baseline 'quantile_map' needs at least {MIN_QUANTILE_VALUES} training values in every valid cell; "
            f"{cells} cell(s) have fewer (the fewest: {fewest}). Lengthen data.train_period, or drop "
            f"'quantile_map' from inference.baselines")


# ---------------------------------------------------------------------------------------
# All baselines of a paired problem
# ---------------------------------------------------------------------------------------
def _period_times(times, period) -> np.ndarray:
    """The time steps of ``times`` inside ``period`` ((start, end) ISO strings, inclusive days)."""
    t = xr.DataArray(np.asarray(times), dims="time", coords={"time": np.asarray(times)})
    start, end = period
    return t.sel(time=slice(start, end)).values


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
        self._train: tuple | None = None
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
        times = _period_times(self.pair.hr["time"].values, self.train_period)
        if times.size == 0:
            t = self.pair.hr["time"].values
            raise BaselineError(f"bias-corrected baselines are fitted on data.train_period={self.train_period}, which "
                                f"holds no time step of the data ({str(t[0])[:19]} .. {str(t[-1])[:19]})")
        if "quantile_map" in self.names:
            count = self.pair.hr.sel(time=times).notnull().sum("time").values
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

    def _correction(self, name: str) -> BiasCorrection:
        if name not in self._corrections:
            if self._train is None:  # the training period's interpolation and truth, read once
                times = _period_times(self.pair.hr["time"].values, self.train_period)
                if times.size == 0:
                    self.check()
                self._train = (times, self._interp(times, "bilinear"), np.asarray(self.pair.hr.sel(time=times).values))
            times, interp, truth = self._train
            self._corrections[name] = BiasCorrection(name).fit(interp, truth, times)
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
        """RMSE of each baseline against the truth over ``period`` (valid cells only)."""
        times = _period_times(self.pair.hr["time"].values, period)
        if times.size == 0:
            raise BaselineError(f"period {tuple(period)} holds no time step of the data")
        truth = self.pair.hr.sel(time=times).values
        valid = np.isfinite(truth)
        scores = {}
        for name, field in self.fields(times, names).items():
            err = np.where(valid, field - truth, 0.0)
            scores[name] = float(np.sqrt((err ** 2).sum() / max(int(valid.sum()), 1)))
        return scores

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
