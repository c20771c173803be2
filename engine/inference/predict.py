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

import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch
import xarray as xr

import engine
from engine.config import ExperimentConfig
from engine.data.pairing import PairedData, make_pair
from engine.data.torch_dataset import DownscalingDataset
from engine.inference.baselines import baseline_variables
from engine.models import build_model
from engine.registry import NORMALISATIONS
from engine.runs import Run, atomic_path, now_iso
from engine.training.loop import load_checkpoint

PERIODS = ("train", "val", "test")


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
    def hr_coords(self) -> dict[str, np.ndarray]:
        return {"lat": self.pair.hr.lat.values, "lon": self.pair.hr.lon.values}

    @cached_property
    def lr_coords(self) -> dict[str, np.ndarray]:
        return {"lat": self.pair.lr.lat.values, "lon": self.pair.lr.lon.values}


def load_run(run: Run, which: str = "best") -> LoadedRun:
    """Rebuild a trained run from its folder (``which`` checkpoint: "best" or "last")."""
    path = run.checkpoint(which)
    if not path.exists():
        raise PredictionError(f"run {run.run_id!r} has no {which} checkpoint yet ({path}); state: {run.state}")
    cfg = run.config
    state = load_checkpoint(path)
    pair = make_pair(cfg.data)
    if not run.normalisation_path.exists():
        raise PredictionError(f"run {run.run_id!r} has no normalisation.json; was it trained by finescale?")
    normaliser = NORMALISATIONS.get(cfg.data.normalisation).from_dict(json.loads(run.normalisation_path.read_text()))
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


@torch.no_grad()
def predict(loaded: LoadedRun, period: str | tuple[str, str] = "test", batch_size: int = 8,
            baselines: tuple[str, ...] | None = None, members: int | None = None, tile: int | None = None,
            overlap: int | None = None, seed: int = 0, sampler: str | None = None,
            steps: int | None = None) -> xr.Dataset:
    """Predict every time step of ``period`` on the full domain.

    Returns a Dataset with ``truth``, ``model`` and one variable per baseline, all
    (time, lat, lon) in physical units, plus ``mask`` (1 = valid). With ``members`` > 1
    (default ``inference.members``) ``model`` is an ensemble (member, time, lat, lon)
    (:mod:`engine.inference.ensembles`); ``tile`` / ``overlap`` (default ``inference.*``) predict in
    blended tiles (:mod:`engine.inference.stitching`); ``sampler`` / ``steps`` override a diffusion
    run's defaults.
    """
    from engine.inference.ensembles import make_forward

    dataset = loaded.dataset(period)
    cfg = loaded.config
    variable = cfg.data.variable
    times = dataset.times
    hr = loaded.pair.hr.sel(time=times)
    scale = loaded.pair.scale

    inf = cfg.inference
    forward = make_forward(loaded.model, inf.members if members is None else members, scale=scale,
                           tile=inf.tile if tile is None else tile, overlap=inf.overlap if overlap is None else overlap,
                           tile_batch=inf.tile_batch, seed=seed, sampler=sampler, steps=steps)
    preds = []
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        x = torch.stack([item["x"] for item in items])
        static_hr = torch.stack([item["static_hr"] for item in items])
        offset = torch.stack([item["offset"] for item in items])
        out = forward(x, static_hr, offset, key=start)[:, :, 0].numpy()  # (M, B, H, W)
        batch_times = times[start : start + len(items)]
        preds.append(np.stack([np.asarray(loaded.normaliser.inverse_hr(o, batch_times)) for o in out]))
    model_values = np.concatenate(preds, axis=1).astype(np.float32)  # (M, T, H, W)
    ensemble = forward.members > 1
    model_dims = ("member", "time", "lat", "lon") if ensemble else ("time", "lat", "lon")
    if not ensemble:
        model_values = model_values[0]

    mask = loaded.pair.mask
    mask_values = mask.sel(time=times).values if "time" in mask.dims else mask.values
    valid = np.broadcast_to(mask_values, model_values.shape).astype(bool)
    truth_valid = valid[0] if ensemble else valid

    coords = {"time": times, "lat": hr.lat.values, "lon": hr.lon.values}
    model_coords = {**coords, "member": np.arange(forward.members)} if ensemble else coords
    attrs = {k: hr.attrs[k] for k in ("units", "standard_name", "long_name") if k in hr.attrs}
    data_vars: dict[str, Any] = {
        "truth": xr.DataArray(np.where(truth_valid, hr.values, np.nan).astype(np.float32), coords, ("time", "lat", "lon"),
                              attrs={**attrs, "description": "high-resolution reference"}),
        "model": xr.DataArray(np.where(valid, model_values, np.nan), model_coords, model_dims,
                              attrs={**attrs, "description": _describe(cfg, forward)}),
    }
    # Baselines from the native input grid, bias corrections fitted on the training period, and
    # the best of them on the validation period (the headline reference): engine.inference.baselines.
    base_vars, base_attrs = baseline_variables(cfg, loaded.pair, times, baselines, truth_valid, coords, attrs)
    data_vars.update(base_vars)
    mask_dims = ("time", "lat", "lon") if "time" in mask.dims else ("lat", "lon")
    data_vars["mask"] = xr.DataArray(mask_values.astype(np.int8), {k: coords[k] for k in mask_dims}, mask_dims,
                                     attrs={"long_name": "valid data mask", "flag_values": [0, 1],
                                            "flag_meanings": "invalid valid"})
    ds = xr.Dataset(data_vars)
    ds.lat.attrs.update(standard_name="latitude", units="degrees_north", axis="Y")
    ds.lon.attrs.update(standard_name="longitude", units="degrees_east", axis="X")
    ds.time.attrs.update(standard_name="time", axis="T")
    period_range = loaded.period(period)
    ds.attrs.update(
        Conventions="CF-1.8",
        title=f"finescale predictions of {variable}",
        source=f"finescale {engine.__version__}: {cfg.model.backbone}+{cfg.model.upsampling}, x{scale} "
               f"{cfg.data.downscaling} from {cfg.data.highres}",
        history=f"{now_iso()}: predicted by finescale run {loaded.run.run_id}",
        finescale_run=loaded.run.run_id,
        finescale_version=engine.__version__,
        variable=variable,
        period=f"{period_range[0]}/{period_range[1]}",
        **base_attrs,
    )
    return ds


def _describe(cfg: ExperimentConfig, forward) -> str:
    m = cfg.model
    what = (f"{'residual ' if m.regression_run else ''}diffusion ({m.denoiser} denoiser)"
            if cfg.training.learning == "diffusion" else f"{m.backbone}+{m.upsampling}")
    if forward.members > 1:
        return f"{what} ensemble of {forward.members} members ({forward.kind})"
    return f"{what} prediction"


def predict_run(run: Run, period: str | tuple[str, str] = "test", **kwargs) -> xr.Dataset:
    """Load a trained run and predict ``period`` (see :func:`predict`)."""
    return predict(load_run(run), period, **kwargs)


def write_netcdf(ds: xr.Dataset, path) -> None:
    """Write ``ds`` as compressed NetCDF4 atomically (temporary file, then rename)."""
    encoding = {name: {"zlib": True, "complevel": 4} for name in ds.data_vars}
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="netcdf4", encoding=encoding)


def write_predictions(run: Run, period: str | tuple[str, str] = "test") -> xr.Dataset:
    """Predict ``period`` and store it as the run's ``predictions.nc``."""
    ds = predict_run(run, period)
    write_netcdf(ds, run.predictions_path)
    return ds
