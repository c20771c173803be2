"""Diffusion: denoisers, samplers from diffusers apart from the denoiser, the (residual) diffusion
model's objective and sampling, tiled sampling, and the trainer through the run store."""

from __future__ import annotations

import pytest
import torch

from engine.config import ModelConfig
from engine.models import build_model
from engine.models.diffusion import (
    SAMPLERS,
    DiffusionDownscaler,
    build_denoiser,
    build_diffusion,
    make_scheduler,
    sample,
)

SCALE = 4


def _batch(batch=2, lr=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    H = lr * SCALE
    mask = torch.ones(batch, 1, H, H)
    mask[..., :3, :] = 0
    return {"x": torch.randn(batch, 3, lr, lr, generator=g), "static_hr": torch.randn(batch, 2, H, H, generator=g),
            "y": torch.randn(batch, 1, H, H, generator=g), "mask": mask, "offset": torch.zeros(batch, 2, dtype=torch.long)}


def _model(regression=None, denoiser="unet", steps=50):
    torch.manual_seed(0)
    cfg = ModelConfig(filters=4, blocks=1, denoiser=denoiser, diffusion_steps=steps, sampling_steps=3)
    return build_diffusion(cfg, 3, 2, SCALE, regression=regression)


@pytest.mark.parametrize("name", ["unet", "diffusers"])
def test_denoisers_shapes_and_checks(name):
    net = build_denoiser(name, cond_channels=6, filters=4, levels=2)
    z, cond = torch.randn(2, 1, 20, 28), torch.randn(2, 6, 20, 28)  # not a multiple of 4: padded, cropped
    assert net(z, torch.tensor([0, 999]), cond).shape == (2, 1, 20, 28)
    with pytest.raises(ValueError, match=r"expected cond of shape \(2, 6, 20, 28\)"):
        net(z, torch.tensor([0, 1]), cond[:, :5])
    with pytest.raises(ValueError, match=r"expected z of shape \(B, 1, H, W\)"):
        net(cond, torch.tensor([0, 1]), cond)
    with pytest.raises(ValueError, match="unknown denoiser 'vit'; accepted: unet, diffusers"):
        build_denoiser("vit", 6, 4, 2)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_samplers_are_apart_from_the_denoiser_and_steps_are_a_run_time_choice(sampler):
    calls = []

    def denoise(z, t):  # any callable: the sampler never sees a network
        calls.append(int(t[0]))
        return torch.zeros_like(z)

    g = torch.Generator().manual_seed(0)
    out = sample(denoise, (1, 1, 4, 4), sampler=sampler, steps=7, train_steps=100, generator=g)
    assert out.shape == (1, 1, 4, 4) and torch.isfinite(out).all()
    assert len(calls) == 7 and calls[0] == 99  # trailing spacing: starts from pure noise
    with pytest.raises(ValueError, match=r"steps=0 is not valid; accepted: 1 \.\. 100"):
        sample(denoise, (1, 1, 4, 4), sampler=sampler, steps=0, train_steps=100)
    with pytest.raises(ValueError, match="unknown sampler 'euler'; accepted: ddpm, ddim, dpmsolver\\+\\+, sde-dpmsolver\\+\\+"):
        make_scheduler("euler")


def test_objective_trains_the_denoiser_only():
    reg = build_model(ModelConfig(filters=4, blocks=1), 3, 2, SCALE)
    model = _model(regression=reg).train()
    assert not reg.training  # frozen regression stays in inference mode
    before = {k: v.clone() for k, v in reg.state_dict().items()}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], 1e-3)
    loss = model.loss(_batch())
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    opt.step()
    assert all(p.grad is None for p in reg.parameters())
    assert all(torch.equal(before[k], v) for k, v in reg.state_dict().items())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.denoiser.parameters())


def test_masked_pixels_do_not_count():
    model = _model()
    a, b = _batch(), _batch()
    b["y"][..., :3, :] += 100.0  # only masked rows differ
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    with torch.no_grad():
        assert float(model.loss(a, g1)) == pytest.approx(float(model.loss(b, g2)), rel=1e-6)


def test_residual_diffusion_adds_its_residual_to_the_regression_mean():
    reg = build_model(ModelConfig(filters=4, blocks=1), 3, 2, SCALE).eval()
    model = _model(regression=reg).eval()
    b = _batch()
    with torch.no_grad():
        expected_mean = reg(b["x"], b["static_hr"])
    torch.testing.assert_close(model.mean(b["x"], b["static_hr"]), expected_mean)
    model.residual_scale.fill_(1e-9)  # no residual left: the sample is the mean
    out = model.sample(b["x"], b["static_hr"], generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, expected_mean, atol=1e-4, rtol=0)
    assert model.fit_residual_scale([b]) > 0


