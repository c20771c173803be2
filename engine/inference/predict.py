"""Full-domain prediction of a trained run, written back in physical units as CF-compliant NetCDF.

:func:`load_run` rebuilds everything a trained run needs to predict (data pairing, the stored
normalisation statistics, the best checkpoint); :func:`predict_run` returns an
``xarray.Dataset`` with the truth, the model and the interpolation baselines on the same grid;
:func:`write_predictions` stores it as the run's ``predictions.nc``.

Example
-------
>>> ds = predict_run(run, period="test")            # doctest: +SKIP
>>> float(((ds.model - ds.truth) ** 2).mean() ** 0.5)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import xarray as xr

import engine
from engine.config import ExperimentConfig
from engine.data.pairing import PairedData, make_pair, unpad
from engine.data.torch_dataset import DownscalingDataset
from engine.data.grid import latlon, spatial_dims
from engine.models import build_model
from engine.runs import Run, atomic_path, now_iso
from engine.training.loop import load_checkpoint

PERIODS = ("train", "val", "test")
#: Bytes of one block's output and inputs when ``inference.block`` is None.
BLOCK_BYTES = 256 * 2**20


class PredictionError(RuntimeError):
    """A run cannot be predicted (no checkpoint yet, unknown period ...)."""


@dataclass
class LoadedRun:
    """A trained run, ready to predict: model (eval, float32, CPU), pairing and normalisation."""

    run: Run
    config: ExperimentConfig
    model: torch.nn.Module
    pair: PairedData
    normaliser: Any
    input_channels: list[str]
    static_channels: list[str]

    def period(self, period: str | tuple[str, str]) -> tuple[str, str]:
        if isinstance(period, str):
            if period not in PERIODS:
                raise PredictionError(f"period {period!r} is not valid; accepted: {', '.join(PERIODS)} or (start, end)")
            return getattr(self.config.data, f"{period}_period")
        return tuple(period)

    def dataset(self, period: str | tuple[str, str] = "test") -> DownscalingDataset:
        """The full-domain dataset of a period: one item per time step, in time order."""
        return DownscalingDataset(self.pair, self.normaliser, self.period(period), patch_size=None,
                                  seed=self.config.training.seed, time_window=self.config.data.time_window)

    @cached_property
    def hr_coords(self) -> dict[str, Any]:
        """``dims`` (the spatial dims), their 1-D coordinates, and ``lat``/``lon`` (1-D on a regular
        grid, 2-D on any other)."""
        return _grid_coords(self.pair.hr)

    @cached_property
    def lr_coords(self) -> dict[str, Any]:
        return _grid_coords(self.pair.lr)


def _grid_coords(obj) -> dict[str, Any]:
    dims = spatial_dims(obj)
    out: dict[str, Any] = {"dims": dims, dims[0]: obj[dims[0]].values, dims[1]: obj[dims[1]].values}
    if dims != ("lat", "lon"):
        out["lat"], out["lon"] = latlon(obj)
    return out


def load_run(run: Run, which: str = "best") -> LoadedRun:
    """Rebuild a trained run from its folder (``which`` checkpoint: "best" or "last")."""
    path = run.checkpoint(which)
    if not path.exists() and run.config.training.seeds > 1:
        raise PredictionError(f"run {run.run_id!r} is a deep ensemble of {run.config.training.seeds} seeds without a "
                              "checkpoint of its own; predict it with predict_run, or load its members "
                              "(engine.training.seeds.member_runs)")
    if not path.exists():
        raise PredictionError(f"run {run.run_id!r} has no {which} checkpoint yet ({path}); state: {run.state}")
    cfg = run.config
    state = load_checkpoint(path)
    pair = make_pair(cfg.data)
    if not run.normalisation_path.exists():
        raise PredictionError(f"run {run.run_id!r} has no normalisation.json; was it trained by finescale?")
    from engine.data.normalise import load as load_normalisation

    normaliser = load_normalisation(run.normalisation_path)  # JSON (+ its .npz sidecar); old all-JSON runs too
    if cfg.training.learning == "diffusion":  # a DiffusionDownscaler (and its frozen regression)
        from engine.training.diffusion import rebuild_from_checkpoint
        model = rebuild_from_checkpoint(cfg, state)
    else:
        grid_shape = tuple(state.get("grid_shape") or pair.hr.shape[-2:])
        model = build_model(cfg.model, len(state["input_channels"]), len(state["static_channels"]), int(state["scale"]),
                            time_window=int(state.get("time_window", cfg.data.time_window)), grid_shape=grid_shape)
        model.load_state_dict(state["model"])
    model.eval()
    return LoadedRun(run, cfg, model, pair, normaliser, list(state["input_channels"]), list(state["static_channels"]))


#: Bytes the network's activations of one prediction batch may take (auto batch size).
BATCH_BYTES = 512 * 2**20


def auto_batch(loaded: LoadedRun, tile: int | None = None, largest: int = 8) -> int:
    """Fields per forward pass: up to ``largest``, fewer on large domains so that the activations
    (about four HR-sized maps per filter) stay within :data:`BATCH_BYTES`; tiled prediction bounds
    them by the tile batch instead."""
    if tile is not None:
        return largest
    cells = int(np.prod(loaded.pair.hr.shape[1:]))
    per_field = 4 * cells * 4 * max(1, int(loaded.config.model.filters))
    return max(1, min(largest, BATCH_BYTES // per_field))


def period_positions(loaded: LoadedRun, period: str | tuple[str, str]) -> np.ndarray:
    """Positions in ``loaded.pair.times`` of the time steps of ``period`` (no data read)."""
    from engine.data.splits import period_mask

    return np.flatnonzero(period_mask(loaded.pair.times, loaded.period(period), "period"))


def block_plan(loaded: LoadedRun, positions: np.ndarray, members: int, n_baselines: int,
               block: int | None = None) -> list[np.ndarray]:
    """Split ``positions`` into time blocks: ``block`` steps each (default ``inference.block``), or,
    when that is None, as many as keep one block's output within :data:`BLOCK_BYTES`, aligned to
    the target's storage chunks when whole chunks fit (:func:`block_chunk`, :mod:`engine.data.blocks`)."""
    from engine.data.blocks import plan

    block = loaded.config.inference.block if block is None else block
    if block is not None:
        return [positions[i : i + int(block)] for i in range(0, len(positions), int(block))]
    cells = int(np.prod(loaded.pair.hr.shape[1:]))
    # float32 output variables (truth, members, baselines) + the block's normalised inputs/target
    per_step = 4 * cells * (members + n_baselines + 4)
    return plan(positions, block_chunk(loaded.pair.hr, per_step, BLOCK_BYTES), per_step, BLOCK_BYTES)


