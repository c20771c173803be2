"""The supervised trainer: one loop over Lightning Fabric, writing everything to the run store.

Fabric handles devices, mixed precision (``bf16-mixed`` autocast on CPU and GPU), distributed
data parallel (DDP from a SLURM or torchrun environment) and per-rank data sharding; the loop
itself stays a plain, readable PyTorch loop. Only global rank 0 writes to the run store.

What a run gets:

- ``normalisation.json`` — statistics fitted on the training period;
- ``events.jsonl`` — "step" events (at most every ``STEP_EVENT_SECONDS``) and one "epoch" event per
  epoch (train loss, val loss, val RMSE in physical units, samples/s, data-wait fraction);
- ``checkpoints/last.pt`` every epoch and ``checkpoints/best.pt`` when validation improves, each
  written to a temporary file and renamed, so a killed process never leaves half a checkpoint;
- ``status.json`` — state and progress; resuming starts after the last completed epoch.

Example
-------
>>> run = RunStore(tmp).create(ExperimentConfig().replace(training={"epochs": 1}))  # doctest: +SKIP
>>> train(run)["best_val_loss"]                                                     # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import socket
import time
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from engine.config import ExperimentConfig
from engine.data.pairing import make_pair
from engine.data.torch_dataset import DownscalingDataset
from engine.models import build_model, count_parameters
from engine.registry import NORMALISATIONS
from engine.runs import Run, atomic_path, now_iso, write_text_atomic
from engine.training.losses import build_loss

STEP_EVENT_SECONDS = 2.0


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became NaN); the message says why."""


def make_fabric(cfg: ExperimentConfig):
    """A Fabric for this configuration: device, precision, and DDP when the environment (SLURM,
    torchrun) has more than one task."""
    from lightning.fabric import Fabric

    t, launch = cfg.training, cfg.launch
    accelerator = t.device
    if accelerator == "auto":
        accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    if accelerator == "cuda" and not torch.cuda.is_available():
        raise TrainingError("training.device='cuda' but no CUDA device is visible; accepted here: 'cpu' or 'auto'")
    # bf16 autocast is applied by the loop itself (see autocast()), not by Fabric: Fabric's
    # "bf16-mixed" also casts the *inputs* to bfloat16, which rounds the LR field to 3 significant
    # digits before the interpolated residual is added (~0.05 K on temperature) and slows bicubic.
    precision = "32-true" if t.precision == "bf16-mixed" else t.precision
    world = int(os.environ.get("WORLD_SIZE") or os.environ.get("SLURM_NTASKS") or 1)
    if world > 1:
        devices = max(1, world // max(1, launch.nodes))
        return Fabric(accelerator=accelerator, devices=devices, num_nodes=launch.nodes, strategy="ddp",
                      precision=precision)
    # One process: say so explicitly, otherwise Fabric inspects SLURM variables (and warns about
    # srun) when a single-task job runs on a cluster node.
    from lightning.fabric.plugins.environments import LightningEnvironment

    return Fabric(accelerator=accelerator, devices=1, precision=precision, plugins=[LightningEnvironment()])


def autocast(cfg: ExperimentConfig, device: torch.device):
    """The forward-pass autocast context: bfloat16 for ``precision="bf16-mixed"`` (weights, inputs
    and the loss stay float32), a no-op otherwise."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.training.precision == "bf16-mixed")


def fit_normaliser(cfg: ExperimentConfig, pair):
    """The configured normalisation, fitted on the training period only."""
    normaliser = NORMALISATIONS.get(cfg.data.normalisation)()
    train_times = pair.hr.time.sel(time=slice(*cfg.data.train_period)).values
    normaliser.fit(pair, train_times)
    return normaliser


def make_optimizer(cfg: ExperimentConfig, params) -> torch.optim.Optimizer:
    t = cfg.training
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.lr, weight_decay=1e-4)
    return torch.optim.SGD(params, lr=t.lr, momentum=0.9)


def make_scheduler(cfg: ExperimentConfig, optimizer: torch.optim.Optimizer):
    """The learning-rate schedule, stepped once per epoch: ``cosine`` decays the rate to 1 % of
    ``training.lr`` over ``training.epochs`` (the last epochs refine at a small rate, which is
    where most of the final skill comes from); ``constant`` keeps it."""
    if cfg.training.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.training.epochs,
                                                          eta_min=cfg.training.lr * 0.01)
    return None


def save_checkpoint(path, state: dict[str, Any]) -> None:
    """torch.save through a temporary file and a rename (atomic)."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path) -> dict[str, Any]:
    # weights_only: a checkpoint is data, never code (no pickle of arbitrary objects).
    return torch.load(path, map_location="cpu", weights_only=True)


def _to_device(batch: dict[str, torch.Tensor], device, channels_last: bool) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device, non_blocking=True)
            if channels_last and value.ndim == 4:
                value = value.contiguous(memory_format=torch.channels_last)
        out[key] = value
    return out


