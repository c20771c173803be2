"""The diffusion trainer (``training.learning="diffusion"``): conditional or residual diffusion.

The model is :class:`engine.models.diffusion.DiffusionDownscaler`, trained with the standard
noise-prediction objective (masked MSE between the true and the predicted noise, timesteps uniform
over ``model.diffusion_steps``). With ``model.regression_run`` (a run id in the same run store, or
a run folder) the mean comes from that run's best checkpoint, frozen, and its stored normalisation
is reused (the regression predicts in those units); the diffusion model learns the residual
(CorrDiff). Without it, the mean is the interpolated LR target (DeepR, DPDM). Either part trains
alone: the regression is an ordinary supervised run.

Run-store conventions are the supervised trainer's (:mod:`engine.training.trainer`): events
("start", "step", "epoch"), ``normalisation.json``, status, atomic ``checkpoints/best.pt`` /
``last.pt``, resume after the last completed epoch. Checkpoints also carry ``learning``,
``regression`` (the regression run's model configuration and id, so that a diffusion checkpoint is
self-contained) and the whole model's weights (regression included).

Validation, per epoch: ``val_loss`` is the noise-prediction loss on the validation fields with fixed
timesteps and noise (comparable across epochs; it selects ``best.pt``); ``val_rmse`` is the RMSE in
physical units of one sample per field (at most :data:`VAL_FIELDS` fields, :data:`VAL_STEPS` DDIM
steps, to keep validation cheap).
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from engine.config import ExperimentConfig
from engine.models import build_model, count_parameters
from engine.models.diffusion import build_diffusion
from engine.registry import NORMALISATIONS
from engine.runs import Run, RunStore, now_iso, write_text_atomic
from engine.training.trainer import (
    STEP_EVENT_SECONDS,
    TrainingError,
    _json,
    _to_device,
    autocast,
    fit_normaliser,
    load_checkpoint,
    make_fabric,
    make_optimizer,
    save_checkpoint,
)

VAL_FIELDS = 16
VAL_STEPS = 10


def resolve_regression_run(run: Run, ref: str) -> Run:
    """The run named by ``model.regression_run``: an id in ``run``'s store, or a run folder."""
    from engine.runs import RunStoreError

    try:
        return RunStore(run.path.parent).resolve(ref)
    except RunStoreError as exc:
        raise TrainingError(f"model.regression_run={ref!r}: {exc}") from None


def load_regression(run: Run, ref: str) -> tuple[torch.nn.Module, dict, Any, Run]:
    """(frozen model, checkpoint state, its normaliser, its run) of a trained regression run."""
    reg_run = resolve_regression_run(run, ref)
    path = reg_run.checkpoint("best")
    if not path.exists():
        raise TrainingError(f"model.regression_run={ref!r} has no best checkpoint ({path}); state: {reg_run.state}")
    reg_cfg = reg_run.config
    if reg_cfg.training.learning == "diffusion":
        raise TrainingError(f"model.regression_run={ref!r} is a diffusion run; accepted: a supervised or GAN run "
                            "(a deterministic model for the mean)")
    state = load_checkpoint(path)
    grid = tuple(state["grid_shape"]) if reg_cfg.model.lcb and "grid_shape" in state else None
    model = build_model(reg_cfg.model, len(state["input_channels"]), len(state["static_channels"]),
                        int(state["scale"]), grid_shape=grid)
    model.load_state_dict(state["model"])
    model.eval()
    normaliser = NORMALISATIONS.get(reg_cfg.data.normalisation).from_dict(json.loads(reg_run.normalisation_path.read_text()))
    return model, state, normaliser, reg_run


def rebuild_from_checkpoint(cfg: ExperimentConfig, state: dict[str, Any]):
    """A :class:`DiffusionDownscaler` with the weights of a diffusion checkpoint (inference)."""
    regression = None
    reg = state.get("regression")
    if reg:
        reg_cfg = ExperimentConfig.from_dict(reg["config"])
        grid = tuple(reg["grid_shape"]) if reg.get("grid_shape") else None
        regression = build_model(reg_cfg.model, len(state["input_channels"]), len(state["static_channels"]),
                                 int(state["scale"]), grid_shape=grid)
    model = build_diffusion(cfg.model, len(state["input_channels"]), len(state["static_channels"]),
                            int(state["scale"]), regression=regression)
    model.load_state_dict(state["model"])
    return model.eval()