def block_chunk(hr, per_step: int, budget: int) -> int | None:
    """The storage time chunk blocks align to, or None when one chunk holds more steps than a
    block may: blocks then take as many steps as the budget allows. (Aligned to a chunk larger
    than the budget, a block would be the largest divisor of the chunk that fits -- 4 steps of
    the demo's 548-step chunks --, and every such block decompresses the whole chunk again.)"""
    from engine.data.blocks import time_chunk

    chunk = time_chunk(hr)
    return chunk if chunk and chunk * per_step <= budget else None


def _block_pair(pair: PairedData, positions: np.ndarray, time_window: int) -> PairedData:
    """``pair`` cut (lazily) to ``positions`` and the ``time_window - 1`` steps before them, so a
    block's dataset reads only its own time steps (windows reach back as on the whole period)."""
    first = max(0, int(positions[0]) - (time_window - 1))
    span = slice(first, int(positions[-1]) + 1)
    mask = pair.mask.isel(time=span) if "time" in pair.mask.dims else pair.mask
    return dataclasses.replace(pair, lr=pair.lr.isel(time=span), hr=pair.hr.isel(time=span), mask=mask)


def _output_coords(hr: xr.DataArray, times) -> dict[str, Any]:
    """The output's coordinates: the target's own spatial ones (1-D, 2-D lat/lon, ``crs``) and ``times``."""
    coords: dict[str, Any] = {name: c.variable for name, c in hr.coords.items() if "time" not in c.dims}
    coords["time"] = ("time", np.asarray(times), hr["time"].attrs)
    return coords


