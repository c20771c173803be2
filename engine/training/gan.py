"""The conditional-GAN trainer (``training.learning="gan"``): pix2pix-style, as DL4DS offers.

The generator is any zoo network (:func:`engine.models.build_model`); the discriminator is a
conditional PatchGAN (:class:`engine.models.discriminator.PatchDiscriminator`) that sees the LR
inputs interpolated to HR and the static fields with the real or generated HR field. Per step:

- discriminator: BCE(D(real), 1) + BCE(D(fake.detach()), 0);
- generator: BCE(D(fake), 1) + ``training.gan_pixel_weight`` x pixel loss (``training.loss``).

Masked pixels (``mask = 0``) are zeroed in both the real and generated fields before the
discriminator sees them, so it cannot tell them apart there, and the pixel loss is mask-aware.

Run-store conventions are the supervised trainer's (:mod:`engine.training.trainer`): events
("start", "step", "epoch"), ``normalisation.json``, status, and atomic ``checkpoints/best.pt`` /
``last.pt`` with the same keys plus ``discriminator`` and ``discriminator_optimizer``; "best" is the
lowest validation pixel loss; a run resumes after its last completed epoch.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import time
from typing import Any

import torch
from torch.utils.data import DataLoader

from engine.models import build_model, count_parameters
from engine.models.discriminator import PatchDiscriminator
from engine.runs import Run, now_iso, write_text_atomic
from engine.training.losses import build_loss
from engine.training.trainer import (
    STEP_EVENT_SECONDS,
    TrainingError,
    _json,
    _to_device,
    autocast,
    evaluate_loss,
    fit_normaliser,
    load_checkpoint,
    make_fabric,
    save_checkpoint,
)


def discriminator_loss(discriminator, batch: dict[str, torch.Tensor], fake: torch.Tensor) -> torch.Tensor:
    """BCE(D(real), 1) + BCE(D(fake), 0), halved; ``fake`` should be detached (float32 scalar)."""
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    x, static, y, mask = batch["x"], batch["static_hr"], batch["y"], batch["mask"]
    real_logits = discriminator(x, static, y * mask).float()
    fake_logits = discriminator(x, static, fake * mask).float()
    return 0.5 * (bce(real_logits, torch.ones_like(real_logits)) + bce(fake_logits, torch.zeros_like(fake_logits)))


def generator_loss(discriminator, batch: dict[str, torch.Tensor], fake: torch.Tensor, pixel_loss,
                   pixel_weight: float, autocast=contextlib.nullcontext) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(total, pixel, adversarial)``: BCE(D(fake), 1) + ``pixel_weight`` x pixel loss (the pixel
    loss outside autocast: SSIM's convolutions need float32)."""
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    with autocast():
        logits = discriminator(batch["x"], batch["static_hr"], fake * batch["mask"]).float()
    adversarial = bce(logits, torch.ones_like(logits))
    pixel = pixel_loss(fake, batch["y"], batch["mask"])
    return adversarial + pixel_weight * pixel, pixel, adversarial


def gan_step(generator, discriminator, opt_g, opt_d, batch, pixel_loss, pixel_weight: float, backward=None,
             autocast=None):
    """One adversarial step (discriminator, then generator against the updated discriminator).

    ``backward`` is ``fabric.backward`` in the trainer (plain ``loss.backward()`` otherwise);
    ``autocast`` a callable returning the forward passes' autocast context (none by default).
    Returns detached ``(pixel, adversarial, discriminator)`` losses.
    """
    backward = backward or (lambda loss: loss.backward())
    autocast = autocast or contextlib.nullcontext
    with autocast():
        fake = generator(batch["x"], batch["static_hr"], batch.get("offset"))
    fake = fake.float()
    with autocast():
        d_loss = discriminator_loss(discriminator, batch, fake.detach())
    opt_d.zero_grad(set_to_none=True)
    backward(d_loss)
    opt_d.step()
    discriminator.requires_grad_(False)  # the generator step needs no discriminator gradients
    try:
        g_loss, pixel, adversarial = generator_loss(discriminator, batch, fake, pixel_loss, pixel_weight, autocast)
        opt_g.zero_grad(set_to_none=True)
        backward(g_loss)
        opt_g.step()
    finally:
        discriminator.requires_grad_(True)
    return pixel.detach(), adversarial.detach(), d_loss.detach()