def train(run: Run, resume: bool = True) -> dict[str, Any]:
    """Train the run's configuration; return a summary (best epoch, losses, timings).

    Resumes after the last completed epoch when ``checkpoints/last.pt`` exists and ``resume``.
    """
    if run.config.training.learning == "gan":  # the adversarial loop lives in its own module
        from engine.training.gan import train_gan
        return train_gan(run, resume=resume)
    if run.config.training.learning == "diffusion":  # noise-prediction loop: engine.training.diffusion
        from engine.training.diffusion import train_diffusion
        return train_diffusion(run, resume=resume)
    cfg = run.config.validate()
    t = cfg.training
    fabric = make_fabric(cfg)
    fabric.launch()
    rank0 = fabric.is_global_zero
    fabric.seed_everything(t.seed)

    pair = make_pair(cfg.data)
    normaliser = fit_normaliser(cfg, pair)
    train_set = DownscalingDataset(pair, normaliser, cfg.data.train_period, patch_size=cfg.data.patch_size,
                                   samples_per_epoch=t.samples_per_epoch, seed=t.seed,
                                   time_window=cfg.data.time_window)
    val_set = DownscalingDataset(pair, normaliser, cfg.data.val_period, patch_size=None, seed=t.seed,
                                 time_window=cfg.data.time_window)
    grid_shape = tuple(int(v) for v in train_set.hr_shape)
    net = build_model(cfg.model, len(train_set.input_channels), len(train_set.static_channels), pair.scale,
                      time_window=cfg.data.time_window, grid_shape=grid_shape)
    if t.channels_last:
        net = net.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(cfg, net.parameters())
    scheduler = make_scheduler(cfg, optimizer)
    loss_fn = build_loss(t.loss)

    start_epoch, best_val, best_epoch, bad_epochs = 0, math.inf, -1, 0
    last_path = run.checkpoint("last")
    if resume and last_path.exists():
        state = load_checkpoint(last_path)
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and "scheduler" in state:
            scheduler.load_state_dict(state["scheduler"])
        start_epoch = int(state["epoch"]) + 1
        best_val, best_epoch, bad_epochs = float(state["best_val"]), int(state["best_epoch"]), int(state["bad_epochs"])

    model, optimizer = fabric.setup(net, optimizer)
    train_loader = fabric.setup_dataloaders(
        # Random patches are already drawn at random; whole fields (patch_size None) come in time
        # order, so shuffle them (consecutive days in one batch would be nearly duplicates).
        DataLoader(train_set, batch_size=t.batch_size, shuffle=cfg.data.patch_size is None, num_workers=t.num_workers,
                   persistent_workers=t.num_workers > 0, drop_last=True))
    val_loader = fabric.setup_dataloaders(DataLoader(val_set, batch_size=t.batch_size, shuffle=False))

    if rank0:
        write_text_atomic(run.normalisation_path, _json(normaliser.to_dict()))
        run.update_status(state="running", started=run.status().get("started") or now_iso(), host=socket.gethostname(),
                          pid=os.getpid(), world_size=fabric.world_size, device=str(fabric.device),
                          parameters=count_parameters(net), epochs=t.epochs,
                          input_channels=list(train_set.input_channels),
                          static_channels=list(train_set.static_channels))
        run.log_event("start", epoch=start_epoch, world_size=fabric.world_size, device=str(fabric.device),
                      parameters=count_parameters(net))

    summary: dict[str, Any] = {}
    stopped_early = False
    for epoch in range(start_epoch, t.epochs):
        train_set.set_epoch(epoch)
        model.train()
        totals = torch.zeros(2, device=fabric.device)  # loss sum, batches
        wait, started, last_event = 0.0, time.perf_counter(), time.perf_counter()
        tick = time.perf_counter()
        for step, batch in enumerate(train_loader):
            wait += time.perf_counter() - tick
            batch = _to_device(batch, fabric.device, t.channels_last)
            with autocast(cfg, fabric.device):
                pred = model(batch["x"], batch["static_hr"], batch["offset"])
            loss = loss_fn(pred.float(), batch["y"], batch["mask"])
            optimizer.zero_grad(set_to_none=True)
            fabric.backward(loss)
            optimizer.step()
            value = loss.detach()
            if not torch.isfinite(value):
                raise TrainingError(f"training loss became {value.item()} at epoch {epoch} step {step}; "
                                    "lower training.lr or check the data for NaN outside the mask")
            totals += torch.stack([value.float(), torch.ones((), device=fabric.device)])
            if rank0 and time.perf_counter() - last_event > STEP_EVENT_SECONDS:
                last_event = time.perf_counter()
                run.log_event("step", epoch=epoch, step=step, loss=float(value))
                run.update_status(progress=(epoch + (step + 1) / max(1, len(train_loader))) / t.epochs)
            tick = time.perf_counter()
        elapsed = time.perf_counter() - started
        totals = fabric.all_reduce(totals, reduce_op="sum")
        train_loss = float(totals[0] / totals[1].clamp_min(1))
        samples = int(totals[1].item()) * t.batch_size
        val = evaluate_loss(model, val_loader, loss_fn, normaliser, val_set, fabric, cfg)

        if scheduler is not None:
            scheduler.step()
        improved = val["val_loss"] < best_val
        if improved:
            best_val, best_epoch, bad_epochs = val["val_loss"], epoch, 0
        else:
            bad_epochs += 1
        if rank0:
            state = {"model": net.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                     "scheduler": scheduler.state_dict() if scheduler is not None else {},
                     "best_val": best_val, "best_epoch": best_epoch, "bad_epochs": bad_epochs,
                     "config": cfg.to_dict(), "input_channels": list(train_set.input_channels),
                     "static_channels": list(train_set.static_channels), "scale": int(pair.scale),
                     "grid_shape": list(grid_shape), "time_window": int(cfg.data.time_window)}
            # Event first, checkpoints after: a process killed in between redoes this epoch on
            # resume and logs it again (Run.epochs keeps the latest), so no epoch goes unlogged.
            run.log_event("epoch", epoch=epoch, train_loss=train_loss, **val, lr=optimizer.param_groups[0]["lr"],
                          samples_per_s=samples / elapsed,
                          data_wait_fraction=wait / elapsed, seconds=elapsed, best=improved)
            if improved:
                save_checkpoint(run.checkpoint("best"), state)
            save_checkpoint(last_path, state)  # after best: a resumed run never lacks its best
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
def evaluate_loss(model, loader, loss_fn, normaliser, dataset, fabric, cfg: ExperimentConfig) -> dict[str, float]:
    """Validation loss (normalised space) and RMSE in physical units, reduced over ranks."""
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=fabric.device)  # loss*n, batches, sq err, valid px
    for batch in loader:
        batch = _to_device(batch, fabric.device, cfg.training.channels_last)
        with autocast(cfg, fabric.device):
            pred = model(batch["x"], batch["static_hr"], batch["offset"]).float()
        sums[0] += loss_fn(pred, batch["y"], batch["mask"]).double()
        sums[1] += 1
        times = dataset.times[batch["time"].cpu().numpy()]
        phys_pred = normaliser.inverse_hr(pred[:, 0].cpu().numpy(), times)
        phys_true = normaliser.inverse_hr(batch["y"][:, 0].cpu().numpy(), times)
        mask = batch["mask"][:, 0].cpu().numpy() > 0
        sq = np.where(mask, (np.asarray(phys_pred) - np.asarray(phys_true)) ** 2, 0.0)
        sums[2] += float(sq.sum())
        sums[3] += float(mask.sum())
    sums = fabric.all_reduce(sums, reduce_op="sum")
    return {"val_loss": float(sums[0] / sums[1].clamp_min(1)), "val_rmse": float(torch.sqrt(sums[2] / sums[3].clamp_min(1)))}


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj, indent=1, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