class _Predictor:
    """One prediction of one period, block by block (see :func:`iter_blocks`)."""

    def __init__(self, loaded: LoadedRun, period, batch_size: int | None, baselines, members, tile, overlap, seed,
                 sampler, steps, block):
        from engine.inference.baselines import for_config
        from engine.inference.ensembles import make_forward

        self.loaded = loaded
        cfg = self.cfg = loaded.config
        inf = cfg.inference
        self.batch_size = int(batch_size) if batch_size is not None else auto_batch(loaded, inf.tile)
        self.forward = make_forward(loaded.model, inf.members if members is None else members, scale=loaded.pair.scale,
                                    tile=inf.tile if tile is None else tile,
                                    overlap=inf.overlap if overlap is None else overlap, tile_batch=inf.tile_batch,
                                    seed=seed, sampler=sampler, steps=steps)
        self.positions = period_positions(loaded, period)
        self.times = loaded.pair.times[self.positions]
        # Baselines from the native input grid, bias corrections fitted on the training period
        # (engine.inference.baselines); fitted once, applied block by block.
        self.baselines = for_config(cfg, loaded.pair, baselines)
        self.baseline_names = self.baselines.available() if self.baselines.names else ()
        self.blocks = block_plan(loaded, self.positions, self.forward.members, len(self.baseline_names), block)
        hr = loaded.pair.hr
        self.dims = ("time",) + spatial_dims(hr)
        self.attrs = {k: hr.attrs[k] for k in ("units", "standard_name", "long_name") if k in hr.attrs}
        mask = loaded.pair.mask
        self.static_mask = None if "time" in mask.dims else np.asarray(mask.values, dtype=bool)

    def global_attrs(self, period) -> dict[str, Any]:
        cfg, loaded = self.cfg, self.loaded
        period_range = loaded.period(period)
        attrs = dict(
            Conventions="CF-1.8",
            title=f"finescale predictions of {cfg.data.variable}",
            source=f"finescale {engine.__version__}: {cfg.model.backbone}+{cfg.model.upsampling}, x{loaded.pair.scale} "
                   f"{cfg.data.downscaling} from {cfg.data.highres}",
            history=f"{now_iso()}: predicted by finescale run {loaded.run.run_id}",
            finescale_run=loaded.run.run_id,
            finescale_version=engine.__version__,
            variable=cfg.data.variable,
            period=f"{period_range[0]}/{period_range[1]}",
        )
        if self.baselines.names:
            best, val = self.baselines.best(cfg.data.val_period)
            attrs.update(baseline_source=self.baselines.source, best_baseline=best, best_baseline_period="val",
                         baseline_val_rmse="; ".join(f"{k}={v:.6g}" for k, v in val.items()))
        return attrs

    def block(self, positions: np.ndarray) -> xr.Dataset:
        """Read, predict and assemble one block (the only time steps held in memory)."""
        from engine.inference.baselines import describe

        loaded, cfg = self.loaded, self.cfg
        sub = _block_pair(loaded.pair, positions, cfg.data.time_window)
        times = loaded.pair.times[positions]
        dataset = DownscalingDataset(sub, loaded.normaliser, times, patch_size=None, seed=cfg.training.seed,
                                     time_window=cfg.data.time_window)
        first = int(np.searchsorted(self.positions, positions[0]))  # index in the period: seeds members
        preds = []
        for start in range(0, len(dataset), self.batch_size):
            items = [dataset[i] for i in range(start, min(start + self.batch_size, len(dataset)))]
            x = torch.stack([item["x"] for item in items])
            static_hr = torch.stack([item["static_hr"] for item in items])
            offset = torch.stack([item["offset"] for item in items])
            out = self.forward(x, static_hr, offset, key=first + start)[:, :, 0].numpy()  # (M, B, H, W)
            batch_times = times[start : start + len(items)]
            preds.append(np.stack([np.asarray(loaded.normaliser.inverse_hr(o, batch_times)) for o in out]))
        del dataset
        model_values = np.concatenate(preds, axis=1).astype(np.float32)  # (M, T, H, W)
        hr = sub.hr.isel(time=slice(len(sub.hr.time) - len(positions), None))
        truth = np.asarray(hr.values, dtype=np.float32)
        if self.static_mask is not None:
            valid = np.broadcast_to(self.static_mask, truth.shape)
        else:
            valid = np.asarray(sub.mask.isel(time=slice(-len(positions), None)).values, dtype=bool)
        coords = _output_coords(hr, times)
        ensemble = self.forward.members > 1
        if ensemble:
            coords["member"] = np.arange(self.forward.members)
        data_vars: dict[str, Any] = {
            "truth": xr.Variable(self.dims, np.where(valid, truth, np.nan).astype(np.float32),
                                 {**self.attrs, "description": "high-resolution reference"}),
            "model": xr.Variable(("member",) + self.dims if ensemble else self.dims,
                                 np.where(valid, model_values, np.nan) if ensemble
                                 else np.where(valid, model_values[0], np.nan),
                                 {**self.attrs, "description": _describe(cfg, self.forward)}),
        }
        if self.baseline_names:
            for name, field in self.baselines.fields(times, self.baseline_names).items():
                data_vars[name] = xr.Variable(self.dims, np.where(valid, field, np.nan).astype(np.float32),
                                              {**self.attrs, "description": describe(name)})
        mask = self.static_mask if self.static_mask is not None else valid
        mask_dims = self.dims[1:] if self.static_mask is not None else self.dims
        data_vars["mask"] = xr.Variable(mask_dims, mask.astype(np.int8),
                                        {"long_name": "valid data mask", "flag_values": [0, 1],
                                         "flag_meanings": "invalid valid"})
        ds = xr.Dataset(data_vars, coords=coords)
        # a target padded to a multiple of the scale comes back on its original grid
        ds = unpad(ds, loaded.pair)
        _cf_coordinate_attrs(ds)
        return ds


