"""The supervised trainer: one loop over Lightning Fabric, writing everything to the run store.

Fabric handles devices, distributed data parallel (DDP from a SLURM or torchrun environment) and
per-rank data sharding; bfloat16 autocast and channels-last memory come from the configuration
(the fast defaults on CPUs and GPUs alike). The loop itself stays a plain PyTorch loop; the
run-store bookkeeping it shares with the GAN and diffusion trainers is :class:`EpochLoop`.

What a run gets:

- ``normalisation.json`` — statistics fitted on the training period;
- ``events.jsonl`` — "step" events and one "epoch" event per epoch (train loss, val loss, val RMSE
  in physical units, learning rate, samples/s, data-wait fraction);
- ``checkpoints/last.pt`` every epoch and ``checkpoints/best.pt`` when validation improves, each
  written to a temporary file and renamed, so a killed process never leaves half a checkpoint;
- ``status.json`` — state and progress; resuming starts after the last completed epoch.

``training.learning`` chooses the trainer: "supervised" here, "gan" (:mod:`engine.training.gan`),
"diffusion" (:mod:`engine.training.diffusion`).

Example
-------
>>> run = RunStore(tmp).create(ExperimentConfig().replace(training={"epochs": 1}))  # doctest: +SKIP
>>> train(run)["best_val_loss"]                                                     # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from engine.config import ExperimentConfig
from engine.models import build_model, count_parameters
from engine.runs import Run
from engine.training.ema import EMA, ema_objects
from engine.training.losses import build_loss
from engine.training.loop import (
    EpochLoop,
    autocast,
    configure,
    make_train_loader,
    make_fabric,
    make_optimizer,
    make_scheduler,
    prepare_data,
    to_device,
)


def train(run: Run, resume: bool = True) -> dict[str, Any]:
    """Train the run's configuration; return a summary (best epoch, losses, timings).

    Resumes after the last completed epoch when ``checkpoints/last.pt`` exists and ``resume``.
    """
    if run.config.training.seeds > 1:  # N members, one run folder each: engine.training.seeds
        from engine.training.seeds import train_seeds
        return train_seeds(run, resume=resume)
    if run.config.training.learning == "gan":  # the adversarial loop lives in its own module
        from engine.training.gan import train_gan
        return train_gan(run, resume=resume)
    if run.config.training.learning == "diffusion":  # noise-prediction loop: engine.training.diffusion
        from engine.training.diffusion import train_diffusion
        return train_diffusion(run, resume=resume)
    cfg = configure(run)  # hardware-dependent settings decided and recorded
    t = cfg.training
    fabric = make_fabric(cfg)
    fabric.launch()
    fabric.seed_everything(t.seed)

    data = prepare_data(cfg)
    net = build_model(cfg.model, len(data.train.input_channels), len(data.train.static_channels), data.pair.scale,
                      time_window=cfg.data.time_window, grid_shape=data.grid_shape)
    if t.channels_last:
        net = net.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(cfg, net.parameters())
    scheduler = make_scheduler(cfg, optimizer)
    loss_fn = build_loss(t.loss)

    # The moving average of the weights is validated and saved as "model" (engine.training.ema).
    ema = EMA(net, t.ema_decay) if t.ema_decay > 0 else None
    objects = ema_objects(net, ema, optimizer=optimizer, scheduler=scheduler)
    loop = EpochLoop(run, cfg, fabric, data)
    first_epoch, _ = loop.resume(objects, enabled=resume)
    model, optimizer = fabric.setup(net, optimizer)
    if ema is not None:
        ema.module.to(fabric.device)
    train_loader = make_train_loader(cfg, fabric, data.train)  # chunk-aware, sharded by worker and rank
    val_loader = fabric.setup_dataloaders(DataLoader(data.val, batch_size=t.batch_size, shuffle=False))
    loop.start(first_epoch, count_parameters(net))

    for epoch in loop.epochs(first_epoch):
        model.train()
        for batch in loop.batches(train_loader, epoch):
            with autocast(cfg, fabric.device):
                pred = model(batch["x"], batch["static_hr"], batch["offset"])
            loss = loss_fn(pred.float(), batch["y"], batch["mask"])
            optimizer.zero_grad(set_to_none=True)
            fabric.backward(loss)
            optimizer.step()
            if ema is not None:
                ema.update(net)
            loop.record(train_loss=loss)
        val = evaluate_loss(model if ema is None else ema.module, val_loader, loss_fn, data, fabric, cfg)
        val["lr"] = optimizer.param_groups[0]["lr"]
        if scheduler is not None:
            scheduler.step()
        if loop.end_epoch(epoch, val, objects):
            break
    return loop.finish()


@torch.no_grad()
def evaluate_loss(model, loader, loss_fn, data, fabric, cfg: ExperimentConfig) -> dict[str, float]:
    """Validation loss (normalised space) and RMSE in physical units, reduced over ranks."""
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=fabric.device)  # loss*n, batches, sq err, valid px
    for batch in loader:
        batch = to_device(batch, fabric.device, cfg.training.channels_last)
        with autocast(cfg, fabric.device):
            pred = model(batch["x"], batch["static_hr"], batch["offset"]).float()
        sums[0] += loss_fn(pred, batch["y"], batch["mask"]).double()
        sums[1] += 1
        times = data.val.times[batch["time"].cpu().numpy()]
        phys_pred = data.normaliser.inverse_hr(pred[:, 0].cpu().numpy(), times)
        phys_true = data.normaliser.inverse_hr(batch["y"][:, 0].cpu().numpy(), times)
        mask = batch["mask"][:, 0].cpu().numpy() > 0
        sq = np.where(mask, (np.asarray(phys_pred) - np.asarray(phys_true)) ** 2, 0.0)
        sums[2] += float(sq.sum())
        sums[3] += float(mask.sum())
    sums = fabric.all_reduce(sums, reduce_op="sum")
    return {"val_loss": float(sums[0] / sums[1].clamp_min(1)), "val_rmse": float(torch.sqrt(sums[2] / sums[3].clamp_min(1)))}