def _make_adam(params, lr: float) -> torch.optim.Optimizer:
    # beta1 = 0.5: the pix2pix/DCGAN setting, steadier for the adversarial game.
    return torch.optim.Adam(params, lr=lr, betas=(0.5, 0.999))


def train_gan(run: Run, resume: bool = True) -> dict[str, Any]:
    """Train the run's configuration adversarially; return the same summary as ``train``."""
    from engine.data.pairing import make_pair
    from engine.data.torch_dataset import DownscalingDataset

    cfg = run.config.validate()
    t, d = cfg.training, cfg.data
    fabric = make_fabric(cfg)
    fabric.launch()
    rank0 = fabric.is_global_zero
    fabric.seed_everything(t.seed)

    pair = make_pair(d)
    normaliser = fit_normaliser(cfg, pair)
    common = dict(seed=t.seed, sample=d.sample, time_window=d.time_window)
    train_set = DownscalingDataset(pair, normaliser, d.train_period, patch_size=d.patch_size,
                                   samples_per_epoch=t.samples_per_epoch, **common)
    val_set = DownscalingDataset(pair, normaliser, d.val_period, patch_size=None, **common)
    n_in, n_static = len(train_set.input_channels), len(train_set.static_channels)
    grid_shape = tuple(int(v) for v in train_set.hr_shape)
    generator = build_model(cfg.model, n_in, n_static, pair.scale, time_window=d.time_window,
                            grid_shape=grid_shape if cfg.model.lcb else None)
    discriminator = PatchDiscriminator(n_in, n_static, pair.scale, cfg.model.discriminator_filters)
    if t.channels_last:
        generator = generator.to(memory_format=torch.channels_last)
        discriminator = discriminator.to(memory_format=torch.channels_last)
    opt_g = _make_adam(generator.parameters(), t.lr)
    opt_d = _make_adam(discriminator.parameters(), t.lr)
    pixel_loss = build_loss(t.loss)

    start_epoch, best_val, best_epoch, bad_epochs = 0, math.inf, -1, 0
    last_path = run.checkpoint("last")
    if resume and last_path.exists():
        state = load_checkpoint(last_path)
        generator.load_state_dict(state["model"])
        opt_g.load_state_dict(state["optimizer"])
        discriminator.load_state_dict(state["discriminator"])
        opt_d.load_state_dict(state["discriminator_optimizer"])
        start_epoch = int(state["epoch"]) + 1
        best_val, best_epoch, bad_epochs = float(state["best_val"]), int(state["best_epoch"]), int(state["bad_epochs"])

    gen, opt_g = fabric.setup(generator, opt_g)
    disc, opt_d = fabric.setup(discriminator, opt_d)
    train_loader = fabric.setup_dataloaders(
        DataLoader(train_set, batch_size=t.batch_size, shuffle=False, num_workers=t.num_workers,
                   persistent_workers=t.num_workers > 0, drop_last=True))
    val_loader = fabric.setup_dataloaders(DataLoader(val_set, batch_size=t.batch_size, shuffle=False))
    parameters = count_parameters(generator)

    if rank0:
        write_text_atomic(run.normalisation_path, _json(normaliser.to_dict()))
        run.update_status(state="running", started=run.status().get("started") or now_iso(), host=socket.gethostname(),
                          pid=os.getpid(), world_size=fabric.world_size, device=str(fabric.device),
                          parameters=parameters, discriminator_parameters=count_parameters(discriminator),
                          epochs=t.epochs, learning="gan", input_channels=list(train_set.input_channels),
                          static_channels=list(train_set.static_channels))
        run.log_event("start", epoch=start_epoch, world_size=fabric.world_size, device=str(fabric.device),
                      parameters=parameters, learning="gan")

    summary: dict[str, Any] = {}
    stopped_early = False
    for epoch in range(start_epoch, t.epochs):
        train_set.set_epoch(epoch)
        gen.train()
        disc.train()
        totals = torch.zeros(4, device=fabric.device)  # pixel, adversarial, discriminator, batches
        wait, started, last_event, tick = 0.0, time.perf_counter(), time.perf_counter(), time.perf_counter()
        for step, batch in enumerate(train_loader):
            wait += time.perf_counter() - tick
            batch = _to_device(batch, fabric.device, t.channels_last)
            pixel, adversarial, d_loss = gan_step(gen, disc, opt_g, opt_d, batch, pixel_loss, t.gan_pixel_weight,
                                                  backward=fabric.backward,
                                                  autocast=lambda: autocast(cfg, fabric.device))
            values = torch.stack([pixel, adversarial, d_loss]).float()
            if not torch.isfinite(values).all():
                raise TrainingError(f"GAN losses became {values.tolist()} at epoch {epoch} step {step}; "
                                    "lower training.lr or training.gan_pixel_weight")
            totals += torch.cat([values, torch.ones(1, device=fabric.device)])
            if rank0 and time.perf_counter() - last_event > STEP_EVENT_SECONDS:
                last_event = time.perf_counter()
                run.log_event("step", epoch=epoch, step=step, loss=float(pixel), adversarial=float(adversarial),
                              discriminator=float(d_loss))
                run.update_status(progress=(epoch + (step + 1) / max(1, len(train_loader))) / t.epochs)
            tick = time.perf_counter()
        elapsed = time.perf_counter() - started
        totals = fabric.all_reduce(totals, reduce_op="sum")
        n = totals[3].clamp_min(1)
        train_loss, adv_loss, disc_loss = (float(totals[i] / n) for i in range(3))
        samples = int(totals[3].item()) * t.batch_size
        val = evaluate_loss(gen, val_loader, pixel_loss, normaliser, val_set, fabric, cfg)

        improved = val["val_loss"] < best_val
        if improved:
            best_val, best_epoch, bad_epochs = val["val_loss"], epoch, 0
        else:
            bad_epochs += 1
        if rank0:
            state = {"model": generator.state_dict(), "optimizer": opt_g.state_dict(), "epoch": epoch,
                     "best_val": best_val, "best_epoch": best_epoch, "bad_epochs": bad_epochs,
                     "config": cfg.to_dict(), "input_channels": list(train_set.input_channels),
                     "static_channels": list(train_set.static_channels), "scale": int(pair.scale),
                     "discriminator": discriminator.state_dict(), "discriminator_optimizer": opt_d.state_dict(),
                     "grid_shape": list(grid_shape), "time_window": int(d.time_window)}
            if improved:
                save_checkpoint(run.checkpoint("best"), state)
            save_checkpoint(last_path, state)
            run.log_event("epoch", epoch=epoch, train_loss=train_loss, adversarial_loss=adv_loss,
                          discriminator_loss=disc_loss, **val, samples_per_s=samples / elapsed,
                          data_wait_fraction=wait / elapsed, seconds=elapsed, best=improved)
            run.update_status(progress=(epoch + 1) / t.epochs, epoch=epoch, best_epoch=best_epoch,
                              best_val_loss=best_val)
        summary = {"epoch": epoch, "train_loss": train_loss, "adversarial_loss": adv_loss,
                   "discriminator_loss": disc_loss, **val, "best_epoch": best_epoch, "best_val_loss": best_val,
                   "samples_per_s": samples / elapsed, "data_wait_fraction": wait / elapsed}
        if bad_epochs >= t.patience:
            stopped_early = True
            if rank0:
                run.log_event("message", text=f"early stopping after epoch {epoch}: no improvement in {t.patience} epochs")
            break
    summary["stopped_early"] = stopped_early
    fabric.barrier()
    return summary