def _cf_coordinate_attrs(ds: xr.Dataset) -> None:
    if "lat" in ds.coords and ds.lat.ndim == 1:
        ds.lat.attrs.update(standard_name="latitude", units="degrees_north", axis="Y")
        ds.lon.attrs.update(standard_name="longitude", units="degrees_east", axis="X")
    ds.time.attrs.update(standard_name="time", axis="T")
    if "crs" in ds.coords:  # CF: the fields name their grid mapping
        dims = set(spatial_dims(ds))
        for v in ds.data_vars.values():
            if dims <= set(v.dims):
                v.attrs["grid_mapping"] = "crs"


def _options(batch_size, baselines, members, tile, overlap, seed, sampler, steps, block) -> dict[str, Any]:
    return dict(batch_size=batch_size, baselines=baselines, members=members, tile=tile, overlap=overlap, seed=seed,
                sampler=sampler, steps=steps, block=block)


def iter_blocks(loaded: LoadedRun, period: str | tuple[str, str] = "test", batch_size: int | None = None,
                baselines: tuple[str, ...] | None = None, members: int | None = None, tile: int | None = None,
                overlap: int | None = None, seed: int = 0, sampler: str | None = None, steps: int | None = None,
                block: int | None = None, first_step: int = 0) -> Iterator[tuple[int, xr.Dataset]]:
    """Predict ``period`` one time block at a time: yield ``(start, block_dataset)`` with
    ``start`` the block's first step in the period, from the block holding ``first_step`` on.
    Only one block's inputs and outputs are in memory at a time (arguments as :func:`predict`)."""
    p = _Predictor(loaded, period, **_options(batch_size, baselines, members, tile, overlap, seed, sampler, steps,
                                              block))
    start = 0
    for positions in p.blocks:
        if start + len(positions) > first_step:
            yield start, p.block(positions)
        start += len(positions)


@torch.no_grad()
def predict(loaded: LoadedRun, period: str | tuple[str, str] = "test", batch_size: int | None = None,
            baselines: tuple[str, ...] | None = None, members: int | None = None, tile: int | None = None,
            overlap: int | None = None, seed: int = 0, sampler: str | None = None,
            steps: int | None = None, block: int | None = None) -> xr.Dataset:
    """Predict every time step of ``period`` on the full domain, in memory.

    Returns a Dataset with ``truth``, ``model`` and one variable per baseline, all
    (time, lat, lon) (the target's own spatial dims) in physical units, plus ``mask`` (1 = valid).
    With ``members`` > 1 (default ``inference.members``) ``model`` is an ensemble (member, time,
    lat, lon) (:mod:`engine.inference.ensembles`); ``tile`` / ``overlap`` (default
    ``inference.*``) predict in blended tiles (:mod:`engine.inference.stitching`); ``sampler`` /
    ``steps`` override a diffusion run's defaults. The period is computed in time blocks
    (``block`` steps, default ``inference.block``); for periods too long to hold, write them
    with :func:`write_predictions`, which keeps only one block in memory. ``batch_size`` None:
    up to 8 fields per forward pass, fewer on large domains (:func:`auto_batch`).
    """
    p = _Predictor(loaded, period, **_options(batch_size, baselines, members, tile, overlap, seed, sampler, steps,
                                              block))
    parts = [p.block(positions) for positions in p.blocks]
    if not parts:
        raise PredictionError(f"period {loaded.period(period)} holds no time step of the data")
    static = [n for n, v in parts[0].data_vars.items() if "time" not in v.dims]
    ds = xr.concat(parts, dim="time", data_vars="minimal", coords="minimal", compat="override", join="override")
    for name in static:
        ds[name] = parts[0][name]
    ds.attrs.update(p.global_attrs(period))
    return ds


