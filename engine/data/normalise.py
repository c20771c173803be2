"""Normalisation of inputs and targets, fitted on the training period only.

The options DeepR compared (ERA5 -> CERRA), plus plain standardisation. Each is a class registered
in :data:`engine.registry.NORMALISATIONS` (``data.normalisation`` names one):

==================== ================================================================================
``global``           one mean/std per variable; the target's low-resolution channel uses the target's
                     high-resolution statistics, so input and target stay on the same scale
``per_pixel``        mean/std per grid cell (LR cells for inputs, HR cells for the target)
``monthly_pixel``    monthly climatology per grid cell (12 x H x W); erases the spatial pattern
``seasonal_pixel``   smooth seasonal climatology per grid cell: the monthly statistics fitted by two
                     annual harmonics of the day of year (5 x H x W), so the seasonal drift within a
                     month is removed too (:mod:`engine.data.seasonal`); monthly steps when the
                     training period lacks a calendar month
``monthly_domain``   monthly climatology over the domain; LR and HR each with their own statistics
``monthly_domain_lr``monthly climatology over the domain; LR and HR both with the LR statistics
``instance``         per sample: mean/std of the LR input over the domain at that time step, applied
                     to the LR channels and to the HR target (DeepR's best spatial pattern)
==================== ================================================================================

Interface (used by :class:`engine.data.torch_dataset.DownscalingDataset`, the trainer, inference):
``fit(pair, train_times)``, ``lr(ds) -> ds`` and ``hr(da) -> da`` to normalised space,
``inverse_hr(array, times)`` back to physical units, ``to_dict()`` / ``from_dict()`` (JSON).
Statistics come from one streaming pass over the training period (:class:`Moments`: float64
accumulators over float32 blocks of bounded size, :mod:`engine.data.blocks`), so fitting never holds
the data, nor a float64 copy of them; ``lr``/``hr`` stay lazy on dask-backed data.
All NaN-aware: NaN stays NaN, statistics ignore it. Standard deviations are floored at 1 % of the
variable's global standard deviation (per-pixel and instance statistics of precipitation are 0 on
dry days or at dry pixels).

Example
-------
>>> norm = create("global").fit(pair, pair.times[:730])      # doctest: +SKIP
>>> y = norm.hr(pair.hr); back = norm.inverse_hr(y.values, pair.times)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd
import xarray as xr

from engine.data.datapass import Moments, run_pass, times_key  # noqa: F401  (Moments re-exported)
from engine.data.errors import DataError
from engine.data.grid import spatial_dims
from engine.data.timeaxis import keys as time_keys
from engine.data.timeaxis import months as month_of
from engine.data.timeaxis import fmt_times, stamp, time_index
from engine.registry import NORMALISATIONS

_FLOOR = 0.01  # std floor, as a fraction of the variable's global std


def _nanstats(a: np.ndarray, axis) -> tuple[np.ndarray, np.ndarray]:
    """NaN-ignoring mean and std along ``axis`` without numpy's empty-slice warnings (all-NaN -> NaN)."""
    a = np.asarray(a, dtype=np.float64)
    valid = np.isfinite(a)
    n = valid.sum(axis=axis)
    filled = np.where(valid, a, 0.0)
    mean = filled.sum(axis=axis) / np.maximum(n, 1)
    dev = np.where(valid, a - np.expand_dims(mean, axis) if np.ndim(mean) else a - mean, 0.0)
    std = np.sqrt((dev**2).sum(axis=axis) / np.maximum(n, 1))
    empty = n == 0
    return np.where(empty, np.nan, mean), np.where(empty, np.nan, std)


def _times(train_times) -> pd.Index:
    if isinstance(train_times, (tuple, list)) and len(train_times) == 2 and all(isinstance(t, str) for t in train_times):
        raise TypeError  # a period; handled by the caller
    return time_index(train_times)  # datetime64 or cftime (any calendar)