def train_diffusion(run: Run, resume: bool = True) -> dict[str, Any]:
    """Train the run's diffusion configuration; return the same summary as ``train``."""
    from engine.data.pairing import make_pair
    from engine.data.torch_dataset import DownscalingDataset

    cfg = run.config.validate()
    t, d, m = cfg.training, cfg.data, cfg.model
    fabric = make_fabric(cfg)
    fabric.launch()
    rank0 = fabric.is_global_zero
    fabric.seed_everything(t.seed)

    pair = make_pair(d)
    regression, reg_info = None, None
    if m.regression_run:
        regression, reg_state, normaliser, reg_run = load_regression(run, m.regression_run)
        reg_info = {"run_id": reg_run.run_id, "config": reg_run.config.to_dict(),
                    "grid_shape": reg_state.get("grid_shape") if reg_run.config.model.lcb else None}
    else:
        normaliser = fit_normaliser(cfg, pair)
    common = dict(seed=t.seed, sample=d.sample, time_window=d.time_window)
    train_set = DownscalingDataset(pair, normaliser, d.train_period, patch_size=d.patch_size,
                                   samples_per_epoch=t.samples_per_epoch, **common)
    val_set = DownscalingDataset(pair, normaliser, d.val_period, patch_size=None, **common)
    if m.regression_run and list(reg_state["input_channels"]) != list(train_set.input_channels):
        raise TrainingError(f"model.regression_run={m.regression_run!r} was trained on inputs "
                            f"{reg_state['input_channels']}, this run has {train_set.input_channels}; "
                            "use the same data.variable, predictors and static fields")
    n_in, n_static = len(train_set.input_channels), len(train_set.static_channels)
    net = build_diffusion(m, n_in, n_static, pair.scale, regression=regression)
    optimizer = make_optimizer(cfg, [p for p in net.parameters() if p.requires_grad])

    start_epoch, best_val, best_epoch, bad_epochs = 0, math.inf, -1, 0
    last_path = run.checkpoint("last")
    if resume and last_path.exists():
        state = load_checkpoint(last_path)
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch = int(state["epoch"]) + 1
        best_val, best_epoch, bad_epochs = float(state["best_val"]), int(state["best_epoch"]), int(state["bad_epochs"])
    else:
        # The residual's RMS over a few training batches makes the diffused signal ~unit variance.
        probe = DataLoader(train_set, batch_size=t.batch_size, shuffle=False)
        batches = [b for _, b in zip(range(8), probe)]
        net.fit_residual_scale(batches)

    model, optimizer = fabric.setup(net, optimizer)
    # The loss is the training forward: route it through Fabric's wrapper (DDP gradient sync).
    model.mark_forward_method("loss")
    train_loader = fabric.setup_dataloaders(
        DataLoader(train_set, batch_size=t.batch_size, shuffle=d.patch_size is None, num_workers=t.num_workers,
                   persistent_workers=t.num_workers > 0, drop_last=True))
    val_loader = DataLoader(val_set, batch_size=t.batch_size, shuffle=False)
    parameters = count_parameters(net)

    if rank0:
        write_text_atomic(run.normalisation_path, _json(normaliser.to_dict()))
        run.update_status(state="running", started=run.status().get("started") or now_iso(), host=socket.gethostname(),
                          pid=os.getpid(), world_size=fabric.world_size, device=str(fabric.device),
                          parameters=parameters, epochs=t.epochs, learning="diffusion",
                          regression_run=reg_info["run_id"] if reg_info else None,
                          residual_scale=float(net.residual_scale),
                          input_channels=list(train_set.input_channels),
                          static_channels=list(train_set.static_channels))
        run.log_event("start", epoch=start_epoch, world_size=fabric.world_size, device=str(fabric.device),
                      parameters=parameters, learning="diffusion")

    summary: dict[str, Any] = {}
    stopped_early = False
    for epoch in range(start_epoch, t.epochs):
        train_set.set_epoch(epoch)
        model.train()
        totals = torch.zeros(2, device=fabric.device)
        wait, started, last_event, tick = 0.0, time.perf_counter(), time.perf_counter(), time.perf_counter()
        for step, batch in enumerate(train_loader):
            wait += time.perf_counter() - tick
            batch = _to_device(batch, fabric.device, False)
            with autocast(cfg, fabric.device):
                loss = model.loss(batch)
            optimizer.zero_grad(set_to_none=True)
            fabric.backward(loss)
            optimizer.step()
            value = loss.detach().float()
            if not torch.isfinite(value):
                raise TrainingError(f"diffusion loss became {value.item()} at epoch {epoch} step {step}; "
                                    "lower training.lr or check the data for NaN outside the mask")
            totals += torch.stack([value, torch.ones((), device=fabric.device)])
            if rank0 and time.perf_counter() - last_event > STEP_EVENT_SECONDS:
                last_event = time.perf_counter()
                run.log_event("step", epoch=epoch, step=step, loss=float(value))
                run.update_status(progress=(epoch + (step + 1) / max(1, len(train_loader))) / t.epochs)
            tick = time.perf_counter()
        elapsed = time.perf_counter() - started
        totals = fabric.all_reduce(totals, reduce_op="sum")
        train_loss = float(totals[0] / totals[1].clamp_min(1))
        samples = int(totals[1].item()) * t.batch_size
        val = validate(net, val_loader, normaliser, val_set, fabric.device, cfg)

        improved = val["val_loss"] < best_val
        if improved:
            best_val, best_epoch, bad_epochs = val["val_loss"], epoch, 0
        else:
            bad_epochs += 1
        if rank0:
            state = {"model": net.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                     "best_val": best_val, "best_epoch": best_epoch, "bad_epochs": bad_epochs,
                     "config": cfg.to_dict(), "input_channels": list(train_set.input_channels),
                     "static_channels": list(train_set.static_channels), "scale": int(pair.scale),
                     "learning": "diffusion", "regression": reg_info}
            if improved:
                save_checkpoint(run.checkpoint("best"), state)
            save_checkpoint(last_path, state)
            run.log_event("epoch", epoch=epoch, train_loss=train_loss, **val, samples_per_s=samples / elapsed,
                          data_wait_fraction=wait / elapsed, seconds=elapsed, best=improved)
            run.update_status(progress=(epoch + 1) / t.epochs, epoch=epoch, best_epoch=best_epoch,
                              best_val_loss=best_val)
        summary = {"epoch": epoch, "train_loss": train_loss, **val, "best_epoch": best_epoch,
                   "best_val_loss": best_val, "samples_per_s": samples / elapsed,
                   "data_wait_fraction": wait / elapsed}
        if bad_epochs >= t.patience:
            stopped_early = True
            if rank0:
                run.log_event("message", text=f"early stopping after epoch {epoch}: no improvement in {t.patience} epochs")
            break
    summary["stopped_early"] = stopped_early
    fabric.barrier()
    return summary