def _describe(cfg: ExperimentConfig, forward) -> str:
    m = cfg.model
    what = (f"{'residual ' if m.regression_run else ''}diffusion ({m.denoiser} denoiser)"
            if cfg.training.learning == "diffusion" else f"{m.backbone}+{m.upsampling}")
    if forward.members > 1:
        return f"{what} ensemble of {forward.members} members ({forward.kind})"
    return f"{what} prediction"


def predict_run(run: Run, period: str | tuple[str, str] = "test", **kwargs) -> xr.Dataset:
    """Load a trained run and predict ``period`` (see :func:`predict`); a ``training.seeds`` > 1
    run predicts its members as a deep ensemble (:mod:`engine.training.seeds`)."""
    if run.config.training.seeds > 1:
        from engine.training.seeds import predict_members
        return predict_members(run, period, **kwargs)
    return predict(load_run(run), period, **kwargs)


def write_netcdf(ds: xr.Dataset, path) -> None:
    """Write ``ds`` as compressed NetCDF4 atomically (temporary file, then rename)."""
    encoding = {name: {"zlib": True, "complevel": 4} for name in ds.data_vars}
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="netcdf4", encoding=encoding)


def write_predictions(run: Run, period: str | tuple[str, str] = "test", path=None, format: str | None = None,
                      loaded: LoadedRun | None = None, stop_after: int | None = None, **kwargs) -> xr.Dataset | None:
    """Predict ``period`` block by block into the run's ``predictions.nc`` (or ``path``).

    Each block is read, predicted, its baselines computed and written (``format``, default
    ``inference.format``: ``"netcdf"`` appended along time, or ``"zarr"`` regions) before the next
    is read, so memory is one block + the model whatever the period's length. The output grows in
    ``<path>.partial`` and moves into place when complete; a call after an interruption resumes at
    the first unwritten block. A read-only destination fails before anything is predicted.

    Returns the written predictions, opened lazily (dask; nothing loaded), or None when
    ``stop_after`` blocks were written and the prediction is not complete yet (used to test and
    to spread a long prediction over several jobs).
    """
    from engine.inference.output import BlockWriter

    fmt = format or run.config.inference.format
    target = Path(path) if path is not None else run.predictions_path
    if loaded is None and run.config.training.seeds > 1:  # its seeds as a deep ensemble (engine.training.seeds)
        from engine.training.seeds import write_members
        return write_members(run, _checked_output(target, "netcdf"), period, **kwargs)
    writer_path = _checked_output(target, fmt)
    loaded = load_run(run) if loaded is None else loaded
    options = _options(**{**dict(batch_size=None, baselines=None, members=None, tile=None, overlap=None, seed=0,
                                 sampler=None, steps=None, block=None), **kwargs})
    p = _Predictor(loaded, period, **options)
    signature = json.dumps({"run": run.run_id, "period": list(loaded.period(period)), "steps": len(p.positions),
                            "blocks": [len(b) for b in p.blocks],
                            **{k: v for k, v in options.items() if k != "batch_size"}}, default=str, sort_keys=True)
    writer = BlockWriter(writer_path, fmt, times=np.asarray(p.times), signature=signature)
    done = writer.resume_step()
    if done:
        run.log_event("message", text=f"predictions: resuming after {done} of {len(p.positions)} time steps")
    start, written = 0, 0
    attrs = p.global_attrs(period)
    for positions in p.blocks:
        if start + len(positions) > done:
            with torch.no_grad():
                ds = p.block(positions)
            if start == 0:
                ds.attrs.update(attrs)
            writer.write(ds, start)
            del ds
            written += 1
            if stop_after is not None and written >= stop_after and start + len(positions) < len(p.positions):
                return None
        start += len(positions)
    final = writer.finish()
    if final.suffix == ".zarr":
        return xr.open_zarr(final)
    from engine.data.catalog import OPEN_LOCK  # HDF5 is not thread-safe while opening

    with OPEN_LOCK:
        return xr.open_dataset(final, engine="netcdf4", chunks={}, cache=False)


def _checked_output(path: Path, fmt: str) -> Path:
    from engine.inference.output import OutputError, check_writable, output_path

    try:
        final = output_path(path, fmt)
        check_writable(final)
    except OutputError as exc:
        raise PredictionError(str(exc)) from None
    return final