class Normaliser:
    """Base class: statistics ``{"lr": {var: (mean, std)}, "hr": (mean, std)}`` and how they apply.

    Subclasses set :attr:`name`, :attr:`monthly`, :attr:`pixel`, :attr:`hr_from_lr` and
    :attr:`target_shares_hr`.
    """

    name = "base"
    monthly = False  #: statistics per calendar month
    pixel = False  #: statistics per grid cell (else over the domain)
    hr_from_lr = False  #: the target uses the LR statistics of its variable
    target_shares_hr = False  #: the target's LR channel uses the HR statistics

    def __init__(self) -> None:
        self.variable: str | None = None
        self.lr_stats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.hr_stats: tuple[np.ndarray, np.ndarray] | None = None
        self.floor: dict[str, float] = {}
        #: where the fitted statistics came from: "pass" (read by fit), "prepass" (pairing's
        #: fused pass), "cache" (engine.data.passcache), "sample"; None before fit
        self.origin: str | None = None
        self.fit_times = None

    # -- fitting ----------------------------------------------------------------------------
    def fit(self, pair, train_times) -> "Normaliser":
        """Fit on ``pair`` (a :class:`~engine.data.pairing.PairedData`) at ``train_times`` only.

        ``train_times``: the training time steps (datetime64 or cftime, any calendar) or an
        inclusive ``(start, end)`` period.
        """
        from engine.data.splits import period_times

        try:
            times = _times(train_times)
        except TypeError:
            times = period_times(pair.times, train_times, "training period")
        inside = np.isin(time_keys(pair.times), time_keys(times))
        times = pair.times[inside]
        if times.size == 0:
            raise DataError(f"no training time step lies in the data ({fmt_times(pair.times)})")
        self.variable = pair.variable
        self.fit_times = times  # the training steps (the seasonal fit averages its basis over them)
        moments = self._moments(pair, np.flatnonzero(inside))
        self.floor = {v: float(m.domain()[1]) for v, m in moments.items()}
        hr = moments.pop("__hr__")
        if self.target_shares_hr:  # the target's LR channel takes the HR statistics (and floor)
            self.floor[self.variable] = self.floor["__hr__"]
        self.lr_stats = {v: self._stats(m, self.floor[v]) for v, m in moments.items()}
        self.hr_stats = self._stats(hr, self.floor["__hr__"])
        if self.target_shares_hr:
            self.lr_stats[self.variable] = self.hr_stats
        if self.hr_from_lr:
            self.hr_stats = self.lr_stats[self.variable]
        return self

    def lr_names(self, pair) -> list[str]:
        """The LR variables whose statistics :meth:`fit` reads (the target's LR channel is not read
        when it takes the HR statistics)."""
        names = list(pair.lr.data_vars)
        return [v for v in names if v != pair.variable] if self.target_shares_hr else names

    def _moments(self, pair, positions: np.ndarray) -> dict[str, "Moments"]:
        """The moments of the training steps ``positions``: from the pass pairing already made
        (:attr:`PairedData.prepass`, the mask and these statistics read together, or from the cache)
        when it covers these steps and this kind of statistics, else one streaming pass of their own
        (:func:`engine.data.datapass.run_pass`: block by block, float64 accumulators over the float32
        data, LR channels and target read together)."""
        names = self.lr_names(pair)
        pre = getattr(pair, "prepass", None)
        if pre is not None and pre.fits(times_key(pair.times[positions]), self.monthly, self.pixel, names):
            self.origin = pre.origin
            return {v: pre.moments[v] for v in [*names, "__hr__"]}
        self.origin = "pass"
        result = run_pass(pair.hr, pair.lr, names, positions, monthly=self.monthly, pixel=self.pixel, mask=False,
                          sample=getattr(pair, "attrs", {}).get("statistics_sample", "all"))
        return result.moments

    def _stats(self, m: "Moments", floor: float):
        """(mean, std) from accumulated moments: shapes (), (H, W), (12,) or (12, H, W)."""
        g_mean, g_std = m.overall()
        # cells that never have data get the domain statistics (keeps JSON free of NaN)
        d_mean, d_std = m.domain()
        g_mean = np.where(np.isfinite(g_mean), g_mean, d_mean)
        g_std = np.where(np.isfinite(g_std), g_std, d_std)
        if not self.monthly:
            return g_mean, self._floor(g_std, floor)
        means, stds = [], []
        for k in range(12):
            if m.steps[k]:
                mm, ss = m.group(k)
                mm = np.where(np.isfinite(mm), mm, g_mean)
                ss = np.where(np.isfinite(ss), ss, g_std)
            else:  # a month without training data: the all-months statistics
                mm, ss = g_mean, g_std
            means.append(mm)
            stds.append(ss)
        return np.stack(means), self._floor(np.stack(stds), floor)

    @staticmethod
    def _floor(std, floor: float):
        floor = floor if np.isfinite(floor) and floor > 0 else 1.0
        return np.maximum(np.where(np.isfinite(std), std, floor), _FLOOR * floor)

    # -- applying ---------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if self.hr_stats is None:
            raise DataError(f"normaliser {self.name!r} is not fitted; call fit(pair, train_times) first")

    def _broadcast(self, stats, times, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) broadcastable to an array of ``shape`` = (T, ..., H, W)."""
        mean, std = (np.asarray(s, dtype=np.float64) for s in stats)
        if self.monthly:
            idx = month_of(times) - 1
            mean, std = mean[idx], std[idx]
            if not self.pixel:
                mean, std = mean[:, None, None], std[:, None, None]
        if self.pixel and tuple(mean.shape[-2:]) != tuple(shape[-2:]):
            raise DataError(
                f"normalisation {self.name!r} has per-pixel statistics on a {mean.shape[-2:]} grid; "
                f"got an array of shape {shape} (use the full domain)"
            )
        if mean.ndim == 3 and len(shape) > 3:  # (T, H, W) against (T, C, H, W)
            extra = (1,) * (len(shape) - 3)
            mean = mean.reshape(mean.shape[:1] + extra + mean.shape[1:])
            std = std.reshape(std.shape[:1] + extra + std.shape[1:])
        return mean, std

    def _apply_block(self, data: np.ndarray, stats, times) -> np.ndarray:
        """(data - mean) / std of a float32 block (T, ..., H, W) in memory, as a new float32 array.
        In place on the copy, with the float64 statistics broadcast (numpy casts them in small buffers:
        no temporary the size of the block, no float32 copy of the statistics kept)."""
        mean, std = (np.asarray(v, dtype=np.float64) for v in stats)
        if self.pixel and tuple(mean.shape[-2:]) != tuple(data.shape[-2:]):
            self._broadcast(stats, times[:1], data.shape)  # raises, naming the shapes
        out = np.array(data, dtype=np.float32)
        if not self.monthly:
            out -= mean
            out /= std
            return out
        idx = month_of(times) - 1
        cuts = np.flatnonzero(np.diff(idx)) + 1
        for a, b in zip([0, *cuts.tolist()], [*cuts.tolist(), idx.size]):  # runs of one month
            out[a:b] -= mean[idx[a]]
            out[a:b] /= std[idx[a]]
        return out

    def _apply(self, da: xr.DataArray, stats) -> xr.DataArray:
        da = da.transpose("time", ..., *spatial_dims(da))
        data = da.data
        if isinstance(data, np.ndarray) and data.dtype == np.float32:
            # a block in memory: in place, month by month (never a (T, H, W) float64 gather of the statistics)
            return da.copy(data=self._apply_block(data, stats, da.time.values))
        mean, std = self._broadcast(stats, da.time.values, da.shape)
        out = ((data - mean) / std).astype(np.float32)  # stays lazy on dask-backed data
        return da.copy(data=out)

    def lr(self, ds: xr.Dataset) -> xr.Dataset:
        """Normalise the low-resolution channels of ``ds`` (time, lat, lon) -> float32."""
        self._check_fitted()
        missing = [v for v in ds.data_vars if v not in self.lr_stats]
        if missing:
            raise DataError(f"no statistics for variable(s) {missing}; fitted variables: {', '.join(self.lr_stats)}")
        return xr.Dataset({v: self._apply(ds[v], self.lr_stats[v]) for v in ds.data_vars}, attrs=ds.attrs)

    def hr(self, da: xr.DataArray) -> xr.DataArray:
        """Normalise the high-resolution target ``da`` (time, lat, lon) -> float32."""
        self._check_fitted()
        return self._apply(da, self.hr_stats)

    def inverse_hr(self, array, times):
        """Back to physical units.

        Parameters
        ----------
        array : numpy array, torch tensor or DataArray of shape (T, ..., H, W), normalised
        times : the T time steps (needed by monthly and instance normalisation)

        Returns
        -------
        The same type and shape, in the target's physical units.
        """
        self._check_fitted()
        shape = tuple(array.shape)
        times = time_index(times)
        if (self.monthly or self.name == "instance") and len(shape) >= 3 and shape[0] != times.size:
            raise DataError(f"inverse_hr got {times.size} times for an array of shape {shape}; expected one per leading entry")
        mean, std = self._broadcast(self.hr_stats, times, shape)
        mean, std = self._time_stats(mean, std, times, shape)
        if isinstance(array, xr.DataArray):
            return array.copy(data=(array.values * std + mean).astype(np.float32))
        if hasattr(array, "detach"):  # a torch tensor, without importing torch here
            import torch

            m = torch.as_tensor(mean, dtype=array.dtype, device=array.device)
            s = torch.as_tensor(std, dtype=array.dtype, device=array.device)
            return array * s + m
        return (np.asarray(array) * std + mean).astype(np.float32)

    def _time_stats(self, mean, std, times, shape):
        return mean, std

    # -- serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable statistics (stored as the run's ``normalisation.json``)."""
        self._check_fitted()

        def arr(s):
            return {"mean": np.asarray(s[0]).tolist(), "std": np.asarray(s[1]).tolist()}

        return {
            "name": self.name,
            "variable": self.variable,
            "lr": {v: arr(s) for v, s in self.lr_stats.items()},
            "hr": arr(self.hr_stats),
            "floor": dict(self.floor),
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "Normaliser":
        """Rebuild a fitted normaliser from :meth:`to_dict` output (dispatches on ``raw["name"]``)."""
        name = raw.get("name")
        klass = NORMALISATIONS.get(name) if cls is Normaliser or name != cls.name else cls
        obj = klass()
        obj.variable = raw.get("variable")

        def arr(d):
            return np.asarray(d["mean"], dtype=np.float64), np.asarray(d["std"], dtype=np.float64)

        obj.lr_stats = {v: arr(d) for v, d in raw["lr"].items()}
        obj.hr_stats = arr(raw["hr"])
        obj.floor = {k: float(v) for k, v in (raw.get("floor") or {}).items()}
        return obj

    def __repr__(self) -> str:
        state = "fitted" if self.hr_stats is not None else "not fitted"
        return f"{type(self).__name__}({self.name!r}, {state})"


@NORMALISATIONS.register("global", description="one mean/std per variable over the training period")
class GlobalNormaliser(Normaliser):
    name = "global"
    target_shares_hr = True


@NORMALISATIONS.register("per_pixel", description="mean/std per grid cell")
class PerPixelNormaliser(Normaliser):
    name = "per_pixel"
    pixel = True


@NORMALISATIONS.register("monthly_pixel", description="monthly climatology per grid cell")
class MonthlyPixelNormaliser(Normaliser):
    name = "monthly_pixel"
    pixel = True
    monthly = True


@NORMALISATIONS.register("seasonal_pixel", description="smooth seasonal climatology per grid cell (annual harmonics)")
class SeasonalPixelNormaliser(Normaliser):
    """Per-cell mean and std as smooth functions of the day of year.

    The monthly moments of the training period (the same pass as ``monthly_pixel``) are fitted by
    :data:`engine.data.seasonal.HARMONICS` annual harmonics (:func:`engine.data.seasonal.fit`), so a
    day at the start of May and one at its end get different climatologies, as they have. Why: with
    monthly steps the drift within a month (up to about 1 K where the seasonal cycle is steep) is left
    to the network, which does not see the date. Statistics are ``(5, H, W)`` coefficients; when the
    training period lacks a calendar month the harmonics cannot be fitted there, and the monthly steps
    ``(12, H, W)`` are kept instead (the shape tells which).
    """

    name = "seasonal_pixel"
    pixel = True
    monthly = True  # fitted from the monthly moments

    def _stats(self, m: "Moments", floor: float):
        from engine.data import seasonal

        means, stds = super()._stats(m, floor)
        if not all(m.steps[k] for k in range(12)):
            return means, stds  # a month without data: harmonics would extrapolate into it
        return seasonal.fit(means, self.fit_times), seasonal.fit(stds, self.fit_times)

    def _harmonic(self, stats) -> bool:
        return np.asarray(stats[0]).shape[0] != 12

    def _evaluate(self, stats, times, floor: float, basis=None):
        """(mean, std) at each of ``times`` (or at the rows of their ``basis``), shape (T, H, W)."""
        from engine.data import seasonal

        basis = seasonal.basis(times) if basis is None else basis
        mean = np.tensordot(basis, np.asarray(stats[0], dtype=np.float64), axes=1)
        std = np.tensordot(basis, np.asarray(stats[1], dtype=np.float64), axes=1)
        return mean, self._floor(std, floor)

    def _floor_of(self, stats) -> float:
        for var, s in [*self.lr_stats.items(), ("__hr__", self.hr_stats)]:
            if s is stats:
                return self.floor.get(var, np.nan)
        return np.nan

    def _broadcast(self, stats, times, shape):
        if not self._harmonic(stats):
            return super()._broadcast(stats, times, shape)
        if tuple(np.asarray(stats[0]).shape[-2:]) != tuple(shape[-2:]):
            raise DataError(f"normalisation {self.name!r} has per-pixel statistics on a {np.asarray(stats[0]).shape[-2:]} "
                            f"grid; got an array of shape {shape} (use the full domain)")
        mean, std = self._evaluate(stats, time_index(times), self._floor_of(stats))
        extra = (1,) * (len(shape) - mean.ndim)  # (T, H, W) against (T, C, H, W)
        return (mean.reshape(mean.shape[:1] + extra + mean.shape[1:]),
                std.reshape(std.shape[:1] + extra + std.shape[1:]))

    def _apply_block(self, data, stats, times):
        if not self._harmonic(stats):
            return super()._apply_block(data, stats, times)
        if tuple(np.asarray(stats[0]).shape[-2:]) != tuple(data.shape[-2:]):
            self._broadcast(stats, times[:1], data.shape)  # raises, naming the shapes
        out = np.array(data, dtype=np.float32)
        from engine.data import seasonal

        floor = self._floor_of(stats)
        basis = seasonal.basis(times)  # the block's phases once; the statistics one step at a time below
        for t in range(out.shape[0]):  # no (T, H, W) float64 statistics in memory
            mean, std = self._evaluate(stats, None, floor, basis=basis[t:t + 1])
            out[t] -= mean[0]
            out[t] /= std[0]
        return out


@NORMALISATIONS.register("monthly_domain", description="monthly climatology over the domain; LR and HR own statistics")
class MonthlyDomainNormaliser(Normaliser):
    name = "monthly_domain"
    monthly = True


@NORMALISATIONS.register("monthly_domain_lr", description="monthly climatology over the domain; both with LR statistics")
class MonthlyDomainLRNormaliser(Normaliser):
    name = "monthly_domain_lr"
    monthly = True
    hr_from_lr = True


@NORMALISATIONS.register("instance", description="per-sample mean/std of the LR input, applied to LR and HR")
class InstanceNormaliser(Normaliser):
    """Per time step: the mean and std of the LR target channel over the domain normalise that
    channel and the HR target; each predictor uses its own per-time-step statistics.

    The statistics of the time steps seen by :meth:`lr` are remembered, so :meth:`hr` and
    :meth:`inverse_hr` must come after :meth:`lr` for the same times (they do in the dataset and in
    inference, which normalise the inputs first).
    """

    name = "instance"

    def __init__(self) -> None:
        super().__init__()
        # keyed by calendar-neutral integer stamps (timeaxis.keys), so cftime times work too
        self._per_time: dict[str, dict[int, tuple[float, float]]] = {}

    def fit(self, pair, train_times) -> "InstanceNormaliser":
        super().fit(pair, train_times)  # the global statistics serve as std floors only
        return self

    def _instance(self, da: xr.DataArray, var: str):
        vals = da.transpose("time", ..., *spatial_dims(da)).values
        flat = vals.reshape(vals.shape[0], -1)
        mean, std = _nanstats(flat, 1)
        floor = self.floor.get(var, np.nan)
        mean = np.where(np.isfinite(mean), mean, np.asarray(self.lr_stats[var][0]).mean())
        std = self._floor(std, floor)
        book = self._per_time.setdefault(var, {})
        for t, m, s in zip(time_keys(da.time.values).tolist(), mean, std):
            book[t] = (float(m), float(s))
        return mean, std

    def lr(self, ds: xr.Dataset) -> xr.Dataset:
        self._check_fitted()
        out = {}
        for v in ds.data_vars:
            if v not in self.lr_stats:
                raise DataError(f"no statistics for variable {v!r}; fitted variables: {', '.join(self.lr_stats)}")
            da = ds[v].transpose("time", ..., *spatial_dims(ds[v]))
            mean, std = self._instance(da, v)
            shape = (-1,) + (1,) * (da.ndim - 1)
            out[v] = da.copy(data=((da.values - mean.reshape(shape)) / std.reshape(shape)).astype(np.float32))
        return xr.Dataset(out, attrs=ds.attrs)

    def _lookup(self, times) -> tuple[np.ndarray, np.ndarray]:
        book = self._per_time.get(self.variable, {})
        index = time_index(times)
        keys = time_keys(index).tolist()
        missing = [i for i, k in enumerate(keys) if k not in book]
        if missing:
            raise DataError(
                f"instance normalisation has no LR statistics for {len(missing)} time step(s) "
                f"(first {stamp(index[missing[0]])}); normalise the LR inputs with lr() first"
            )
        stats = np.array([book[k] for k in keys])
        return stats[:, 0], stats[:, 1]

    def hr(self, da: xr.DataArray) -> xr.DataArray:
        self._check_fitted()
        da = da.transpose("time", ..., *spatial_dims(da))
        mean, std = self._lookup(da.time.values)
        shape = (-1,) + (1,) * (da.ndim - 1)
        return da.copy(data=((da.values - mean.reshape(shape)) / std.reshape(shape)).astype(np.float32))

    def _time_stats(self, mean, std, times, shape):
        m, s = self._lookup(times)
        tshape = (-1,) + (1,) * (len(shape) - 1)
        return m.reshape(tshape), s.reshape(tshape)


def create(name: str) -> Normaliser:
    """A new, unfitted normaliser by registered name (the error lists the accepted names)."""
    return NORMALISATIONS.get(name)()


def from_dict(raw: Mapping[str, Any]) -> Normaliser:
    """Rebuild a fitted normaliser from ``to_dict()`` output."""
    if not isinstance(raw, Mapping) or "name" not in raw:
        raise DataError("normalisation statistics must be a mapping with a 'name' (from Normaliser.to_dict())")
    return Normaliser.from_dict(raw)


# -- files: normalisation.json (metadata, scalars) + normalisation.npz (arrays) ---------------------
#: Arrays with more values than this go to the binary sidecar (a per-cell 12 x 1024 x 1024 climatology
#: written as JSON text took 656 MB; as float64 .npz it is 100 MB, read in well under a second).
INLINE_VALUES = 64
SIDECAR_SUFFIX = ".npz"


def save(norm: Normaliser, path) -> None:
    """Store fitted statistics as ``path`` (JSON: name, variable, floors, small arrays) and, for
    arrays of more than :data:`INLINE_VALUES` values, a sidecar ``path`` with suffix ``.npz`` (float64,
    uncompressed), whose SHA-256 the JSON records. Both are written atomically, the sidecar first."""
    import hashlib
    import io
    import json
    from pathlib import Path

    from engine.files import atomic_path

    path = Path(path)
    norm._check_fitted()
    arrays: dict[str, np.ndarray] = {}

    def ref(key: str, value) -> Any:
        value = np.asarray(value, dtype=np.float64)
        if value.size <= INLINE_VALUES:
            return value.tolist()
        arrays[key] = value
        return {"array": key, "shape": list(value.shape)}

    def pair(prefix: str, s) -> dict:
        return {"mean": ref(f"{prefix}/mean", s[0]), "std": ref(f"{prefix}/std", s[1])}

    doc = {"name": norm.name, "variable": norm.variable, "floor": dict(norm.floor),
           "lr": {v: pair(f"lr/{v}", s) for v, s in norm.lr_stats.items()}, "hr": pair("hr", norm.hr_stats)}
    if arrays:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        data = buf.getvalue()
        sidecar = path.with_suffix(SIDECAR_SUFFIX)
        with atomic_path(sidecar) as tmp:
            tmp.write_bytes(data)
        doc["arrays_file"] = sidecar.name
        doc["arrays_sha256"] = hashlib.sha256(data).hexdigest()
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=1, allow_nan=False))


def load(path) -> Normaliser:
    """Read statistics stored by :func:`save`, or an older run's all-JSON ``normalisation.json``
    (:meth:`Normaliser.to_dict` text)."""
    import hashlib
    import io
    import json
    from pathlib import Path

    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read normalisation statistics {path}: {type(exc).__name__}: {exc}") from None
    if "arrays_file" not in doc:
        return from_dict(doc)
    sidecar = path.parent / doc["arrays_file"]
    try:
        data = sidecar.read_bytes()
    except OSError as exc:
        raise DataError(f"normalisation statistics {path} need {sidecar}, which cannot be read: {exc}") from None
    if hashlib.sha256(data).hexdigest() != doc.get("arrays_sha256"):
        raise DataError(f"{sidecar} does not match {path} (SHA-256 differs): the two were written by "
                        "different fits, or the file is damaged; refit (train again) to rewrite both")
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        def value(v):
            return arrays[v["array"]] if isinstance(v, dict) else v

        def pair(d):
            return {"mean": value(d["mean"]), "std": value(d["std"])}

        raw = {**doc, "lr": {v: pair(d) for v, d in doc["lr"].items()}, "hr": pair(doc["hr"])}
        return from_dict(raw)