@pytest.mark.parametrize("sampler", ["ddpm", "sde-dpmsolver++"])  # the stochastic ones draw noise at every step
def test_samples_are_reproducible_per_generator_and_differ_between_members(sampler):
    model = _model().eval()
    b = _batch()
    s = [model.sample(b["x"], b["static_hr"], generator=torch.Generator().manual_seed(k), sampler=sampler, steps=4)
         for k in (1, 1, 2)]
    assert s[0].shape == (2, 1, 32, 32)
    torch.testing.assert_close(s[0], s[1])
    assert not torch.allclose(s[0], s[2])
    assert model(b["x"], b["static_hr"]).shape == (2, 1, 32, 32)  # forward = one sample, zoo interface
    with pytest.raises(ValueError, match=r"expected static_hr of shape \(2, 2, 32, 32\)"):
        model(b["x"], b["static_hr"][..., :-4])


def test_tiles_are_refused_for_a_denoiser_with_global_normalisation():
    from engine.inference.ensembles import DiffusionTiler
    from engine.inference.stitching import StitchingError

    # diffusers' UNet2DModel normalises with GroupNorm over the whole field: its receptive field is
    # the whole probe, so tiles (of any size smaller than the domain) would not reproduce it.
    with pytest.raises(StitchingError, match="smaller than the model's receptive field"):
        DiffusionTiler(_model(denoiser="diffusers"), SCALE, tile=48, overlap=32)(None, [torch.zeros(1, 1, 64, 64)])


def test_tiled_sampling_equals_whole_field_sampling():
    from engine.inference.ensembles import DiffusionTiler

    model = _model(denoiser="unet").eval()
    b = _batch(batch=1, lr=16)
    tiler = DiffusionTiler(model, SCALE, tile=48, overlap=32, tile_batch=2)
    radius = tiler.receptive // 2
    tiler.halo = min(radius, 16)
    whole = model.sample(b["x"], b["static_hr"], generator=torch.Generator().manual_seed(3), sampler="ddim", steps=2)
    tiled = model.sample(b["x"], b["static_hr"], generator=torch.Generator().manual_seed(3), sampler="ddim", steps=2,
                         tiler=tiler)
    if radius <= 16:  # exact when the halo covers the receptive field
        torch.testing.assert_close(tiled, whole, rtol=1e-4, atol=1e-4)
    else:  # a smooth cross-fade: close, not equal
        assert float((tiled - whole).abs().mean()) < 0.1 * float(whole.std())


SHORT = {"val_period": ["2003-01-01", "2003-01-04"], "test_period": ["2003-07-01", "2003-07-03"]}


@pytest.mark.slow
def test_diffusion_and_residual_diffusion_through_the_run_store(tmp_path, tiny_config):
    import xarray as xr

    from engine.inference import load_run, predict
    from engine.inference.predict import write_netcdf
    from engine.runs import RunStore
    from engine.training.loop import load_checkpoint
    from engine.training.trainer import train

    store = RunStore(tmp_path)
    base = tiny_config.replace(data=SHORT, model={"filters": 4}, training={"epochs": 1, "samples_per_epoch": 16,
                                                                          "precision": "32-true"})
    regression = store.create(base, run_id="regression")
    train(regression)
    diff_cfg = base.replace(training={"learning": "diffusion"},
                            model={"blocks": 1, "diffusion_steps": 100, "sampling_steps": 3, "regression_run": "regression"})
    run = store.create(diff_cfg, run_id="residual")
    summary = train(run)  # dispatches to engine.training.diffusion.train_diffusion
    assert {"val_loss", "val_rmse"} <= set(summary) and summary["val_rmse"] > 0  # one tiny epoch: finite, not good
    state = load_checkpoint(run.checkpoint("best"))
    assert state["learning"] == "diffusion" and state["regression"]["run_id"] == "regression"
    assert run.status()["residual_scale"] > 0 and run.normalisation_path.read_text() == regression.normalisation_path.read_text()
    # resume after the last completed epoch
    run.config_path.write_text(diff_cfg.replace(training={"epochs": 2}).to_yaml())
    train(run)
    assert [e["epoch"] for e in run.events("start")] == [0, 1]

    loaded = load_run(run)
    ds = predict(loaded, "test", members=2, steps=2, sampler="dpmsolver++")
    assert ds.model.dims == ("member", "time", "lat", "lon") and ds.sizes["member"] == 2
    assert ds.truth.dims == ("time", "lat", "lon")
    assert 220 < float(ds.model.min()) and float(ds.model.max()) < 330
    assert float(abs(ds.model.isel(member=0) - ds.model.isel(member=1)).max()) > 0  # members differ
    write_netcdf(ds, tmp_path / "p.nc")
    with xr.open_dataset(tmp_path / "p.nc") as back:
        assert back.model.dims == ("member", "time", "lat", "lon")
    # a plain conditional diffusion run (no regression): the mean is the bicubic interpolation
    plain = store.create(diff_cfg.replace(model={"regression_run": None}), run_id="plain")
    train(plain)
    assert load_checkpoint(plain.checkpoint("best"))["regression"] is None


def test_residual_run_that_does_not_exist_is_a_clear_error(tmp_path, tiny_config):
    from engine.runs import RunStore
    from engine.training.loop import TrainingError
    from engine.training.trainer import train

    cfg = tiny_config.replace(training={"learning": "diffusion"}, model={"regression_run": "nope"})
    with pytest.raises(TrainingError, match="model.regression_run='nope': no run 'nope'"):
        train(RunStore(tmp_path).create(cfg))
