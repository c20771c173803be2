"""The conditional-GAN trainer (``training.learning="gan"``): pix2pix-style, as DL4DS offers.

The generator is any zoo network (:func:`engine.models.build_model`); the discriminator is a
conditional PatchGAN (:class:`engine.models.discriminator.PatchDiscriminator`) that sees the LR
inputs interpolated to HR and the static fields with the real or generated HR field. Per step:

- discriminator: BCE(D(real), 1) + BCE(D(fake.detach()), 0);
- generator: BCE(D(fake), 1) + ``training.gan_pixel_weight`` x pixel loss (``training.loss``).

Masked pixels (``mask = 0``) are zeroed in both the real and generated fields before the
discriminator sees them, so it cannot tell them apart there, and the pixel loss is mask-aware.

Run-store bookkeeping is the supervised trainer's (:class:`engine.training.loop.EpochLoop`):
events, ``normalisation.json``, status, and atomic ``checkpoints/best.pt`` / ``last.pt`` with the
same keys plus ``discriminator`` and ``discriminator_optimizer``; "best" is the lowest validation
pixel loss; a run resumes after its last completed epoch.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch.utils.data import DataLoader

from engine.models import build_model, count_parameters
from engine.models.discriminator import PatchDiscriminator
from engine.runs import Run
from engine.training.losses import build_loss
from engine.training.loop import EpochLoop, autocast, configure, make_fabric, make_train_loader, prepare_data
from engine.training.trainer import evaluate_loss


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
    cfg = configure(run)  # hardware-dependent settings decided and recorded
    t, d = cfg.training, cfg.data
    fabric = make_fabric(cfg)
    fabric.launch()
    fabric.seed_everything(t.seed)

    data = prepare_data(cfg)
    n_in, n_static = len(data.train.input_channels), len(data.train.static_channels)
    generator = build_model(cfg.model, n_in, n_static, data.pair.scale, time_window=d.time_window,
                            grid_shape=data.grid_shape)
    discriminator = PatchDiscriminator(n_in, n_static, data.pair.scale, cfg.model.discriminator_filters)
    if t.channels_last:
        generator = generator.to(memory_format=torch.channels_last)
        discriminator = discriminator.to(memory_format=torch.channels_last)
    opt_g = _make_adam(generator.parameters(), t.lr)
    opt_d = _make_adam(discriminator.parameters(), t.lr)
    pixel_loss = build_loss(t.loss)

    loop = EpochLoop(run, cfg, fabric, data)
    objects = {"model": generator, "optimizer": opt_g, "discriminator": discriminator,
               "discriminator_optimizer": opt_d}
    first_epoch, _ = loop.resume(objects, enabled=resume)
    gen, opt_g_f = fabric.setup(generator, opt_g)
    disc, opt_d_f = fabric.setup(discriminator, opt_d)
    train_loader = make_train_loader(cfg, fabric, data.train)  # chunk-aware, sharded by worker and rank
    val_loader = fabric.setup_dataloaders(DataLoader(data.val, batch_size=t.batch_size, shuffle=False))
    loop.start(first_epoch, count_parameters(generator), learning="gan",
               discriminator_parameters=count_parameters(discriminator))

    for epoch in loop.epochs(first_epoch):
        gen.train()
        disc.train()
        for batch in loop.batches(train_loader, epoch):
            pixel, adversarial, d_loss = gan_step(gen, disc, opt_g_f, opt_d_f, batch, pixel_loss, t.gan_pixel_weight,
                                                  backward=fabric.backward,
                                                  autocast=lambda: autocast(cfg, fabric.device))
            loop.record(train_loss=pixel, adversarial_loss=adversarial, discriminator_loss=d_loss)
        val = evaluate_loss(gen, val_loader, pixel_loss, data, fabric, cfg)
        if loop.end_epoch(epoch, val, objects):
            break
    return loop.finish()
