"""Ensembles for every model family, with a ``member`` dimension in the predictions.

- diffusion runs: N samples (one CPU generator per member and batch, so members are reproducible);
- zoo models with dropout (``model.dropout`` > 0): N Monte-Carlo dropout passes
  (:func:`engine.models.set_mc_dropout`);
- deep ensembles: N runs (e.g. N seeds), :func:`predict_deep_ensemble`.

All give ``model`` as ``(member, time, lat, lon)`` in the predictions Dataset; the ensemble mean
and spread are derived (:func:`ensemble_mean`, :func:`ensemble_spread`), never stored a second
time. A deterministic model asked for members, or a member count below 1, is a clear
:class:`EnsembleError`.

Both also predict large domains in tiles (:mod:`engine.inference.stitching`): a zoo model tile by
tile, a diffusion model by blending its denoiser's noise prediction tile by tile at every sampling
step (one coherent sample over the whole domain, the same initial noise field shared by the tiles).

Example
-------
>>> ds = predict(load_run(run), "test", members=8)        # doctest: +SKIP
>>> ds.model.dims
('member', 'time', 'lat', 'lon')
>>> spread = ensemble_spread(ds)                            # doctest: +SKIP
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import xarray as xr
from torch import nn

from engine.inference.stitching import predict_tiled, receptive_field, tiled_apply
from engine.models import set_mc_dropout
from engine.models.layers import SpatialDropout

KINDS = ("diffusion", "mc_dropout")


class EnsembleError(ValueError):
    """An ensemble that cannot be made (deterministic model, member count < 1, runs that differ)."""


def ensemble_kind(model: nn.Module) -> str | None:
    """``"diffusion"``, ``"mc_dropout"`` (a zoo model with spatial dropout p > 0) or None (deterministic)."""
    if getattr(model, "stochastic", False) and hasattr(model, "sample"):
        return "diffusion"
    if any(isinstance(m, SpatialDropout) and m.p > 0 for m in model.modules()):
        return "mc_dropout"
    return None


def check_members(members, model: nn.Module | None = None) -> int:
    """``members`` as an int >= 1; > 1 needs a model that can produce ensembles."""
    if not isinstance(members, (int, np.integer)) or isinstance(members, bool) or members < 1:
        raise EnsembleError(f"members={members!r} is not valid; expected an integer >= 1 "
                            "(1 = one prediction, N > 1 = an ensemble of N members)")
    if members > 1 and model is not None and ensemble_kind(model) is None:
        raise EnsembleError(
            f"members={members}: the model ({type(model).__name__}) is deterministic and cannot produce an ensemble; "
            "accepted: a diffusion run (training.learning='diffusion'), a zoo model with model.dropout > 0 "
            "(Monte-Carlo dropout), or N runs as a deep ensemble (predict_deep_ensemble)")
    return int(members)


class DiffusionTiler:
    """Tiles for diffusion sampling: ``tiler(fn, [z, cond])`` applies the denoiser tile by tile
    (HR grid; tiles aligned to the denoiser's pooling multiple and the LR grid), ``tiler.mean``
    tiles the regression model. Receptive fields are measured once."""

    def __init__(self, model: nn.Module, scale: int, tile: int, overlap: int, halo: int | None = None,
                 tile_batch: int = 16):
        self.scale, self.tile, self.overlap, self.tile_batch = scale, tile, overlap, tile_batch
        multiple = int(getattr(model.denoiser, "multiple", 1))
        self.align = int(np.lcm(multiple, scale))
        self.receptive = denoiser_receptive_field(model.denoiser, model.denoiser.cond_channels)
        self.reg_receptive = None
        if model.regression is not None:
            with torch.enable_grad():
                self.reg_receptive = receptive_field(model.regression, model.in_channels, model.static_channels, scale)
        radius = max(self.receptive, self.reg_receptive or 1) // 2
        self.halo = min(radius, overlap // 4) if halo is None else halo

    def __call__(self, fn: Callable[[list[torch.Tensor]], torch.Tensor], hr: list[torch.Tensor]) -> torch.Tensor:
        return tiled_apply(lambda lr_t, hr_t, off: fn(hr_t), [], hr, scale=self.align, tile=self.tile,
                           overlap=self.overlap, halo=self.halo, tile_batch=self.tile_batch, receptive=self.receptive)

    def mean(self, model, x, static_hr, offset):
        if model.regression is None:
            return model.mean(x, static_hr, offset)
        return predict_tiled(model.regression, x, static_hr, scale=self.scale, tile=self.tile, overlap=self.overlap,
                             halo=self.halo, tile_batch=self.tile_batch, offset=offset, receptive=self.reg_receptive)


def denoiser_receptive_field(denoiser: nn.Module, cond_channels: int) -> int:
    """Receptive field (HR pixels) of a denoiser, measured like :func:`receptive_field`."""

    class _AsZoo(nn.Module):  # (x = [z, cond], static, offset) -> eps, at one timestep
        def __init__(self):
            super().__init__()
            self.d = denoiser

        def forward(self, x, static_hr=None, offset=None):
            return self.d(x[:, :1], torch.full((x.shape[0],), 500, dtype=torch.long, device=x.device), x[:, 1:])

    with torch.enable_grad():
        return receptive_field(_AsZoo(), 1 + cond_channels, 0, 1)


def make_forward(model: nn.Module, members: int = 1, *, scale: int, tile: int | None = None, overlap: int = 16,
                 halo: int | None = None, tile_batch: int = 16, seed: int = 0, sampler: str | None = None,
                 steps: int | None = None) -> Callable:
    """A prediction function for ``model``: ``fn(x, static_hr, offset, key) -> (M, B, 1, H, W)``.

    ``key`` (e.g. the index of the batch's first time step) seeds the members of that batch, so a
    prediction is reproducible and members differ between batches. ``members == 1`` on a
    deterministic model is a plain (possibly tiled) forward pass.
    """
    members = check_members(members, model)
    kind = ensemble_kind(model)
    state: dict = {}

    def deterministic(x, static_hr, offset):
        if tile is None:
            return model(x, static_hr, offset)
        if "receptive" not in state:
            with torch.enable_grad():
                state["receptive"] = receptive_field(model, x.shape[-3], 0 if static_hr is None else static_hr.shape[1],
                                                     scale, x.shape[1] if x.ndim == 5 else 1)
        return predict_tiled(model, x, static_hr, scale=scale, tile=tile, overlap=overlap, halo=halo,
                             tile_batch=tile_batch, offset=offset, receptive=state["receptive"])

    @torch.no_grad()
    def forward(x, static_hr, offset, key: int = 0) -> torch.Tensor:
        outs = []
        if kind == "diffusion":
            if tile is not None and "tiler" not in state:
                state["tiler"] = DiffusionTiler(model, scale, tile, overlap, halo, tile_batch)
            for m in range(members):
                g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(key) * 7_919 + m)
                outs.append(model.sample(x, static_hr, offset, sampler=sampler, steps=steps, generator=g,
                                         tiler=state.get("tiler")))
        elif kind == "mc_dropout" and members > 1:
            previous = {mod: mod.always_on for mod in model.modules() if isinstance(mod, SpatialDropout)}
            set_mc_dropout(model, True)
            try:
                for m in range(members):
                    with torch.random.fork_rng(devices=[]):  # member noise without touching the global RNG
                        torch.manual_seed(int(seed) * 1_000_003 + int(key) * 7_919 + m)
                        outs.append(deterministic(x, static_hr, offset))
            finally:
                for mod, on in previous.items():
                    mod.always_on = on
        else:
            outs.append(deterministic(x, static_hr, offset))
        return torch.stack(outs)

    forward.members = members
    forward.kind = kind if members > 1 else None
    return forward


def ensemble_mean(ds: xr.Dataset, name: str = "model") -> xr.DataArray:
    """The ensemble mean of ``ds[name]`` over ``member`` (derived, never stored)."""
    if "member" not in ds[name].dims:
        raise EnsembleError(f"{name!r} has no 'member' dimension (dims {ds[name].dims}); predict with members > 1")
    return ds[name].mean("member").assign_attrs(ds[name].attrs, description="ensemble mean")


def ensemble_spread(ds: xr.Dataset, name: str = "model") -> xr.DataArray:
    """The ensemble standard deviation (ddof=1) of ``ds[name]`` over ``member`` (derived)."""
    if "member" not in ds[name].dims or ds.sizes["member"] < 2:
        raise EnsembleError(f"{name!r} needs a 'member' dimension with >= 2 members; got dims {ds[name].dims}")
    return ds[name].std("member", ddof=1).assign_attrs(ds[name].attrs, description="ensemble spread (std)")


def predict_deep_ensemble(runs: Sequence, period="test", **kwargs) -> xr.Dataset:
    """A deep ensemble: one member per run (e.g. N seeds of one configuration).

    Parameters
    ----------
    runs : Runs (or loaded runs) trained on the same data, grid and variable.
    period, kwargs : passed to :func:`engine.inference.predict.predict` (one member per run).

    Returns
    -------
    The first run's predictions with ``model`` as (member, time, lat, lon) and a ``member_run``
    coordinate naming each member's run.
    """
    from engine.inference.predict import LoadedRun, load_run, predict

    runs = list(runs)
    if len(runs) < 2:
        raise EnsembleError(f"a deep ensemble needs at least 2 runs; got {len(runs)}")
    datasets = []
    for run in runs:
        loaded = run if isinstance(run, LoadedRun) else load_run(run)
        datasets.append(predict(loaded, period, members=1, **kwargs))
    first = datasets[0]
    from engine.data.grid import spatial_dims

    sdims = spatial_dims(first["model"])
    for ds, run in zip(datasets[1:], runs[1:]):
        for coord in ("time", *sdims):
            if ds.sizes[coord] != first.sizes[coord] or not np.array_equal(ds[coord].values, first[coord].values):
                raise EnsembleError(f"run {getattr(run, 'run_id', run)!r} predicts on a different {coord!r} axis than "
                                    f"{first.attrs.get('finescale_run')!r}; a deep ensemble needs the same data")
        if ds.attrs.get("variable") != first.attrs.get("variable"):
            raise EnsembleError(f"runs predict different variables: {first.attrs.get('variable')!r} vs {ds.attrs.get('variable')!r}")
    ids = [ds.attrs.get("finescale_run", str(i)) for i, ds in enumerate(datasets)]
    model = xr.concat([ds["model"] for ds in datasets], dim="member").assign_coords(
        member=np.arange(len(datasets)), member_run=("member", ids))
    out = first.copy()
    out["model"] = model.transpose("member", "time", *sdims).assign_attrs(
        first["model"].attrs, description=f"deep ensemble of {len(datasets)} runs")
    out.attrs.update(ensemble="deep", ensemble_members=len(datasets), ensemble_runs=" ".join(ids))
    return out
