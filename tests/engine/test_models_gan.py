"""Conditional GAN: the PatchGAN discriminator, one adversarial step, and the GAN trainer through
the run store (checkpoints carry the discriminator)."""

from __future__ import annotations

import io

import pytest
import torch

from engine.config import ModelConfig
from engine.models import build_model
from engine.models.discriminator import PatchDiscriminator
from engine.training.gan import gan_step
from engine.training.losses import build_loss


def _batch(scale=4, lr=8, batch=2, time_window=1):
    g = torch.Generator().manual_seed(0)
    x_shape = (batch, 3, lr, lr) if time_window == 1 else (batch, time_window, 3, lr, lr)
    y = torch.randn(batch, 1, lr * scale, lr * scale, generator=g)
    mask = torch.ones_like(y)
    mask[..., :4, :] = 0
    return {"x": torch.randn(*x_shape, generator=g), "static_hr": torch.randn(batch, 2, lr * scale, lr * scale, generator=g),
            "y": y, "mask": mask, "offset": torch.tensor([[0, 0], [8, 4]])[:batch]}


def test_discriminator_shapes_and_checks():
    disc = PatchDiscriminator(3, 2, 4, filters=8)
    b = _batch()
    assert disc(b["x"], b["static_hr"], b["y"]).shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match=r"expected a candidate of shape \(2, 1, 32, 32\)"):
        disc(b["x"], b["static_hr"], b["y"][..., :-1])


@pytest.mark.parametrize("lcb, time_window", [(False, 1), (True, 1), (False, 3)])
def test_one_gan_step_updates_both_networks(lcb, time_window):
    torch.manual_seed(0)
    gen = build_model(ModelConfig(filters=4, blocks=1, lcb=lcb), 3, 2, 4, time_window=time_window,
                      grid_shape=(48, 40) if lcb else None)
    disc = PatchDiscriminator(3, 2, 4, filters=8)
    opt_g, opt_d = torch.optim.Adam(gen.parameters(), 1e-3), torch.optim.Adam(disc.parameters(), 1e-3)
    before_g = {k: v.clone() for k, v in gen.state_dict().items()}
    before_d = {k: v.clone() for k, v in disc.state_dict().items()}
    pixel, adversarial, d_loss = gan_step(gen, disc, opt_g, opt_d, _batch(time_window=time_window), build_loss("mae"), 100.0)
    assert all(torch.isfinite(v) for v in (pixel, adversarial, d_loss))
    assert any(not torch.equal(before_g[k], v) for k, v in gen.state_dict().items())
    assert any(not torch.equal(before_d[k], v) for k, v in disc.state_dict().items())
    assert all(p.requires_grad for p in disc.parameters())  # frozen only during the generator step


def test_discriminator_checkpoint_round_trip():
    disc = PatchDiscriminator(3, 2, 4, filters=8).eval()
    buffer = io.BytesIO()
    torch.save({"discriminator": disc.state_dict()}, buffer)
    buffer.seek(0)
    other = PatchDiscriminator(3, 2, 4, filters=8).eval()
    other.load_state_dict(torch.load(buffer, weights_only=True)["discriminator"])
    b = _batch()
    assert torch.equal(disc(b["x"], b["static_hr"], b["y"]), other(b["x"], b["static_hr"], b["y"]))


@pytest.mark.slow
def test_gan_trainer_through_the_run_store(tmp_path, tiny_config):
    from engine.runs import RunStore
    from engine.training.loop import load_checkpoint
    from engine.training.trainer import train

    cfg = tiny_config.replace(training={"learning": "gan", "epochs": 2, "samples_per_epoch": 32},
                              model={"discriminator_filters": 8})
    run = RunStore(tmp_path).create(cfg)
    summary = train(run)  # dispatches to engine.training.gan.train_gan
    assert [e["epoch"] for e in run.epochs()] == [0, 1]
    assert all(k in run.epochs()[-1] for k in ("adversarial_loss", "discriminator_loss", "val_rmse"))
    assert summary["best_epoch"] in (0, 1)
    state = load_checkpoint(run.checkpoint("last"))
    assert {"model", "optimizer", "epoch", "config", "discriminator", "discriminator_optimizer"} <= set(state)
    assert not list(run.checkpoint_dir.glob("*.tmp"))
    # resume: a third epoch continues from last.pt, discriminator included
    run.config_path.write_text(cfg.replace(training={"epochs": 3}).to_yaml())
    train(run)
    assert [e["epoch"] for e in run.events("start")] == [0, 2]