@torch.no_grad()
def validate(net, loader, normaliser, dataset, device, cfg: ExperimentConfig) -> dict[str, float]:
    """Noise-prediction loss with fixed timesteps/noise, and the RMSE of one few-step sample."""
    net.eval()
    generator = torch.Generator().manual_seed(12345)
    losses, sq, n, fields = [], 0.0, 0.0, 0
    for batch in loader:
        batch = _to_device(batch, device, False)
        losses.append(float(net.loss(batch, generator=generator)))
        if fields < VAL_FIELDS:
            k = min(VAL_FIELDS - fields, batch["x"].shape[0])
            pred = net.sample(batch["x"][:k], batch["static_hr"][:k], batch["offset"][:k], sampler="ddim",
                              steps=min(VAL_STEPS, net.train_steps), generator=generator)
            times = dataset.times[batch["time"][:k].cpu().numpy()]
            phys_pred = np.asarray(normaliser.inverse_hr(pred[:, 0].cpu().numpy(), times))
            phys_true = np.asarray(normaliser.inverse_hr(batch["y"][:k, 0].cpu().numpy(), times))
            mask = batch["mask"][:k, 0].cpu().numpy() > 0
            sq += float(np.where(mask, (phys_pred - phys_true) ** 2, 0.0).sum())
            n += float(mask.sum())
            fields += k
    return {"val_loss": float(np.mean(losses)) if losses else math.nan, "val_rmse": math.sqrt(sq / max(n, 1.0))}


__all__ = ["train_diffusion", "rebuild_from_checkpoint", "load_regression", "validate"]
